"""Who holds each address, for the flows: a workload (a container's name and compose project, a
pod's name and Kubernetes namespace), the host, or the outside. Pure: built from a snapshot and
the host's addresses."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from exporter.core.flows import Entry
    from exporter.core.model import Address
    from exporter.core.topology import Snapshot, WorkloadView

WORKLOAD, HOST, EXTERNAL, OTHER = "workload", "host", "external", "other"
_LOOPBACK6 = socket.inet_pton(socket.AF_INET6, "::1")


class Peer(NamedTuple):
    """One end of a flow as its labels name it: a workload (a container's name and compose
    project, a pod's name and Kubernetes namespace), or one of the kinds below."""

    name: str
    namespace: str
    kind: str = WORKLOAD


HOST_PEER = Peer(HOST, "", HOST)
EXTERNAL_PEER = Peer(EXTERNAL, "", EXTERNAL)
OTHER_PEER = Peer(OTHER, "", OTHER)
NOT_WORKLOADS = frozenset({HOST_PEER, EXTERNAL_PEER, OTHER_PEER})


def packed(address: str) -> bytes:
    return socket.inet_pton(socket.AF_INET6 if ":" in address else socket.AF_INET, address)


MEMO_ADDRESSES = 65536  # addresses whose kind an attribution remembers, at most
Subnet = tuple[int, int, int]  # address length, network and mask as integers


@dataclass(frozen=True)
class Attribution:
    """Who holds each address: the workloads' (packed address -> peer), the host's own (its
    interfaces, bridge gateways among them, and loopback), and the workload networks' subnets,
    where an address nobody holds yet may be a workload that the snapshot does not show yet."""

    workloads: Mapping[bytes, Peer]
    host: frozenset[bytes]
    subnets: tuple[Subnet, ...] = ()
    _maybe_workload: dict[bytes, bool] = field(default_factory=dict, compare=False, repr=False)

    def peer(self, address: bytes) -> Peer | None:
        """The peer at that address; None while it is in a workload network and nobody holds it."""
        found = self.workloads.get(address)
        if found is not None:
            return found
        if (
            address in self.host
            or (address[0] == 127 and len(address) == 4)
            or address == _LOOPBACK6
        ):
            return HOST_PEER
        n, size = int.from_bytes(address, "big"), len(address)
        if any(size == length and n & mask == net for length, net, mask in self.subnets):
            return None
        return EXTERNAL_PEER

    def involves_workload(self, entry: Entry) -> bool:
        """Whether an end of that connection is, or may be, a workload."""
        return self.keep(entry.src, entry.reply_src)

    def keep(self, source: bytes, answerer: bytes) -> bool:
        """Whether the connection between those addresses may involve a workload: decoded and
        kept (conntrack.Keep). Remembers each address's answer, a dump asks for every entry."""
        known = self._maybe_workload
        a = known.get(source)
        if a is None:
            a = self._workload_or_pending(source)
        if a:
            return True
        b = known.get(answerer)
        return self._workload_or_pending(answerer) if b is None else b

    def _workload_or_pending(self, address: bytes) -> bool:
        known = self._maybe_workload
        if len(known) > MEMO_ADDRESSES:
            known.clear()
        peer = self.peer(address)
        known[address] = found = peer is None or peer.kind == WORKLOAD
        return found


def subnet(text: str) -> Subnet | None:
    try:
        net = ipaddress.ip_network(text, strict=False)
    except ValueError:
        return None
    return net.max_prefixlen // 8, int(net.network_address), int(net.netmask)


def peer_of(view: WorkloadView) -> Peer:
    c = view.container
    if c.is_pod:
        return Peer(c.pod_name, c.pod_namespace)
    return Peer(c.name, c.compose_project)


def owners(snap: Snapshot) -> list[WorkloadView]:
    """The workloads that own a network namespace of their own (not the host's)."""
    return [
        v for v in snap.containers if v.netns_owner == v.container.id and v.network_mode != "host"
    ]


def live(snap: Snapshot) -> frozenset[Peer]:
    """The peers of the snapshot's workloads: the series of any other workload are gone."""
    return frozenset(peer_of(v) for v in owners(snap))


def attribution(snap: Snapshot, host_addresses: Iterable[Address]) -> Attribution:
    """The attribution of a snapshot: each namespace owner's addresses (read in its namespace, and
    those its runtime reports), the host's addresses, and the workload networks: the runtimes'
    subnets and those of the host's bridges (a network just made may not be in the snapshot yet
    when its first container connects)."""
    workloads: dict[bytes, Peer] = {}
    for view in owners(snap):
        c, peer = view.container, peer_of(view)
        found = [a.address for a in snap.addresses.get(c.nsid, ())] if c.nsid is not None else []
        found += [a for ep in c.endpoints for a in (ep.ipv4, ep.ipv6) if a]
        for address in found:
            raw = packed(address)
            if raw[0] != 127 and raw != _LOOPBACK6 and not address.startswith("fe80:"):
                workloads.setdefault(raw, peer)
    host_addresses = list(host_addresses)
    texts = [text for n in snap.networks.values() for text, _gw in n.subnets]
    texts += [
        f"{a.address}/{a.prefix_length}"
        for a in host_addresses
        if a.ifindex in snap.links and snap.links[a.ifindex].kind == "bridge"
    ]
    subnets = {s for text in texts if (s := subnet(text))}
    host = frozenset(packed(a.address) for a in host_addresses) - workloads.keys()
    return Attribution(workloads, host, tuple(sorted(subnets)))
