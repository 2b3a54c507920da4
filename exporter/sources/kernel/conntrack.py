"""The host's conntrack table over ctnetlink (a raw NETLINK_NETFILTER socket): one dump, and the
parsers of its messages that the event monitor (conntrack_events.py) shares.

Only what the flows need is decoded, with ``struct`` on the raw buffer: both tuples (addresses as
packed bytes, ports, protocol), the status bits, the id, and the counters when accounting put them
there. Every other attribute (timeouts, marks, TCP state, NAT sequence adjustments) is skipped by
its length. ``parse`` is pure and tested on messages recorded from the kernel.
"""

from __future__ import annotations

import os
import socket
import struct
from collections.abc import Callable, Iterator

from exporter.core.flows import DESTROY, NEW, UPDATE, Entry
from exporter.sources.kernel.netlink import (
    _NLMSGHDR,
    NLM_F_DUMP,
    NLM_F_REQUEST,
    NLMSG_DONE,
    NLMSG_ERROR,
    NetlinkError,
    iter_messages,
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
CTA_COUNTERS_ORIG, CTA_COUNTERS_REPLY, CTA_ID = 9, 10, 12
CTA_TUPLE_IP, CTA_TUPLE_PROTO = 1, 2
CTA_IP_V4_SRC, CTA_IP_V4_DST, CTA_IP_V6_SRC, CTA_IP_V6_DST = 1, 2, 3, 4
CTA_PROTO_NUM, CTA_PROTO_SRC_PORT, CTA_PROTO_DST_PORT = 1, 2, 3
CTA_COUNTERS_PACKETS, CTA_COUNTERS_BYTES = 1, 2
CTA_PROTOINFO_TCP, CTA_PROTOINFO_TCP_STATE = 1, 1

RCVBUF_BYTES = 8 * 1024 * 1024
DUMP_RECV_BYTES = 256 * 1024

_NFGENMSG = struct.Struct("=BBH")
_NLA = struct.Struct("=HH")
_BE16 = struct.Struct(">H")
_BE32 = struct.Struct(">I")
_BE64 = struct.Struct(">Q")
_NLA_TYPE_MASK = 0x3FFF
NLA_F_NESTED = 0x8000


def _header(length: int, kind: int) -> bytes:
    return _NLA.pack(length, kind)


# The layout the kernel gives nearly every entry: an IPv4 tuple with ports (TCP, UDP, SCTP, ...),
# 52 bytes, read with one unpack; its attribute headers are compared whole, as raw bytes.
_V4_TUPLE = struct.Struct(">8s4s4s4s4s8sB3x4sH2x4sH2x")
_V4_SKELETON = (
    _header(20, CTA_TUPLE_IP | NLA_F_NESTED) + _header(8, CTA_IP_V4_SRC),
    _header(8, CTA_IP_V4_DST),
    _header(28, CTA_TUPLE_PROTO | NLA_F_NESTED) + _header(5, CTA_PROTO_NUM),
    _header(6, CTA_PROTO_SRC_PORT),
    _header(6, CTA_PROTO_DST_PORT),
)
_ORIG_V4 = _header(52, CTA_TUPLE_ORIG | NLA_F_NESTED)
_REPLY_V4 = _header(52, CTA_TUPLE_REPLY | NLA_F_NESTED)
_STATUS = _header(8, CTA_STATUS)
_ID = _header(8, CTA_ID)
_SKELETON_BYTES = b"".join(_V4_SKELETON)


Tuple = tuple[int, bytes, bytes, int, int]  # protocol, source, destination, ports


def _nest(buf: memoryview, offset: int, end: int) -> Iterator[tuple[int, int, int]]:
    """(type, payload offset, payload end) of each attribute from ``offset`` to ``end``; stops at
    one that claims more than is there."""
    while offset + 4 <= end:
        length, kind = _NLA.unpack_from(buf, offset)
        if length < 4 or offset + length > end:
            return
        yield kind & _NLA_TYPE_MASK, offset + 4, offset + length
        offset += (length + 3) & ~3


def _tuple(buf: memoryview, offset: int, end: int) -> Tuple:
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
                elif inner == CTA_PROTO_SRC_PORT:
                    sport = _BE16.unpack_from(buf, a)[0]
                elif inner == CTA_PROTO_DST_PORT:
                    dport = _BE16.unpack_from(buf, a)[0]
    return proto, src, dst, sport, dport


def _counters(buf: memoryview, offset: int, end: int) -> tuple[int, int]:
    """(packets, bytes) of one CTA_COUNTERS_* attribute."""
    found = {kind: _BE64.unpack_from(buf, a)[0] for kind, a, _b in _nest(buf, offset, end)}
    return found.get(CTA_COUNTERS_PACKETS, 0), found.get(CTA_COUNTERS_BYTES, 0)


def _tcp_state(buf: memoryview, offset: int, end: int) -> int:
    """CTA_PROTOINFO_TCP_STATE inside CTA_PROTOINFO; 0 (none) when absent."""
    for kind, start, stop in _nest(buf, offset, end):
        if kind == CTA_PROTOINFO_TCP:
            for inner, a, b in _nest(buf, start, stop):
                if inner == CTA_PROTOINFO_TCP_STATE and b > a:
                    return buf[a]
    return 0


Keep = Callable[
    [bytes, bytes], bool
]  # (original source, reply source) -> whether to decode the rest


Fast = tuple[Tuple, Tuple, int, int, int]  # both tuples, status, id (0: not yet read), next offset


def _fast_tuples(buf: memoryview, offset: int, end: int) -> Fast | None:
    """Both tuples and the status in the common layout only: IPv4 with ports, then the status (a
    dump's order) or the id and the status (an event's); None for any other, which the general
    walk then reads."""
    if offset + 120 > end:
        return None
    o = _V4_TUPLE.unpack_from(buf, offset)
    r = _V4_TUPLE.unpack_from(buf, offset + 52)
    if (
        o[0][:4] != _ORIG_V4
        or r[0][:4] != _REPLY_V4
        or o[0][4:] + o[1] + o[3] + o[5] + o[7] + o[9] != _SKELETON_BYTES
        or r[0][4:] + r[1] + r[3] + r[5] + r[7] + r[9] != _SKELETON_BYTES
    ):
        return None
    tuples = (o[6], o[2], o[4], o[8], o[10]), (r[6], r[2], r[4], r[8], r[10])
    after = buf[offset + 104 : offset + 108]
    if after == _STATUS:
        return (*tuples, _BE32.unpack_from(buf, offset + 108)[0], 0, offset + 112)
    if after == _ID and buf[offset + 112 : offset + 116] == _STATUS:
        ident, status = (
            _BE32.unpack_from(buf, offset + 108)[0],
            _BE32.unpack_from(buf, offset + 116)[0],
        )
        return (*tuples, status, ident, offset + 120)
    return None


def parse(buf: memoryview, offset: int, end: int, keep: Keep | None = None) -> Entry | None:
    """One ctnetlink conntrack message (``offset``: its nfgenmsg); None when it lacks a tuple, or
    when ``keep`` says its sources are of no interest (the rest is then not decoded)."""
    end = min(end, len(buf))  # a message cut short ends where its datagram does
    offset += _NFGENMSG.size
    fast = _fast_tuples(buf, offset, end)
    orig: Tuple | None
    reply: Tuple | None
    if fast is not None:
        orig, reply, status, ident, offset = fast
        if keep is not None and not keep(orig[1], reply[1]):
            return None
    else:
        orig = reply = None
        status = ident = 0
    tcp_state = 0
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
    if orig is None or reply is None or (fast is None and keep and not keep(orig[1], reply[1])):
        return None
    counters = (*counts[0], *counts[1]) if len(counts) == 2 else None
    return Entry(ident, orig[0], status, *orig[1:], *reply[1:], counters, tcp_state)


def event_kind(msg_type: int, flags: int) -> str | None:
    """NEW, UPDATE or DESTROY for a conntrack event or dump message; None for anything else."""
    if msg_type == CT_DELETE:
        return DESTROY
    if msg_type == CT_NEW:
        return NEW if flags & NLM_F_CREATE else UPDATE
    return None


# In a message of the common layout: the bytes before the original source, and before the reply's.
_ORIG_HEAD = _ORIG_V4 + _V4_SKELETON[0]
_REPLY_HEAD = _REPLY_V4 + _V4_SKELETON[0]
_ORIG_SRC = 16 + _NFGENMSG.size + len(_ORIG_HEAD)
_REPLY_SRC = _ORIG_SRC + 52


def _rejected(data: bytes, offset: int, keep: Keep) -> bool:
    """Whether ``keep`` turns the message at ``offset`` down, judged from its raw bytes (the
    common layout only): most of a large table is, and costs no more than this."""
    o, r = offset + _ORIG_SRC, offset + _REPLY_SRC
    return (
        data[o - 12 : o] == _ORIG_HEAD
        and data[r - 12 : r] == _REPLY_HEAD
        and not keep(data[o : o + 4], data[r : r + 4])
    )


def parse_datagram(data: bytes, keep: Keep | None = None) -> Iterator[tuple[str, Entry]]:
    """(kind, entry) of each conntrack message in one datagram (events or a dump's part)."""
    for msg_type, flags, buf, start, end in iter_messages(data):
        kind = event_kind(msg_type, flags)
        if kind is not None:
            if keep is not None and _rejected(data, start - 16, keep):
                continue
            entry = parse(buf, start, end, keep)
            if entry is not None:
                yield kind, entry
        elif msg_type == NLMSG_ERROR:
            code = -struct.unpack_from("=i", buf, start)[0]
            if code:
                raise NetlinkError(code, os.strerror(code))


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


def dump_datagrams() -> Iterator[bytes]:
    """The raw datagrams of one dump of the whole table (what ``dump`` parses)."""
    with _socket() as sock:
        sock.bind((0, 0))
        sock.send(dump_request())
        while True:
            data = sock.recv(DUMP_RECV_BYTES)
            yield data
            if any(kind in (NLMSG_DONE, NLMSG_ERROR) for kind, *_ in iter_messages(data)):
                return


def dump(keep: Keep | None = None) -> Iterator[Entry]:
    """Every entry of the host's table (those ``keep`` keeps), streamed: the table may hold
    hundreds of thousands."""
    for data in dump_datagrams():
        for _kind, entry in parse_datagram(data, keep):
            yield entry
