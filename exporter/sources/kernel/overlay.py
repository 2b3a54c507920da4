"""Reads of Docker's overlay namespaces that change without the topology changing: the counters of
their links, their VXLAN forwarding database (the remote VTEPs), and the host's route to a peer.

The state reads an overlay namespace's links with one RTM_GETLINK dump by its id
(IFLA_TARGET_NETNSID), from the host: no setns. Each scrape needs their counters and forwarding
database, which that dump answers at ten times the cost (every link's forty attributes) or not at
all (the kernel answers a PF_BRIDGE RTM_GETNEIGH dump in the socket's own namespace only, and an
RTM_GETSTATS dump likewise). So a socket is opened once inside each overlay namespace, by a
short-lived thread that enters it, and kept for the namespace's life (a socket stays in the
namespace it was made in): each scrape asks it for the counters (RTM_GETSTATS) and, once a socket
beside it was told of a neighbour change, the forwarding database, and enters no namespace.
"""

from __future__ import annotations

import ctypes
import os
import select
import socket
import struct
import threading
from collections.abc import Callable, Collection, Iterable, Sequence
from typing import TypeVar

from exporter import logs
from exporter.core.model import Counters
from exporter.sources.kernel import netlink as nl

T = TypeVar("T")
log = logs.get_logger()

CLONE_NEWNET = 0x40000000
EVERY_IFINDEX = range(1, 2**31)  # ifindexes are positive ints
RTM_NEWNEIGH, RTM_GETNEIGH = 28, 30
RTMGRP_NEIGH = 0x4  # forwarding database entries too (PF_BRIDGE)
RTM_NEWROUTE, RTM_GETROUTE = 24, 26
NDA_DST, NDA_LLADDR = 1, 2
RTA_DST, RTA_OIF = 1, 4
IFLA_STATS64 = 23
_STATS64 = struct.Struct("=16Q")
_NDMSG = struct.Struct("=BxxxiHBB")  # family, ifindex, state, flags, type
_RTMSG = struct.Struct(
    "=BBBBBBBBI"
)  # family, dst_len, src_len, tos, table, protocol, scope, type, flags


class OverlayNetlink(nl.Netlink):
    """Route lookups from the host; in an overlay's namespace, its counters (Netlink.link_stats) and
    its forwarding database."""

    # Neighbours and routes are small messages: a 1 MiB buffer would cost a fresh mapping per recv.
    recv_bytes = nl.STATS_RECV_BYTES

    def route_oif(self, address: str) -> int | None:
        """The ifindex of the host's interface towards `address` (RTM_GETROUTE), None if none."""
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        raw = socket.inet_pton(family, address)
        body = _RTMSG.pack(family, len(raw) * 8, 0, 0, 0, 0, 0, 0, 0) + nl._attr(RTA_DST, raw)
        try:
            for kind, buf, start, end in self._request(RTM_GETROUTE, 0, body):
                attrs = nl._attrs(buf, start + _RTMSG.size, end)
                if kind == RTM_NEWROUTE and RTA_OIF in attrs:
                    return nl._U32.unpack_from(attrs[RTA_OIF])[0]
        except nl.NetlinkError:  # unreachable
            return None
        return None

    def counters_by_id(self, nsid: int) -> dict[int, Counters]:
        """The counter rows of the links of the namespace with that id, by ifindex there, from a
        socket in any namespace: one RTM_GETLINK dump by its id (IFLA_TARGET_NETNSID), each link's
        IFLA_STATS64 alone decoded."""
        body = nl._IFINFOMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0)
        body += nl._attr(nl.IFLA_TARGET_NETNSID, nl._S32.pack(nsid))
        out = {}
        for kind, buf, start, end in self._request(nl.RTM_GETLINK, nl.NLM_F_DUMP, body):
            row = _stats64(buf, start, end) if kind == nl.RTM_NEWLINK else None
            if row is not None:
                out[nl._IFINFOMSG.unpack_from(buf, start)[2]] = row
        return out

    def fdb_destinations(self, ifindex: int) -> set[str]:
        """The remote VTEPs (NDA_DST) in the forwarding database of that VXLAN device, from a socket
        in the device's namespace."""
        body = _NDMSG.pack(socket.AF_BRIDGE, ifindex, 0, 0, 0)
        out = set()
        for kind, buf, start, end in self._request(RTM_GETNEIGH, nl.NLM_F_DUMP, body):
            if kind != RTM_NEWNEIGH:
                continue
            _family, index, _state, _flags, _type = _NDMSG.unpack_from(buf, start)
            attrs = nl._attrs(buf, start + _NDMSG.size, end)
            if index == ifindex and NDA_DST in attrs:
                raw = bytes(attrs[NDA_DST])
                address = socket.inet_ntop(
                    socket.AF_INET if len(raw) == 4 else socket.AF_INET6, raw
                )
                if address not in ("0.0.0.0", "::"):
                    out.add(address)
        return out


def _stats64(buf: memoryview, start: int, end: int) -> Counters | None:
    """The IFLA_STATS64 row of one link message; the other attributes are skipped, not sliced."""
    offset = start + nl._IFINFOMSG.size
    while offset + 4 <= end:
        length, kind = nl._RTATTR.unpack_from(buf, offset)
        if length < 4:
            return None
        if kind & 0x3FFF == IFLA_STATS64 and length - 4 >= _STATS64.size:
            return nl._counters(_STATS64.unpack_from(buf, offset + 4))
        offset += (length + 3) & ~3
    return None


def in_namespace(path: str, make: Callable[[], T]) -> T:
    """make(), called in a thread of its own that entered the network namespace bound at `path`
    (the caller's threads stay where they are)."""
    out: dict = {}

    def run() -> None:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                if ctypes.CDLL(None, use_errno=True).setns(fd, CLONE_NEWNET) != 0:
                    errno = ctypes.get_errno()
                    raise OSError(errno, f"setns {path}: {os.strerror(errno)}")
                out["value"] = make()
            finally:
                os.close(fd)
        except Exception as exc:  # handed to the caller
            out["error"] = exc

    t = threading.Thread(target=run, name="netns-socket", daemon=True)
    t.start()
    t.join()
    if "error" in out:
        raise out["error"]
    return out["value"]


class NamespaceSocket:
    """What is kept in one overlay namespace: a request socket, and a socket told of every change
    of its neighbours, so that the forwarding database is dumped again only once it changed (or
    once changes were lost: ENOBUFS)."""

    def __init__(self) -> None:
        self.requests = OverlayNetlink()
        self.changes = socket.socket(
            socket.AF_NETLINK,
            socket.SOCK_RAW | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK,
            nl.NETLINK_ROUTE,
        )
        self.changes.bind((0, RTMGRP_NEIGH))
        self._fdb: dict[int, set[str]] = {}  # VXLAN device -> its remote VTEPs, until a change

    def fdb_destinations(self, ifindex: int, told: bool | None = None) -> set[str]:
        """The VXLAN device's remote VTEPs; `told`: whether a poll found changes told (None: look
        now)."""
        if (told is None or told) and self._changed():
            self._fdb.clear()
        if ifindex not in self._fdb:
            self._fdb[ifindex] = self.requests.fdb_destinations(ifindex)
        return set(self._fdb[ifindex])

    def link_stats(self, ifindexes: Collection[int]) -> dict[int, Counters]:
        return self.requests.link_stats(ifindexes)

    def _changed(self) -> bool:
        """Whether a change was told since the last call; what was told is read away."""
        told = False
        while True:
            try:
                self.changes.recv(nl.STATS_RECV_BYTES)
            except BlockingIOError:
                return told
            except OSError:  # ENOBUFS: some were lost, which is a change too
                pass
            told = True

    def close(self) -> None:
        self.requests.close()
        self.changes.close()


class NamespaceSockets:
    """One NamespaceSocket per overlay namespace, opened inside it at first use, kept while the
    namespace file holds the same namespace, closed when it is gone. Calls are serialised: scrapes
    may run at once.

    Entering a namespace needs CAP_SYS_ADMIN. Where it is refused, that namespace's counters come
    from a dump by its id through a host socket (dearer), and its forwarding database is unknown
    (None): the refusal is logged once per namespace and not tried again while it lives."""

    def __init__(
        self,
        opener: Callable[[str], NamespaceSocket] | None = None,
        host: Callable[[], OverlayNetlink] | None = None,
    ) -> None:
        self._open = opener or (lambda path: in_namespace(path, NamespaceSocket))
        self._host = host or OverlayNetlink
        self._sockets: dict[tuple[str, int], NamespaceSocket | None] = {}  # None: refused
        self._host_socket: OverlayNetlink | None = None
        self._lock = threading.Lock()

    def fdb_destinations(self, path: str, ifindex: int) -> set[str] | None:
        """The remote VTEPs in the forwarding database of that VXLAN device of the namespace; None
        where the namespace cannot be entered."""
        with self._lock:
            sock = self._socket(path)
            return None if sock is None else sock.fdb_destinations(ifindex)

    def fdb_destinations_of(self, devices: Sequence[tuple[str, int, int]]) -> list[set[str] | None]:
        """fdb_destinations of each (path, inode of the namespace bound there, VXLAN ifindex), in
        one poll for the changes told in all of those namespaces, not a look per namespace."""
        with self._lock:
            socks = [self._socket(path, inode) for path, inode, _ifindex in devices]
            changes = select.poll()
            for sock in socks:
                if sock is not None:
                    changes.register(sock.changes, select.POLLIN)
            told = {fd for fd, _events in changes.poll(0)}
            return [
                None
                if sock is None
                else sock.fdb_destinations(ifindex, sock.changes.fileno() in told)
                for sock, (_path, _inode, ifindex) in zip(socks, devices, strict=True)
            ]

    def link_stats(self, path: str, nsid: int, inode: int | None = None) -> dict[int, Counters]:
        """The counter rows of every link of the namespace (bound at `path`, `nsid` from here), by
        ifindex there; `inode`: of the namespace the caller found bound there (None: look)."""
        with self._lock:
            sock = self._socket(path, inode)
            if sock is not None:
                return sock.link_stats(EVERY_IFINDEX)
            if self._host_socket is None:  # one for every namespace not entered, kept
                self._host_socket = self._host()
            return self._host_socket.counters_by_id(nsid)

    def _socket(self, path: str, inode: int | None = None) -> NamespaceSocket | None:
        key = (path, os.stat(path).st_ino if inode is None else inode)
        if key in self._sockets:
            return self._sockets[key]
        for old in [k for k in self._sockets if k[0] == path]:  # another namespace there now
            self._close(self._sockets.pop(old))
        try:
            sock: NamespaceSocket | None = self._open(path)
        except PermissionError as exc:
            log.warning(
                "overlay_namespace_not_entered",
                path=path,
                error=str(exc),
                hint="without CAP_SYS_ADMIN its peers are not read, its counters read by its id",
            )
            sock = None
        self._sockets[key] = sock
        return sock

    def keep(self, paths: Iterable[str]) -> None:
        """Close the sockets of namespaces no longer among `paths`."""
        wanted = set(paths)
        with self._lock:
            for key in [k for k in self._sockets if k[0] not in wanted]:
                self._close(self._sockets.pop(key))

    @staticmethod
    def _close(sock: NamespaceSocket | None) -> None:
        if sock is not None:
            sock.close()

    def close(self) -> None:
        self.keep(())
        with self._lock:
            if self._host_socket is not None:
                self._host_socket.close()
                self._host_socket = None


_shared: NamespaceSockets | None = None
_shared_lock = threading.Lock()


def shared_sockets() -> NamespaceSockets:
    """The sockets in overlay namespaces that the collectors of this process share: one per
    namespace, not one per collector."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = NamespaceSockets()
        return _shared
