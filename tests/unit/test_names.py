"""Interface names rendered as text: lossless, unambiguous, always valid UTF-8 (docs/names.md)."""

from __future__ import annotations

import random
import re
import string
import unicodedata
from collections.abc import Iterator

from exporter.core.names import interface_name

ESCAPE = re.compile(r"\\x([0-9a-f]{2})")


def kernel_bytes(text: str) -> bytes:
    """The inverse: every \\xHH is the byte HH, everything else its UTF-8 encoding."""
    parts = ESCAPE.split(text)
    return b"".join(
        bytes([int(part, 16)]) if i % 2 else part.encode("utf-8") for i, part in enumerate(parts)
    )


def test_plain_ascii_names_are_unchanged():
    for name in ("eth0", "lo", "docker0", "veth3c62f33", "br-b968fc8dede5", "a.b_c-d@e+f=g%h"):
        assert interface_name(name.encode()) == name
    printable = "".join(c for c in string.printable if c not in "\\" + string.whitespace)
    assert interface_name(printable.encode()) == printable


def test_valid_utf8_stays_as_it_is():
    for name in ("bücke", "网桥0", "eth😀", "x y"):
        assert interface_name(name.encode()) == name


def test_each_byte_that_is_not_utf8_becomes_hex():
    assert interface_name(b"e\xffx") == r"e\xffx"
    assert interface_name(b"\xc3") == r"\xc3"  # a sequence cut short
    assert interface_name(b"a\xc3\xa9\xe9") == r"aé\xe9"
    assert interface_name(b"\xed\xa0\x80") == r"\xed\xa0\x80"  # an encoded surrogate
    assert interface_name(b"\xc0\xaf") == r"\xc0\xaf"  # an overlong '/'


def test_a_backslash_is_escaped_so_that_no_name_can_pass_for_another():
    assert interface_name(b"a\\b") == r"a\x5cb"
    assert interface_name(b"e\\xffx") == r"e\x5cxffx"
    assert interface_name(b"e\\xffx") != interface_name(b"e\xffx")


def test_control_characters_are_escaped_as_their_bytes():
    assert interface_name(b"\x1b[2Jok") == r"\x1b[2Jok"
    assert interface_name(b"a\x7f\x08") == r"a\x7f\x08"
    assert interface_name("x\u0085\u009b".encode()) == r"x\xc2\x85\xc2\x9b"  # C1 controls


FRAGMENTS = [
    b"\\",
    b"x",
    b"5c",
    b"ff",
    b"\xff",
    b"\xc3",
    b"\xa9",
    b"\x1b",
    b"\x7f",
    b"\xed\xa0\x80",
    "é".encode(),
    "网".encode(),
    "😀".encode(),
    "\u0085".encode(),
]


def random_names(rng: random.Random, count: int) -> Iterator[bytes]:
    for _ in range(count):
        if rng.random() < 0.5:
            yield bytes(rng.randrange(256) for _ in range(rng.randrange(16)))
        else:
            yield b"".join(
                rng.choice(FRAGMENTS) if rng.random() < 0.7 else bytes([rng.randrange(256)])
                for _ in range(rng.randrange(8))
            )


def test_random_byte_strings_round_trip_and_render_as_valid_utf8_without_controls():
    rng = random.Random(16)
    rendered: dict[str, bytes] = {}
    for raw in random_names(rng, 20_000):
        text = interface_name(raw)
        text.encode("utf-8")  # strict: no lone surrogate can reach a label
        assert not any(unicodedata.category(c) == "Cc" for c in text), (raw, text)
        assert "\\" not in ESCAPE.sub("", text), (raw, text)  # every backslash starts an escape
        assert kernel_bytes(text) == raw, (raw, text)
        assert rendered.setdefault(text, raw) == raw, (raw, rendered[text], text)
