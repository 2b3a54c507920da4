"""The conntrack table's NEW, UPDATE and DESTROY events on a socket of their own, with a kernel-side
filter that drops the updates of connections already answered both ways; events the kernel could
not queue (ENOBUFS) are counted from the socket's drops and followed by a fresh dump."""

from __future__ import annotations

import ctypes
import errno
import os
import select
import socket
import struct
from collections.abc import Callable

from exporter.core.flows import Entry
from exporter.sources import Wakeup
from exporter.sources.kernel.conntrack import (
    _ID,
    _NFGENMSG,
    _ORIG_V4,
    _ORIG_V6,
    _STATUS,
    CT_NEW,
    DUMP_RECV_BYTES,
    GROUP_DESTROY,
    GROUP_NEW,
    GROUP_UPDATE,
    NETLINK_NO_ENOBUFS,
    NLM_F_CREATE,
    RCVBUF_BYTES,
    Keep,
    _socket,
    parse_datagram,
)
from exporter.sources.kernel.netlink import SO_RCVBUFFORCE, SOL_NETLINK


def socket_drops(sock: socket.socket, path: str = "/proc/self/net/netlink") -> int | None:
    """How many messages the kernel dropped for want of room in this socket's buffer (the Drops
    column of /proc/net/netlink, found by the socket's inode)."""
    inode = str(os.fstat(sock.fileno()).st_ino)
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    for line in lines[1:]:
        cols = line.split()
        if len(cols) >= 10 and cols[9] == inode:
            return int(cols[8])
    return None


# A classic BPF program for the event socket: the kernel drops the UPDATE events of connections
# already assured (answered both ways, so nothing the flows need: TCP's ESTABLISHED, FIN_WAIT, ...,
# TIME_WAIT), five of a TCP connection's six updates. It reads the status where the common layout
# has it (after both tuples, IPv4 or IPv6, and the id); any other message passes, and the parser
# decides.
SO_ATTACH_FILTER = 26
_BPF = struct.Struct("=HBBI")  # code, jump if true, jump if false, k
BPF_LD_H_ABS, BPF_LD_W_ABS = 0x28, 0x20
BPF_JEQ_K, BPF_JSET_K, BPF_RET_K = 0x15, 0x45, 0x06
IPS_ASSURED_BIT = 1 << 2
_TUPLES = 16 + _NFGENMSG.size  # where an event's original tuple starts
_V4_ID, _V6_ID = _TUPLES + 2 * 52, _TUPLES + 2 * 76  # and its id, after both tuples


def _be16(value: int) -> int:
    """A host-order u16 of the message as BPF's big-endian load reads it."""
    return int.from_bytes(struct.pack("=H", value), "big")


def _word(raw: bytes) -> int:
    return int.from_bytes(raw, "big")


def assured_update_filter() -> bytes:
    """The program, written with labels: each jump names the instruction it goes to."""

    def status_check(at: int) -> list:
        return [
            (BPF_LD_W_ABS, at, None, None),
            (BPF_JEQ_K, _word(_ID), None, "pass"),  # another layout: pass
            (BPF_LD_W_ABS, at + 8, None, None),
            (BPF_JEQ_K, _word(_STATUS), None, "pass"),
            (BPF_LD_W_ABS, at + 12, None, None),  # the status, big-endian
            (BPF_JSET_K, IPS_ASSURED_BIT, "drop", "pass"),  # assured: drop
        ]

    program = [
        (BPF_LD_H_ABS, 4, None, None),  # nlmsg_type
        (BPF_JEQ_K, _be16(CT_NEW), None, "pass"),  # not a NEW or UPDATE: pass
        (BPF_LD_H_ABS, 6, None, None),  # nlmsg_flags
        (BPF_JSET_K, _be16(NLM_F_CREATE), "pass", None),  # NEW: pass
        (BPF_LD_W_ABS, _TUPLES, None, None),
        (BPF_JEQ_K, _word(_ORIG_V4), "v4", None),
        (BPF_JEQ_K, _word(_ORIG_V6), "v6", "pass"),
        "v4",
        *status_check(_V4_ID),
        "v6",
        *status_check(_V6_ID),
        "pass",
        (BPF_RET_K, 0xFFFFFFFF, None, None),
        "drop",
        (BPF_RET_K, 0, None, None),
    ]
    return _assemble(program)


def _assemble(program: list) -> bytes:
    labels, index = {}, 0
    for step in program:
        if isinstance(step, str):
            labels[step] = index
        else:
            index += 1
    code, pc = b"", 0
    for step in program:
        if isinstance(step, str):
            continue
        op, k, true, false = step

        def jump(label: str | None, pc: int = pc) -> int:
            return 0 if label is None else labels[label] - pc - 1

        code += _BPF.pack(op, jump(true), jump(false), k)
        pc += 1
    return code


def attach_filter(sock: socket.socket, program: bytes) -> ctypes.Array:
    """Attach a classic BPF program; the returned buffer must outlive the call only."""
    code = ctypes.create_string_buffer(program, len(program))
    fprog = struct.pack("@HL", len(program) // _BPF.size, ctypes.addressof(code))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)
    return code


class EventMonitor:
    """The table's events. ``run`` calls ``on_events(batch)`` with the (kind, entry) pairs of each
    read, ``on_overflow(lost)`` when the kernel dropped events (ENOBUFS; ``lost`` from the socket's
    drop count, None if unreadable), and ``on_idle()`` after each wait, which lasts at most the
    seconds ``on_idle`` last returned (1 at first); ``keep()`` gives the filter of events not
    worth decoding. Open it before the dump that it complements: no event falls between."""

    def __init__(
        self,
        on_events: Callable[[list[tuple[str, Entry]]], None],
        on_overflow: Callable[[int | None], None],
        on_idle: Callable[[], float],
        rcvbuf: int = RCVBUF_BYTES,
        keep: Callable[[], Keep | None] = lambda: None,
        groups: int = GROUP_NEW | GROUP_UPDATE | GROUP_DESTROY,
    ) -> None:
        self.on_events = on_events
        self.on_overflow = on_overflow
        self.on_idle = on_idle
        self.keep = keep  # the filter of the moment, asked once per read
        self._wakeup = Wakeup()
        self.sock = _socket()
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, rcvbuf)
        except OSError:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.setsockopt(SOL_NETLINK, NETLINK_NO_ENOBUFS, 0)
        attach_filter(self.sock, assured_update_filter())
        self.sock.bind((0, groups))
        self.sock.setblocking(False)
        self._drops = socket_drops(self.sock) or 0

    def stop(self) -> None:
        self._wakeup.stop()

    def run(self) -> None:
        try:
            timeout = 1.0
            # poll, not select: select cannot wait on a descriptor numbered 1024 or above.
            waiting = select.poll()
            waiting.register(self.sock.fileno(), select.POLLIN)
            waiting.register(self._wakeup.fd, select.POLLIN)
            while not self._wakeup.stopping:
                ready = {fd for fd, _event in waiting.poll(timeout * 1000)}
                if self.sock.fileno() in ready:
                    self._drain()
                timeout = self.on_idle()
        finally:
            self.sock.close()
            self._wakeup.close()

    def _drain(self) -> None:
        """Everything queued, in batches of one read each."""
        for _ in range(1024):
            try:
                data = self.sock.recv(DUMP_RECV_BYTES)
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno != errno.ENOBUFS:
                    raise
                self._overflowed()
                continue
            self.on_events(list(parse_datagram(data, self.keep())))

    def _overflowed(self) -> None:
        drops = socket_drops(self.sock)
        lost = None if drops is None else drops - self._drops
        self._drops = drops if drops is not None else self._drops
        self.on_overflow(lost)
