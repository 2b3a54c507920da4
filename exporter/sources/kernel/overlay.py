"""Reads of Docker's overlay namespaces that change without the topology changing: the counters of
their links, their VXLAN forwarding database (the remote VTEPs), and the host's route to a peer.

Links and counters come from one RTM_GETLINK dump by the namespace's id (IFLA_TARGET_NETNSID), from
a socket in the exporter's namespace: no setns. The forwarding database has no such request (the
kernel answers a PF_BRIDGE RTM_GETNEIGH dump in the socket's own namespace only), so a socket is
opened once inside each overlay namespace, by a short-lived thread that enters it, and kept for the
namespace's life: a socket stays in the namespace it was made in.
"""

from __future__ import annotations

import ctypes
import os
import socket
import struct
import threading
from collections.abc import Callable, Iterable
from typing import NamedTuple, TypeVar

from exporter.core.model import Counters
from exporter.sources.kernel import netlink as nl

T = TypeVar("T")

CLONE_NEWNET = 0x40000000
IFLA_STATS64 = 23
RTM_NEWNEIGH, RTM_GETNEIGH = 28, 30
RTM_NEWROUTE, RTM_GETROUTE = 24, 26
NDA_DST, NDA_LLADDR = 1, 2
RTA_DST, RTA_OIF = 1, 4
_NDMSG = struct.Struct("=BxxxiHBB")  # family, ifindex, state, flags, type
_RTMSG = struct.Struct(
    "=BBBBBBBBI"
)  # family, dst_len, src_len, tos, table, protocol, scope, type, flags
_STATS64 = struct.Struct("=16Q")


class OverlayLink(NamedTuple):
    """One link of an overlay's namespace as a scrape reads it: what the overlay's figures and its
    endpoints' counters need, decoded alone (a full Link costs twice as much)."""

    ifindex: int
    kind: str
    master: int
    mtu: int
    counters: Counters | None


class OverlayNetlink(nl.Netlink):
    """The host-side requests: links with counters of a namespace by id, and route lookups."""

    # An overlay's links, neighbours and routes are small messages: a 1 MiB buffer would cost a fresh
    # mapping per recv (two per namespace each scrape: a third of the dumps' time).
    recv_bytes = nl.STATS_RECV_BYTES

    def __enter__(self) -> OverlayNetlink:
        return self

    def overlay_links(self, nsid: int) -> list[OverlayLink]:
        """The links of one namespace by its id (IFLA_TARGET_NETNSID), with their counters."""
        body = nl._IFINFOMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0)
        body += nl._attr(nl.IFLA_TARGET_NETNSID, nl._S32.pack(nsid))
        return [
            _overlay_link(buf, start, end)
            for kind, buf, start, end in self._request(nl.RTM_GETLINK, nl.NLM_F_DUMP, body)
            if kind == nl.RTM_NEWLINK
        ]

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


_WANTED = frozenset((nl.IFLA_MTU, nl.IFLA_MASTER, nl.IFLA_LINKINFO, IFLA_STATS64))


def _some_attrs(buf: memoryview, start: int, end: int, wanted: frozenset[int]) -> dict:
    """Those top-level attributes of one link message: the others are skipped, not sliced (a link
    has some forty), and the walk ends once all are found."""
    out = {}
    offset, unpack = start + nl._IFINFOMSG.size, nl._RTATTR.unpack_from
    while offset + 4 <= end:
        length, kind = unpack(buf, offset)
        if length < 4:
            break
        if kind & 0x3FFF in wanted:
            out[kind & 0x3FFF] = buf[offset + 4 : offset + length]
            if len(out) == len(wanted):
                break
        offset += (length + 3) & ~3
    return out


def _overlay_link(buf: memoryview, start: int, end: int) -> OverlayLink:
    attrs = _some_attrs(buf, start, end, _WANTED)
    info = attrs.get(nl.IFLA_LINKINFO)
    kinds = nl._attrs(info, 0, len(info)) if info is not None else {}
    raw = attrs.get(IFLA_STATS64)
    return OverlayLink(
        ifindex=nl._IFINFOMSG.unpack_from(buf, start)[2],
        kind=nl._cstr(kinds[nl.IFLA_INFO_KIND]) if nl.IFLA_INFO_KIND in kinds else "",
        master=nl._U32.unpack_from(attrs[nl.IFLA_MASTER])[0] if nl.IFLA_MASTER in attrs else 0,
        mtu=nl._U32.unpack_from(attrs[nl.IFLA_MTU])[0] if nl.IFLA_MTU in attrs else 0,
        counters=(
            nl._counters(_STATS64.unpack_from(raw))
            if raw is not None and len(raw) >= _STATS64.size
            else None
        ),
    )


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


class NamespaceSockets:
    """One request socket per overlay namespace, opened inside it at first use, kept while the
    namespace file holds the same namespace, closed when it is gone. Calls are serialised: scrapes
    may run at once."""

    def __init__(self, opener: Callable[[str], OverlayNetlink] | None = None) -> None:
        self._open = opener or (lambda path: in_namespace(path, OverlayNetlink))
        self._sockets: dict[tuple[str, int], OverlayNetlink] = {}
        self._lock = threading.Lock()

    def fdb_destinations(self, path: str, ifindex: int) -> set[str]:
        with self._lock:
            key = (path, os.stat(path).st_ino)
            sock = self._sockets.get(key)
            if sock is None:
                for old in [
                    k for k in self._sockets if k[0] == path
                ]:  # another namespace there now
                    self._sockets.pop(old).close()
                sock = self._sockets[key] = self._open(path)
            return sock.fdb_destinations(ifindex)

    def keep(self, paths: Iterable[str]) -> None:
        """Close the sockets of namespaces no longer among `paths`."""
        wanted = set(paths)
        with self._lock:
            for key in [k for k in self._sockets if k[0] not in wanted]:
                self._sockets.pop(key).close()

    def close(self) -> None:
        self.keep(())


def read_overlay_links(nsids: Iterable[int]) -> dict[int, list[OverlayLink]]:
    """The links with counters of overlay namespaces, by namespace id: one dump each, from a socket
    of its own (scrapes run at once). A namespace gone since the snapshot is left out."""
    out = {}
    with OverlayNetlink() as netlink:
        for nsid in nsids:
            try:
                out[nsid] = netlink.overlay_links(nsid)
            except OSError:
                continue
    return out
