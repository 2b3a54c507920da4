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
import socket
import struct
import threading
from collections.abc import Callable, Collection, Iterable
from typing import TypeVar

from exporter.core.model import Counters
from exporter.sources.kernel import netlink as nl

T = TypeVar("T")

CLONE_NEWNET = 0x40000000
EVERY_IFINDEX = range(1, 2**31)  # ifindexes are positive ints
RTM_NEWNEIGH, RTM_GETNEIGH = 28, 30
RTMGRP_NEIGH = 0x4  # forwarding database entries too (PF_BRIDGE)
RTM_NEWROUTE, RTM_GETROUTE = 24, 26
NDA_DST, NDA_LLADDR = 1, 2
RTA_DST, RTA_OIF = 1, 4
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

    def fdb_destinations(self, ifindex: int) -> set[str]:
        if self._changed():
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
    may run at once."""

    def __init__(self, opener: Callable[[str], NamespaceSocket] | None = None) -> None:
        self._open = opener or (lambda path: in_namespace(path, NamespaceSocket))
        self._sockets: dict[tuple[str, int], NamespaceSocket] = {}
        self._lock = threading.Lock()

    def fdb_destinations(self, path: str, ifindex: int) -> set[str]:
        """The remote VTEPs in the forwarding database of that VXLAN device of the namespace."""
        with self._lock:
            return self._socket(path).fdb_destinations(ifindex)

    def link_stats(self, path: str) -> dict[int, Counters]:
        """The counter rows of every link of the namespace, by ifindex there."""
        with self._lock:
            return self._socket(path).link_stats(EVERY_IFINDEX)

    def _socket(self, path: str) -> NamespaceSocket:
        key = (path, os.stat(path).st_ino)
        sock = self._sockets.get(key)
        if sock is None:
            for old in [k for k in self._sockets if k[0] == path]:  # another namespace there now
                self._sockets.pop(old).close()
            sock = self._sockets[key] = self._open(path)
        return sock

    def keep(self, paths: Iterable[str]) -> None:
        """Close the sockets of namespaces no longer among `paths`."""
        wanted = set(paths)
        with self._lock:
            for key in [k for k in self._sockets if k[0] not in wanted]:
                self._sockets.pop(key).close()

    def close(self) -> None:
        self.keep(())


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
