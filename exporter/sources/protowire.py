"""The protobuf wire format, as far as the exporter's gRPC calls need it: varints, and
length-delimited fields (strings, bytes, nested messages, map entries). No schema compiler: each
caller names its fields by number (see cri_api.py), as the upstream definitions number them.

A message to encode is a list of (field number, value): an int or bool is a varint, a str or bytes
is length-delimited, a list is a nested message, a dict is a map<string, string>. Zero values are
left out, as proto3 does, and so are empty nested messages (none of the messages used here needs
an empty one to be present). A decoded message is a dict: field number -> the values seen, in order
(ints for varints, bytes for length-delimited; fixed-width fields are kept as bytes).
"""

from __future__ import annotations

from collections.abc import Iterable

Fields = list[tuple[int, object]]
Decoded = dict[int, list]

VARINT, FIXED64, LENGTH, FIXED32 = 0, 1, 2, 5


class WireError(ValueError):
    """The bytes are not a protobuf message."""


def varint(n: int) -> bytes:
    n &= (1 << 64) - 1  # negative int64 values take ten bytes, as in protobuf
    out = bytearray()
    while n > 0x7F:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def encode(fields: Iterable[tuple[int, object]]) -> bytes:
    out = bytearray()
    for number, value in fields:
        if isinstance(value, bool | int):
            if value:
                out += varint(number << 3 | VARINT) + varint(int(value))
        elif isinstance(value, dict):
            for k, v in sorted(value.items()):
                out += _length(number, encode([(1, k), (2, v)]))
        elif isinstance(value, list):
            if value:
                out += _length(number, encode(value))
        elif isinstance(value, str | bytes):
            if value:
                out += _length(number, value.encode() if isinstance(value, str) else value)
        else:
            raise TypeError(f"field {number}: cannot encode {type(value).__name__}")
    return bytes(out)


def _length(number: int, payload: bytes) -> bytes:
    return varint(number << 3 | LENGTH) + varint(len(payload)) + payload


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    n = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise WireError("truncated varint")
        b = data[pos]
        pos += 1
        n |= (b & 0x7F) << shift
        if not b & 0x80:
            return n, pos
        shift += 7


def decode(data: bytes) -> Decoded:
    out: Decoded = {}
    pos = 0
    while pos < len(data):
        key, pos = _read_varint(data, pos)
        number, wire_type = key >> 3, key & 7
        value: int | bytes
        if wire_type == VARINT:
            value, pos = _read_varint(data, pos)
        elif wire_type == LENGTH:
            size, pos = _read_varint(data, pos)
            value, pos = data[pos : pos + size], pos + size
        elif wire_type in (FIXED64, FIXED32):
            width = 8 if wire_type == FIXED64 else 4
            value, pos = data[pos : pos + width], pos + width
        else:
            raise WireError(f"unsupported wire type {wire_type}")
        if pos > len(data):
            raise WireError("truncated field")
        out.setdefault(number, []).append(value)
    return out


# Reading fields of a decoded message: the last value wins, as in protobuf.


def string(msg: Decoded, number: int) -> str:
    values = msg.get(number)
    return values[-1].decode(errors="replace") if values else ""


def integer(msg: Decoded, number: int) -> int:
    values = msg.get(number)
    return int(values[-1]) if values else 0


def message(msg: Decoded, number: int) -> Decoded:
    values = msg.get(number)
    return decode(values[-1]) if values else {}


def messages(msg: Decoded, number: int) -> list[Decoded]:
    return [decode(v) for v in msg.get(number, ())]


def string_map(msg: Decoded, number: int) -> dict[str, str]:
    return {string(e, 1): string(e, 2) for e in messages(msg, number)}
