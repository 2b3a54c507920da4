"""What tables and trees print of a tenant's text (exporter/core/names.py terminal_text)."""

from __future__ import annotations

import unicodedata

from exporter.core.names import terminal_text


def test_printable_text_is_unchanged():
    for text in ("veth3c62f33", "bücke", "网桥0", "a b", r"e\xffx", "eth😀", "\u05d0\u05d1"):
        assert terminal_text(text) == text


def test_control_characters_become_hex_escapes():
    assert terminal_text("\x1b[2J\rx\n\x7f\x00\x85\x9f") == r"\x1b[2J\x0dx\x0a\x7f\x00\x85\x9f"


def test_bidirectional_marks_overrides_and_isolates_become_unicode_escapes():
    for c in [
        "\u200e",
        "\u200f",
        *map(chr, range(0x202A, 0x202F)),
        *map(chr, range(0x2066, 0x206A)),
    ]:
        assert terminal_text(f"a{c}b") == f"a\\u{ord(c):04x}b"


# Unicode's bidirectional classes of the embeddings, overrides and isolates (U+200E/F are L and R).
EXPLICIT = {"LRE", "RLE", "LRO", "RLO", "PDF", "LRI", "RLI", "FSI", "PDI"}


def test_no_control_nor_explicit_bidirectional_code_point_survives():
    escaped = terminal_text("".join(map(chr, range(0x3000))))
    left = [
        c
        for c in escaped
        if unicodedata.category(c) == "Cc" or unicodedata.bidirectional(c) in EXPLICIT
    ]
    assert not left
