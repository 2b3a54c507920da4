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
