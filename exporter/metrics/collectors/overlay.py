"""Docker's overlay networks on this node, and the address use of every Docker network.

Per overlay network with a namespace here (see core/overlay.py): its metadata, its VXLAN device's
counters and MTU, its local endpoints (veths on br0), its peers (remote VTEPs in the device's
forwarding database) and the MTU of the host interface towards each. Leaked overlay namespaces and
`vx-*` devices left in the host namespace are counted once seen for the grace period.

Fresh each scrape, through a socket opened in each overlay namespace once (sources/kernel/overlay.py):
one counters dump (RTM_GETSTATS) per overlay, shared with the containers collector (whose overlay
interfaces count from those veths), and one forwarding database dump per overlay; one route lookup
per peer address. Which link is the VXLAN device and which veths are on br0 is the state's (its
dump of the namespace by id, read again when its endpoints change).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, KeysView
from typing import TYPE_CHECKING, NamedTuple

from exporter.app.flags import duration
from exporter.core import model, overlay
from exporter.core.memo import MemoKey
from exporter.metrics import per_scrape
from exporter.metrics.collectors.base import Collector, Context, Option
from exporter.metrics.exposition import Family, labels

if TYPE_CHECKING:
    from exporter.core.topology import Snapshot
    from exporter.sources.kernel.overlay import NamespaceSockets, OverlayNetlink

# overlay namespace id -> ifindex there -> counter row.
OverlayCounters = dict[int, dict[int, model.Counters]]

NETWORK_ADDRESSES: MemoKey[tuple[Family, Family]] = MemoKey("network addresses")
VXLAN_LINKS: MemoKey[list[model.Link]] = MemoKey("vxlan links")
OVERLAY_COUNTERS: MemoKey[tuple[list[overlay.Namespace], OverlayCounters]] = MemoKey(
    "overlay counters"
)


class Parts(NamedTuple):
    """What one overlay namespace's series need that changes with the snapshot only."""

    network: str  # the network's name (the namespace's file name when Docker lists none)
    label_set: str  # {network="..."}
    vxlan: model.Link | None
    endpoints: frozenset[int]  # the ifindexes of the veths on br0, as the state read them
    known: frozenset[int]  # the ifindexes of every link the state read
    info: tuple[str, ...]  # its dockernet_overlay_network_info label sets


OVERLAY_PARTS: MemoKey[dict[int, Parts]] = MemoKey("overlay parts")  # by namespace id

VXLAN_COUNTERS = (
    (
        "receive_bytes",
        model.RX_BYTES,
        "Bytes received from other nodes by the overlay's VXLAN device.",
    ),
    ("receive_packets", model.RX_PACKETS, "Packets received by the overlay's VXLAN device."),
    ("receive_errors", model.RX_ERRS, "Receive errors of the overlay's VXLAN device."),
    ("receive_dropped", model.RX_DROP, "Packets dropped on receive by the overlay's VXLAN device."),
    ("transmit_bytes", model.TX_BYTES, "Bytes sent to other nodes by the overlay's VXLAN device."),
    ("transmit_packets", model.TX_PACKETS, "Packets sent by the overlay's VXLAN device."),
    ("transmit_errors", model.TX_ERRS, "Transmit errors of the overlay's VXLAN device."),
    (
        "transmit_dropped",
        model.TX_DROP,
        "Packets dropped on transmit by the overlay's VXLAN device.",
    ),
)
DEFAULT_GRACE = 120.0  # libnetwork removes a left network's namespace within about a minute


class OverlayCollector(Collector):
    name = "overlay"
    help = (
        "Docker's overlay networks on this node (VXLAN counters, peers, endpoints, MTUs, leaks) "
        "and dockernet_network_addresses_used/_capacity of every Docker network"
    )
    options = (
        Option(
            "grace",
            duration,
            "2m",
            "how long an overlay namespace whose network Docker no longer lists, or a vx-* device "
            "in the host namespace, must have been seen before it counts as leaked",
        ),
    )

    def __init__(
        self,
        context: Context | None = None,
        *,
        grace: float = DEFAULT_GRACE,
        sockets: NamespaceSockets | None = None,
        netlink: Callable[[], OverlayNetlink] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        from exporter.sources.kernel.overlay import OverlayNetlink, shared_sockets

        self.grace = grace
        self.sockets = sockets or shared_sockets()
        self.netlink = netlink or OverlayNetlink
        self.clock = clock
        self._since: dict = {}
        self._lock = threading.Lock()

    def stop(self) -> None:
        self.sockets.close()

    def collect(self, snap: Snapshot) -> list[Family]:
        live, counters = overlay_counters(snap, self.sockets)
        parts = snap.memo(OVERLAY_PARTS, _parts)
        families = [_info(live, parts), *self._fresh(live, counters, parts, snap.links)]
        addresses = snap.memo(NETWORK_ADDRESSES, _addresses)
        return families + list(addresses) + self._leaks(snap, live)

    def _fresh(
        self,
        live: list[overlay.Namespace],
        counters: OverlayCounters,
        parts: dict[int, Parts],
        host_links: dict[int, model.Link],
    ) -> list[Family]:
        fams = {
            suffix: Family(f"dockernet_overlay_vxlan_{suffix}_total", "counter", text)
            for suffix, _column, text in VXLAN_COUNTERS
        }
        endpoints = Family(
            "dockernet_overlay_endpoints",
            "gauge",
            "Local endpoints of the overlay: veths on br0 in its namespace (containers, and Swarm's "
            "lb_ and ingress sandboxes).",
        )
        mtu = Family("dockernet_overlay_mtu_bytes", "gauge", "MTU of the overlay's VXLAN device.")
        read = []  # (namespace, its parts, its VXLAN device) of those not gone since the snapshot
        for ns in live:
            rows = counters.get(ns.nsid)
            if rows is not None:
                these = parts[ns.nsid]
                endpoints.add(these.label_set, _endpoints(these, rows.keys()))
                if these.vxlan is not None:
                    _vxlan(these.label_set, these.vxlan, rows, mtu, fams)
                    read.append((ns, these, these.vxlan))
        return [mtu, endpoints, *fams.values(), *self._peers(self._fdb(read), host_links)]

    def _fdb(self, read: list[tuple[overlay.Namespace, Parts, model.Link]]) -> dict[str, list[str]]:
        """The peers of each overlay (network -> addresses) whose namespace was entered."""
        found = self.sockets.fdb_destinations_of(
            [(ns.path, ns.inode, vxlan.ifindex) for ns, _parts, vxlan in read]
        )
        return {
            these.network: sorted(peers)
            for (_ns, these, _vxlan), peers in zip(read, found, strict=True)
            if peers is not None
        }

    def _peers(self, found: dict[str, list[str]], host_links: dict[int, model.Link]) -> list:
        """The peers of each overlay, and the underlay's MTU towards each: one route lookup per
        address, however many overlays it serves."""
        peers = Family(
            "dockernet_overlay_peers",
            "gauge",
            "Remote VTEPs (other nodes) in the VXLAN forwarding database of the overlay.",
        )
        peer_info = Family(
            "dockernet_overlay_peer_info",
            "gauge",
            "Each remote VTEP of the overlay: the other node's underlay address; value is always 1.",
        )
        underlay = Family(
            "dockernet_overlay_underlay_mtu_bytes",
            "gauge",
            "MTU of the host interface the route to each peer leaves by: VXLAN needs 50 bytes more "
            "than the overlay's MTU (IPv4).",
        )
        for network, addresses in found.items():
            peers.add(labels(network=network), len(addresses))
        routes = self._routes({a for addresses in found.values() for a in addresses}, host_links)
        for network, addresses in found.items():
            for peer in addresses:
                peer_info.add(labels(network=network, peer=peer), 1)
                oif = routes.get(peer)
                if oif is not None:
                    underlay.add(labels(network=network, peer=peer, interface=oif.name), oif.mtu)
        return [peers, peer_info, underlay]

    def _routes(self, addresses: set[str], host_links: dict[int, model.Link]) -> dict:
        """address -> the host link the route towards it leaves by (a socket only when asked)."""
        if not addresses:
            return {}
        netlink = self.netlink()
        try:
            oifs = {a: host_links.get(netlink.route_oif(a) or 0) for a in sorted(addresses)}
        finally:
            netlink.close()
        return {a: l for a, l in oifs.items() if l is not None}

    def _leaks(self, snap: Snapshot, live: list[overlay.Namespace]) -> list[Family]:
        now = self.clock()
        vxlan = snap.memo(VXLAN_LINKS, lambda s: [l for l in s.links.values() if l.kind == "vxlan"])
        found = overlay.leak_candidates(live, vxlan, snap.workloads_known)
        with self._lock:
            self._since = overlay.track(found, self._since, now)
            leaked = overlay.flagged(self._since, now, self.grace)
        each = Family(
            "dockernet_overlay_leaked_info",
            "gauge",
            "Each overlay namespace whose network Docker no longer lists, and each vx-* VXLAN "
            "device left in the host namespace, seen for the grace period; value is always 1.",
        )
        count = Family(
            "dockernet_overlay_leaked",
            "gauge",
            "Number of leaked overlay namespaces and vx-* devices, by kind.",
        )
        for kind, name in leaked:
            each.add(labels(kind=kind, name=name), 1)
        for kind in ("namespace", "vxlan_device"):
            count.add(labels(kind=kind), sum(1 for k, _ in leaked if k == kind))
        return [each, count]


def _vxlan(
    label_set: str,
    vxlan: model.Link,
    rows: dict[int, model.Counters],
    mtu: Family,
    fams: dict[str, Family],
) -> None:
    """One overlay's VXLAN device: its MTU and counters."""
    mtu.add(label_set, vxlan.mtu)
    row = rows.get(vxlan.ifindex)
    if row is not None:
        for suffix, column, _text in VXLAN_COUNTERS:
            fams[suffix].add(label_set, row[column])


def _parts(snap: Snapshot) -> dict[int, Parts]:
    out = {}
    for ns in snap.overlays:
        network = ns.network_name or ns.name
        out[ns.nsid] = Parts(
            network,
            labels(network=network),
            ns.vxlan,
            frozenset(l.ifindex for l in ns.endpoints),
            frozenset(l.ifindex for l in ns.links),
            _info_labels(ns),
        )
    return out


def _endpoints(these: Parts, listed: KeysView[int]) -> int:
    """The veths on br0 that the scrape's dump still lists, and the links it lists that the state
    has not read yet: after its namespace is made, libnetwork adds nothing but endpoints to an
    overlay (a Swarm sandbox's may come with no event the state follows)."""
    return len(these.endpoints & listed) + len(listed - these.known)


def is_bound(ns: overlay.Namespace) -> bool:
    """Whether the namespace's file still holds it: libnetwork removes a left network's namespace
    a minute later, with no event to tell."""
    try:
        return os.stat(ns.path).st_ino == ns.inode
    except OSError:
        return False


def _info(live: list[overlay.Namespace], parts: dict[int, Parts]) -> Family:
    info = Family(
        "dockernet_overlay_network_info",
        "gauge",
        "Each overlay network with a namespace on this node, one per subnet; value is always 1.",
    )
    for ns in live:
        info.samples.extend((ls, 1) for ls in parts[ns.nsid].info)
    return info


def _info_labels(ns: overlay.Namespace) -> tuple[str, ...]:
    """The namespace's dockernet_overlay_network_info label sets, one per subnet."""
    n = ns.network
    return tuple(
        labels(
            network=ns.network_name or ns.name,
            network_id=n.id if n else ns.network_prefix,
            vni=n.vni if n else "",
            subnet=subnet,
            gateway=gateway,
            encrypted=str(bool(n and n.encrypted)).lower(),
        )
        for subnet, gateway in (n.subnets if n else ()) or (("", ""),)
    )


def _addresses(snap: Snapshot) -> tuple[Family, Family]:
    """Every network's address use: changes only with the topology."""
    used = Family(
        "dockernet_network_addresses_used",
        "gauge",
        "Addresses in use in each subnet of each Docker network, as this node sees them: the "
        "gateway, its running containers' endpoints and, on an overlay, Swarm's own endpoints here.",
        static=True,
    )
    total = Family(
        "dockernet_network_addresses_capacity",
        "gauge",
        "Addresses Docker's IPAM can hand out in each subnet of each Docker network.",
        static=True,
    )
    docker = [n for n in snap.networks.values() if n.runtime == "docker"]
    containers = [v.container for v in snap.containers if v.container.runtime == "docker"]
    for u in overlay.address_use(docker, containers, _not_containers(snap, docker)):
        used.add(labels(network=u.network, subnet=u.subnet), u.used)
        total.add(labels(network=u.network, subnet=u.subnet), u.total)
    return used, total


def _not_containers(snap: Snapshot, networks: list) -> dict[str, int]:
    """Network id -> its endpoints here that are no container's: on an overlay, Swarm's sandboxes on
    br0; on a bridge, its ports that map to no container (Swarm's ingress sandbox on
    docker_gwbridge)."""
    out = {
        ns.network.id: sum(
            1 for l in ns.links if overlay.sandbox_at(snap.sandboxes, l.peer_netnsid)
        )
        for ns in snap.overlays
        if ns.network
    }
    for n in networks:
        if n.bridge:
            out[n.id] = sum(1 for v in snap.veths if v.bridge == n.bridge and v.container is None)
    return out


def overlay_counters(
    snap: Snapshot, sockets: NamespaceSockets
) -> tuple[list[overlay.Namespace], OverlayCounters]:
    """The overlay namespaces of the snapshot still bound to their files, and the counters of their
    links: read once per scrape for this collector and the containers collector. The sockets of
    namespaces gone are closed (a socket would keep its namespace alive)."""
    return per_scrape.once(OVERLAY_COUNTERS, lambda: _read_counters(snap, sockets))


def _read_counters(
    snap: Snapshot, sockets: NamespaceSockets
) -> tuple[list[overlay.Namespace], OverlayCounters]:
    live = [ns for ns in snap.overlays if is_bound(ns)]
    sockets.keep(ns.path for ns in live)
    out: OverlayCounters = {}
    for ns in live:
        try:
            out[ns.nsid] = sockets.link_stats(ns.path, ns.nsid, ns.inode)  # bound, as just seen
        except OSError:  # gone since the snapshot
            continue
    return live, out
