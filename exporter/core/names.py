"""Interface names as the exporter shows them everywhere: valid UTF-8, lossless and unambiguous.

A Linux interface name is up to 15 bytes, any bytes but NUL, '/', ':' and whitespace: nothing makes
it UTF-8, and a tenant with CAP_NET_ADMIN in its own namespace picks the name of its interfaces.
Every name is decoded here where it enters the exporter (netlink, /proc/<pid>/net/dev), so that
labels, CLI tables and JSON only ever see a plain str that encodes as UTF-8. See docs/names.md.
"""

from __future__ import annotations

import re

# Unicode's control characters (C0, DEL, C1): valid UTF-8, but they move a terminal's cursor.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
# What a terminal must not receive from a tenant: the control characters, and the bidirectional
# marks, embeddings, overrides and isolates, which reorder what follows them on the line.
_TERMINAL = re.compile(r"[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def _escape(match: re.Match) -> str:
    return "".join(f"\\x{b:02x}" for b in match.group().encode())


def interface_name(raw: bytes) -> str:
    r"""The kernel's bytes of a name as text: valid UTF-8 stays as it is; each byte that is not part
    of valid UTF-8, each byte of a control character, and each backslash become ``\xHH`` (lower
    case hex). Every backslash in the result thus starts an escape, and the bytes can be recovered
    exactly (``printf '%b'`` does it).

    >>> interface_name(b"e\xffx"), interface_name(b"a\\b"), interface_name(b"eth0")
    ('e\\xffx', 'a\\x5cb', 'eth0')
    """
    text = raw.replace(b"\\", b"\\x5c").decode("utf-8", "backslashreplace")
    return text if text.isprintable() else _CONTROL.sub(_escape, text)


def _code_point(match: re.Match) -> str:
    c = ord(match.group())
    return f"\\x{c:02x}" if c < 0x100 else f"\\u{c:04x}"


def terminal_text(text: str) -> str:
    r"""Text as a table or tree may print it: each control character (C0, DEL, C1) becomes
    ``\xHH`` and each bidirectional mark, embedding, override or isolate ``\uHHHH``, as Python
    writes them; everything else stays as it is (JSON output carries the exact text).

    >>> terminal_text("a\x1b[2Jb\n"), terminal_text("\u202eevil"), terminal_text("veth0")
    ('a\\x1b[2Jb\\x0a', '\\u202eevil', 'veth0')
    """
    return text if text.isprintable() else _TERMINAL.sub(_code_point, text)
