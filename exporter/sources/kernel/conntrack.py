"""The host's conntrack table over ctnetlink (a raw NETLINK_NETFILTER socket): one dump, and the
parsers of its messages that the event monitor (conntrack_events.py) shares.

Only what the flows need is decoded, with ``struct`` on the raw buffer: both tuples, the status,
the id, the TCP state, and the counters when accounting put them there; every other attribute is
skipped by its length. ``parse`` is pure and tested on messages recorded from the kernel.

A table may hold hundreds of thousands of entries, nearly all in a few layouts: both tuples with
ports, IPv4 or IPv6, then a dump's status, mark, id, use, timeout (and TCP state) or an event's
id and status. Those are read with one precompiled unpack per message, their attribute headers
compared whole; an entry whose two sources are of no interest (``keep``) is turned down from a
smaller unpack before that. Any other layout goes through the general walk.
"""

from __future__ import annotations

import gc
import os
import socket
import struct
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from operator import itemgetter
from typing import NamedTuple

from exporter.core.flows import DESTROY, NEW, UPDATE, Entry
from exporter.sources.kernel.netlink import (
    _NLMSGHDR,
    NLM_F_DUMP,
    NLM_F_REQUEST,
    NLMSG_DONE,
    NLMSG_ERROR,
    NetlinkError,
)

NETLINK_NETFILTER = 12
NFNL_SUBSYS_CTNETLINK = 1
IPCTNL_MSG_CT_NEW, IPCTNL_MSG_CT_GET, IPCTNL_MSG_CT_DELETE = 0, 1, 2
CT_NEW = (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_NEW
CT_GET = (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_GET
CT_DELETE = (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_DELETE
# Multicast groups, as bits of the bind mask: NFNLGRP_CONNTRACK_NEW, _UPDATE, _DESTROY are 1, 2, 3.
GROUP_NEW, GROUP_UPDATE, GROUP_DESTROY = 1 << 0, 1 << 1, 1 << 2
NLM_F_CREATE = 0x400
NETLINK_NO_ENOBUFS = 5
NFNETLINK_V0 = 0

CTA_TUPLE_ORIG, CTA_TUPLE_REPLY, CTA_STATUS, CTA_PROTOINFO = 1, 2, 3, 4
CTA_TIMEOUT, CTA_MARK, CTA_COUNTERS_ORIG, CTA_COUNTERS_REPLY, CTA_USE, CTA_ID = 7, 8, 9, 10, 11, 12
CTA_TUPLE_IP, CTA_TUPLE_PROTO = 1, 2
CTA_IP_V4_SRC, CTA_IP_V4_DST, CTA_IP_V6_SRC, CTA_IP_V6_DST = 1, 2, 3, 4
CTA_PROTO_NUM, CTA_PROTO_SRC_PORT, CTA_PROTO_DST_PORT = 1, 2, 3
CTA_COUNTERS_PACKETS, CTA_COUNTERS_BYTES = 1, 2
CTA_PROTOINFO_TCP, CTA_PROTOINFO_TCP_STATE = 1, 1

RCVBUF_BYTES = 8 * 1024 * 1024
DUMP_RECV_BYTES = 256 * 1024

_NFGENMSG = struct.Struct("=BBH")
_NLA = struct.Struct("=HH")
_MSG_HEAD = struct.Struct("=IHH")  # nlmsghdr's length, type and flags
_BE32 = struct.Struct(">I")
_BE64 = struct.Struct(">Q")
_NLA_TYPE_MASK = 0x3FFF
NLA_F_NESTED = 0x8000


def _header(length: int, kind: int) -> bytes:
    return _NLA.pack(length, kind)


_STATUS, _ID = _header(8, CTA_STATUS), _header(8, CTA_ID)
# CTA_PROTOINFO_TCP's type (its length varies) and the header of the state, its first attribute.
_TCP_STATE_HEAD = struct.pack("=H", CTA_PROTOINFO_TCP | NLA_F_NESTED) + _header(
    5, CTA_PROTOINFO_TCP_STATE
)
_COUNTERS = struct.Struct(">IQIQ")  # packets and bytes, each behind its header
_COUNTERS_HEADS = tuple(
    int.from_bytes(_header(12, kind), "big") for kind in (CTA_COUNTERS_PACKETS, CTA_COUNTERS_BYTES)
)

Part = tuple[bytes, str]  # attribute headers as they must be, then the format of what follows


def _tuple_parts(kind: int, size: int, src_kind: int, dst_kind: int, reply: bool) -> list[Part]:
    """A tuple with ports: its source, destination, protocol (the original's only) and ports."""
    ip = 4 + 2 * (4 + size)
    return [
        (
            _header(ip + 32, kind | NLA_F_NESTED)
            + _header(ip, CTA_TUPLE_IP | NLA_F_NESTED)
            + _header(4 + size, src_kind),
            f"{size}s",
        ),
        (_header(4 + size, dst_kind), f"{size}s"),
        (
            _header(28, CTA_TUPLE_PROTO | NLA_F_NESTED) + _header(5, CTA_PROTO_NUM),
            "4x" if reply else "B3x",
        ),
        (_header(6, CTA_PROTO_SRC_PORT), "H2x"),
        (_header(6, CTA_PROTO_DST_PORT), "H2x"),
    ]


class _Layout(NamedTuple):
    """Both tuples and the attributes after them as one layout has them, read at once: the
    headers checked whole (``mask``, ``want``: the bytes as a big-endian integer), the values
    unpacked (protocol, addresses, ports, the status and id in the layout's order, and the TCP
    state where the layout has it), ``fields`` picking Entry's from them."""

    span: int
    mask: int
    want: int
    values: struct.Struct
    fields: Callable[[tuple], tuple]
    tcp_state: int | None  # its index among the values, if there


def _layout(parts: list[Part], status_first: bool, tcp_state: bool = False) -> _Layout:
    fmt, mask, want = ">", b"", b""
    for head, value in parts:
        size = struct.calcsize(">" + value)
        fmt += f"{len(head)}x{value}"
        mask += b"\xff" * len(head) + bytes(size)
        want += head + bytes(size)
    status, ident = (9, 10) if status_first else (10, 9)
    return _Layout(
        len(mask),
        int.from_bytes(mask, "big"),
        int.from_bytes(want, "big"),
        struct.Struct(fmt),
        itemgetter(ident, 2, status, 0, 1, 3, 4, 5, 6, 7, 8),
        11 if tcp_state else None,
    )


class _Family(NamedTuple):
    """One address family's common layouts, and the original and reply sources alone (to turn
    an entry down first), each behind headers that must be ``heads``."""

    sources: struct.Struct
    heads: tuple[bytes, bytes]
    layouts: tuple[_Layout, ...]


# After the tuples: a dump's status, mark, id, use and timeout; an event's id and status; the
# status and id of a kernel without marks.
_DUMP: list[Part] = [
    (_header(8, CTA_STATUS), "I"),
    (_header(8, CTA_MARK), "4x"),
    (_header(8, CTA_ID), "I"),
    (_header(8, CTA_USE), "4x"),
    (_header(8, CTA_TIMEOUT), "4x"),
]
_EVENT: list[Part] = [(_header(8, CTA_ID), "I"), (_header(8, CTA_STATUS), "I")]
_PLAIN: list[Part] = [(_header(8, CTA_STATUS), "I"), (_header(8, CTA_ID), "I")]
# A TCP entry's CTA_PROTOINFO in a dump: the state first, then window scales and flags (32 bytes).
_TCP: list[Part] = [
    (
        _header(48, CTA_PROTOINFO | NLA_F_NESTED)
        + _header(44, CTA_PROTOINFO_TCP | NLA_F_NESTED)
        + _header(5, CTA_PROTOINFO_TCP_STATE),
        "B3x32x",
    )
]


def _family(size: int, src_kind: int, dst_kind: int) -> _Family:
    orig = _tuple_parts(CTA_TUPLE_ORIG, size, src_kind, dst_kind, reply=False)
    reply = _tuple_parts(CTA_TUPLE_REPLY, size, src_kind, dst_kind, reply=True)
    tuple_length = 2 * (4 + size) + 36
    return _Family(
        struct.Struct(f"12s{size}s{tuple_length - 12 - size}x12s{size}s"),
        (orig[0][0], reply[0][0]),
        (
            _layout(orig + reply + _DUMP + _TCP, status_first=True, tcp_state=True),
            _layout(orig + reply + _DUMP, status_first=True),
            _layout(orig + reply + _EVENT, status_first=False),
            _layout(orig + reply + _PLAIN, status_first=True),
        ),
    )


_FAMILIES: dict[int, _Family] = {
    int(socket.AF_INET): _family(4, CTA_IP_V4_SRC, CTA_IP_V4_DST),
    int(socket.AF_INET6): _family(16, CTA_IP_V6_SRC, CTA_IP_V6_DST),
}
_ORIG_V4 = _FAMILIES[socket.AF_INET].heads[0][:4]
_ORIG_V6 = _FAMILIES[socket.AF_INET6].heads[0][:4]

Keep = Callable[[bytes, bytes], bool]  # (original source, reply source) -> decode the rest?
_new_entry = tuple.__new__  # Entry's fields in order, without its constructor's Python frame


def _common(buf: bytes | memoryview, offset: int, end: int, family: _Family) -> Entry | None:
    """The entry of a message in a common layout (``offset``: after its nfgenmsg); None for any
    other layout. The attributes after the layout's are walked for the TCP state and counters."""
    for layout in family.layouts:
        span = offset + layout.span
        if span <= end and int.from_bytes(buf[offset:span], "big") & layout.mask == layout.want:
            break
    else:
        return None
    f = layout.values.unpack_from(buf, offset)
    tcp_state = 0 if layout.tcp_state is None else f[layout.tcp_state]
    counts = []
    while span + 4 <= end:
        length, kind = _NLA.unpack_from(buf, span)
        if length < 4 or span + length > end:
            break
        kind &= _NLA_TYPE_MASK
        if kind == CTA_PROTOINFO:
            if length >= 13 and buf[span + 6 : span + 12] == _TCP_STATE_HEAD:
                tcp_state = buf[span + 12]
            else:
                tcp_state = _tcp_state(buf, span + 4, span + length)
        elif kind in (CTA_COUNTERS_ORIG, CTA_COUNTERS_REPLY):
            counts.append(_counters(buf, span + 4, span + length))
        span += (length + 3) & ~3
    counters = (*counts[0], *counts[1]) if len(counts) == 2 else None
    return _new_entry(Entry, (*layout.fields(f), counters, tcp_state))


def _nest(buf: bytes | memoryview, offset: int, end: int) -> Iterator[tuple[int, int, int]]:
    """(type, payload offset, payload end) of each attribute from ``offset`` to ``end``; stops at
    one that claims more than is there."""
    while offset + 4 <= end:
        length, kind = _NLA.unpack_from(buf, offset)
        if length < 4 or offset + length > end:
            return
        yield kind & _NLA_TYPE_MASK, offset + 4, offset + length
        offset += (length + 3) & ~3


def _tuple(buf: bytes | memoryview, offset: int, end: int) -> tuple[int, bytes, bytes, int, int]:
    """CTA_TUPLE_IP and CTA_TUPLE_PROTO of one tuple; ports are 0 where the protocol has none."""
    src = dst = b""
    proto = sport = dport = 0
    for kind, start, stop in _nest(buf, offset, end):
        if kind == CTA_TUPLE_IP:
            for inner, a, b in _nest(buf, start, stop):
                if inner in (CTA_IP_V4_SRC, CTA_IP_V6_SRC):
                    src = bytes(buf[a:b])
                elif inner in (CTA_IP_V4_DST, CTA_IP_V6_DST):
                    dst = bytes(buf[a:b])
        elif kind == CTA_TUPLE_PROTO:
            for inner, a, _b in _nest(buf, start, stop):
                if inner == CTA_PROTO_NUM:
                    proto = buf[a]
                elif inner in (CTA_PROTO_SRC_PORT, CTA_PROTO_DST_PORT):
                    port = int.from_bytes(buf[a : a + 2], "big")
                    sport, dport = (port, dport) if inner == CTA_PROTO_SRC_PORT else (sport, port)
    return proto, src, dst, sport, dport


def _counters(buf: bytes | memoryview, offset: int, end: int) -> tuple[int, int]:
    """(packets, bytes) of one CTA_COUNTERS_* attribute."""
    if offset + _COUNTERS.size <= end:
        words = _COUNTERS.unpack_from(buf, offset)
        if (words[0], words[2]) == _COUNTERS_HEADS:
            return words[1], words[3]
    found = {kind: _BE64.unpack_from(buf, a)[0] for kind, a, _b in _nest(buf, offset, end)}
    return found.get(CTA_COUNTERS_PACKETS, 0), found.get(CTA_COUNTERS_BYTES, 0)


def _tcp_state(buf: bytes | memoryview, offset: int, end: int) -> int:
    """CTA_PROTOINFO_TCP_STATE inside CTA_PROTOINFO; 0 (none) when absent."""
    for kind, start, stop in _nest(buf, offset, end):
        if kind == CTA_PROTOINFO_TCP:
            for inner, a, b in _nest(buf, start, stop):
                if inner == CTA_PROTOINFO_TCP_STATE and b > a:
                    return buf[a]
    return 0


def _general(buf: bytes | memoryview, offset: int, end: int, keep: Keep | None) -> Entry | None:
    """Any layout, attribute by attribute (``offset``: after the nfgenmsg)."""
    orig = reply = None
    status = ident = tcp_state = 0
    counts: list[tuple[int, int]] = []
    for kind, start, stop in _nest(buf, offset, end):
        if kind == CTA_TUPLE_ORIG:
            orig = _tuple(buf, start, stop)
        elif kind == CTA_TUPLE_REPLY:
            reply = _tuple(buf, start, stop)
        elif kind == CTA_STATUS:
            status = _BE32.unpack_from(buf, start)[0]
        elif kind == CTA_PROTOINFO:
            tcp_state = _tcp_state(buf, start, stop)
        elif kind == CTA_ID:
            ident = _BE32.unpack_from(buf, start)[0]
        elif kind in (CTA_COUNTERS_ORIG, CTA_COUNTERS_REPLY):
            counts.append(_counters(buf, start, stop))
    if orig is None or reply is None or (keep is not None and not keep(orig[1], reply[1])):
        return None
    counters = (*counts[0], *counts[1]) if len(counts) == 2 else None
    return Entry(ident, orig[0], status, *orig[1:], *reply[1:], counters, tcp_state)


def parse(buf: bytes | memoryview, offset: int, end: int, keep: Keep | None = None) -> Entry | None:
    """One ctnetlink conntrack message (``offset``: its nfgenmsg); None when it lacks a tuple, or
    when ``keep`` says its sources are of no interest (the rest is then not decoded)."""
    end = min(end, len(buf))  # a message cut short ends where its datagram does
    if offset + _NFGENMSG.size > end:
        return None
    family = _FAMILIES.get(buf[offset])
    offset += _NFGENMSG.size
    if family is not None:
        sources = family.sources
        if keep is not None and offset + sources.size <= end:
            head, src, reply_head, reply_src = sources.unpack_from(buf, offset)
            if (head, reply_head) == family.heads and not keep(src, reply_src):
                return None
        entry = _common(buf, offset, end, family)
        if entry is not None:
            return entry
    return _general(buf, offset, end, keep)


def event_kind(msg_type: int, flags: int) -> str | None:
    """NEW, UPDATE or DESTROY for a conntrack event or dump message; None for anything else."""
    if msg_type == CT_DELETE:
        return DESTROY
    if msg_type == CT_NEW:
        return NEW if flags & NLM_F_CREATE else UPDATE
    return None


def decode(
    data: bytes, keep: Keep | None, entries: list[Entry], kinds: list[str] | None = None
) -> bool:
    """Add the entries of one datagram's conntrack messages to ``entries`` (and what each
    message says to ``kinds``); True at the end of a dump. Raises on an error message."""
    offset, size = 0, len(data)
    while offset + 16 <= size:
        length, msg_type, flags = _MSG_HEAD.unpack_from(data, offset)
        if length < 16:
            break
        if msg_type in (CT_NEW, CT_DELETE):
            entry = parse(data, offset + 16, offset + length, keep)
            if entry is not None:
                entries.append(entry)
                if kinds is not None:
                    kinds.append(event_kind(msg_type, flags))  # type: ignore[arg-type]
        elif msg_type == NLMSG_DONE:
            return True
        elif msg_type == NLMSG_ERROR:
            code = -struct.unpack_from("=i", data, offset + 16)[0] if offset + 20 <= size else 0
            if code:
                raise NetlinkError(code, os.strerror(code))
            return True
        offset += (length + 3) & ~3
    return False


def parse_datagram(data: bytes, keep: Keep | None = None) -> list[tuple[str, Entry]]:
    """(kind, entry) of each conntrack message in one datagram (events or a dump's part)."""
    entries: list[Entry] = []
    kinds: list[str] = []
    decode(data, keep, entries, kinds)
    return list(zip(kinds, entries, strict=True))


def _socket() -> socket.socket:
    return socket.socket(
        socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_NETFILTER
    )


def dump_request(seq: int = 1) -> bytes:
    """IPCTNL_MSG_CT_GET with NLM_F_DUMP, both address families."""
    body = _NFGENMSG.pack(socket.AF_UNSPEC, NFNETLINK_V0, 0)
    return (
        _NLMSGHDR.pack(_NLMSGHDR.size + len(body), CT_GET, NLM_F_REQUEST | NLM_F_DUMP, seq, 0)
        + body
    )


def dump(keep: Keep | None = None) -> list[Entry]:
    """Every entry of the host's table (those ``keep`` keeps)."""
    entries: list[Entry] = []
    with _socket() as sock, _collection_paused():
        sock.bind((0, 0))
        sock.send(dump_request())
        while not decode(sock.recv(DUMP_RECV_BYTES), keep, entries):
            pass
    return entries


@contextmanager
def _collection_paused() -> Iterator[None]:
    """No cyclic garbage collection while a dump makes its entries (tuples of bytes and ints,
    never a cycle): at 100,000 entries its passes over them cost a tenth of the dump."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
