"""The overlay collector on the recorded single-node swarm, its fresh reads (links with counters by
namespace id, the forwarding database, routes) given by fakes; leaks and address use, pure."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, cast

import pytest
from test_overlay_recorded import recorded_state

from exporter.core import overlay, topology
from exporter.core.model import Link, Network
from exporter.metrics import per_scrape
from exporter.metrics.collectors import overlay as overlay_collector
from exporter.metrics.collectors.base import Context
from exporter.metrics.collectors.containers import ContainersCollector
from exporter.metrics.collectors.overlay import OverlayCollector
from exporter.metrics.exposition import render
from exporter.sources.kernel.procfs import Procfs

if TYPE_CHECKING:
    from exporter.sources.kernel.overlay import NamespaceSockets, OverlayNetlink

PEER = "198.18.250.2"


@pytest.fixture(autouse=True)
def recorded_files_bound(monkeypatch):
    """The recorded namespaces' files are not on this host: take them as still bound."""
    monkeypatch.setattr(overlay_collector, "is_bound", lambda _ns: True)


class FakeNetlink:
    def __init__(self, state, asked=None):
        self.state = state
        self.asked = [] if asked is None else asked

    def route_oif(self, address):
        self.asked.append(address)
        return next(l.ifindex for l in self.state.links.values() if l.kind == "bridge")

    def close(self):
        pass


class FakeSockets:
    """The overlay namespaces' links as the state read them, every one with the same counters."""

    def __init__(self, state=None):
        self.state = state
        self.asked: list = []
        self.counted: list[str] = []
        self.paths = {
            path: nsid for path, (_inode, nsid) in (state.netns_files if state else {}).items()
        }

    def fdb_destinations_of(self, devices):
        self.asked.extend(path for path, _inode, _ifindex in devices)
        return [{PEER, "0.0.0.0"} - {"0.0.0.0"} for _device in devices]

    def link_stats(self, path, _nsid, _inode=None):
        self.counted.append(path)
        return dict.fromkeys(self.state.netns_links[self.paths[path]], (10, 1, 0, 0, 20, 2, 0, 3))

    def keep(self, paths):
        list(paths)

    def close(self):
        pass


def collect(state, now=100.0, grace=60.0, collector=None):
    snap = topology.build(state)
    collector = collector or OverlayCollector(
        grace=grace,
        sockets=cast("NamespaceSockets", FakeSockets(state)),
        netlink=lambda: cast("OverlayNetlink", FakeNetlink(state)),
    )
    collector.clock = lambda: now  # the scrape's time
    return render(collector.collect(snap)), collector


def test_each_overlay_has_info_counters_endpoints_and_peers():
    text, _ = collect(recorded_state())
    assert 'dockernet_overlay_network_info{network="ov",network_id="' in text
    assert 'vni="4097",subnet="198.18.232.0/24",gateway="198.18.232.1",encrypted="false"} 1' in text
    assert 'dockernet_overlay_endpoints{network="ov"} 5' in text
    assert 'dockernet_overlay_endpoints{network="ingress"} 3' in text
    assert 'dockernet_overlay_vxlan_receive_bytes_total{network="ov"} 10' in text
    assert 'dockernet_overlay_vxlan_transmit_dropped_total{network="ov"} 3' in text
    assert 'dockernet_overlay_peers{network="ov"} 1' in text
    assert f'dockernet_overlay_peer_info{{network="ov",peer="{PEER}"}} 1' in text
    assert 'dockernet_overlay_mtu_bytes{network="ov"} 1450' in text
    assert f'dockernet_overlay_underlay_mtu_bytes{{network="ov",peer="{PEER}",interface=' in text


def test_address_use_counts_gateway_endpoints_and_swarms_sandboxes():
    text, _ = collect(recorded_state())
    # gateway, c1, c2, two tasks and the lb_ sandbox; on ingress, the ingress sandbox.
    assert 'dockernet_network_addresses_used{network="ov",subnet="198.18.232.0/24"} 6' in text
    assert 'dockernet_network_addresses_used{network="ingress",subnet="198.18.224.0/24"} 4' in text
    assert (
        'dockernet_network_addresses_used{network="docker_gwbridge",subnet="198.18.208.0/24"} 6'
        in text
    )
    assert 'dockernet_network_addresses_capacity{network="ov",subnet="198.18.232.0/24"} 254' in text


def test_a_namespace_whose_network_is_gone_is_flagged_after_the_grace_only():
    state = recorded_state()
    state.networks = {i: n for i, n in state.networks.items() if n.name != "ov"}
    text, collector = collect(state, now=100.0)
    assert 'dockernet_overlay_leaked{kind="namespace"} 0' in text
    text, _ = collect(state, now=159.0, collector=collector)
    assert 'dockernet_overlay_leaked{kind="namespace"} 0' in text
    text, _ = collect(state, now=160.0, collector=collector)
    assert 'dockernet_overlay_leaked{kind="namespace"} 1' in text
    assert 'dockernet_overlay_leaked_info{kind="namespace",name="1-' in text


def test_vxlan_devices_in_the_host_are_candidates_by_name():
    links = [
        Link(1, "vx-001001-abcde", kind="vxlan"),
        Link(2, "vxlan0", kind="vxlan"),
        Link(3, "vx-001001-abcde0", kind="vxlan"),
        Link(4, "vx-001001-abcdf", kind="bridge"),
    ]
    assert overlay.leak_candidates((), links, workloads_known=False) == [
        ("vxlan_device", "vx-001001-abcde")
    ]


def test_address_use_per_subnet_and_family():
    n = Network(
        "n" * 64,
        "dual",
        "bridge",
        subnets=(
            ("198.18.40.0/24", "198.18.40.1"),
            ("198.18.41.0/28", "198.18.41.1"),
            ("fd00::/64", ""),
        ),
    )
    from exporter.core.model import Endpoint, Workload

    c = Workload("c", "c", endpoints=(Endpoint("dual", n.id, ipv4="198.18.40.7", ipv6="fd00::7"),))
    use = overlay.address_use([n], [c], {n.id: 2})
    assert [(u.subnet, u.used, u.total) for u in use] == [
        ("198.18.40.0/24", 4, 254),  # gateway, c, and the two others in the first IPv4 subnet
        ("198.18.41.0/28", 1, 14),
        ("fd00::/64", 1, 2**64 - 1),
    ]


def test_a_recorded_namespace_file_elsewhere_is_no_overlay():
    state = recorded_state()
    state = dataclasses.replace(state, docker_netns_dir="/var/run/docker/netns")
    assert topology.build(state).overlays == ()


def test_overlay_interfaces_count_from_their_veth_on_br0_mirrored():
    """No /proc read: the veth in the overlay's namespace, from one counters dump per namespace;
    what it transmits, the container receives."""
    state = recorded_state()
    snap = topology.build(state)

    class Sockets(FakeSockets):
        def link_stats(self, path, _nsid, _inode=None):
            self.counted.append(path)
            links = self.state.netns_links[self.paths[path]]
            return {i: (100 + i, 1, 0, 0, 200 + i, 2, 0, 0) for i in links}

    sockets = Sockets(state)
    collector = ContainersCollector(
        Context(Procfs("/nonexistent")),
        link_stats=lambda ifindexes: {},
        sockets=cast("NamespaceSockets", sockets),
    )
    with per_scrape.scrape():
        text = render(collector.collect(snap))
    overlay_veths = {i.netns_veth for i in snap.interfaces if i.netns_veth}
    assert len(overlay_veths) == 6  # c1, c2, two tasks twice
    for veth in overlay_veths:
        labels = owner_labels(snap, veth)
        assert f"dockernet_container_receive_bytes_total{{{labels}}} {200 + veth[1]}" in text
        assert f"dockernet_container_transmit_bytes_total{{{labels}}} {100 + veth[1]}" in text
    assert sorted(sockets.counted) == sorted(ns.path for ns in snap.overlays)


def owner_labels(snap, veth):
    i = next(i for i in snap.interfaces if i.netns_veth == veth)
    return (
        f'container_id="{i.container.id}",container_name="{i.container.name}",'
        f'interface="{i.interface}"'
    )


def test_both_collectors_share_one_read_per_namespace_per_scrape():
    """The containers and the overlay collector in one scrape: each overlay namespace's counters
    read once; the next scrape reads again (counters are never kept across scrapes, though the
    snapshot is)."""
    state = recorded_state()
    snap = topology.build(state)
    sockets = FakeSockets(state)
    routes: list = []
    overlays = OverlayCollector(
        sockets=cast("NamespaceSockets", sockets),
        netlink=lambda: cast("OverlayNetlink", FakeNetlink(state, routes)),
    )
    containers = ContainersCollector(
        Context(Procfs("/nonexistent")),
        link_stats=lambda i: {},
        sockets=cast("NamespaceSockets", sockets),
    )
    namespaces = sorted(ns.path for ns in snap.overlays)
    assert len(namespaces) == 2  # ov and ingress
    for scrape in (1, 2):
        with per_scrape.scrape():
            texts = [render(c.collect(snap)) for c in (overlays, containers)]
        assert sorted(sockets.counted) == sorted(namespaces * scrape)
    assert 'dockernet_overlay_vxlan_receive_bytes_total{network="ov"} 10' in texts[0]
    assert 'dockernet_container_receive_bytes_total{container_id="' in texts[1]
    # The one peer of both overlays, looked up once per scrape.
    assert routes == [PEER, PEER]
    # Outside a scrape, each collector reads for itself.
    overlays.collect(snap)
    assert len(sockets.counted) == 3 * len(namespaces)


def test_a_namespace_gone_since_the_snapshot_has_no_fresh_figures():
    state = recorded_state()
    snap = topology.build(state)

    class Gone(FakeSockets):
        def link_stats(self, path, _nsid, _inode=None):
            raise FileNotFoundError(path)

    collector = OverlayCollector(
        sockets=cast("NamespaceSockets", Gone(state)),
        netlink=lambda: cast("OverlayNetlink", FakeNetlink(state)),
    )
    text = render(collector.collect(snap))
    assert 'dockernet_overlay_network_info{network="ov"' in text
    assert "dockernet_overlay_endpoints{" not in text and "dockernet_overlay_peers{" not in text


def test_endpoints_count_what_the_scrapes_dump_lists():
    """A veth on br0 gone since the state read the namespace no longer counts; a link the state
    has not read yet (a Swarm sandbox's endpoint, which comes with no event) counts."""
    state = recorded_state()
    snap = topology.build(state)
    ov = next(ns for ns in snap.overlays if ns.network_name == "ov")
    gone = ov.endpoints[0].ifindex

    class Changed(FakeSockets):
        def link_stats(self, path, _nsid, _inode=None):
            rows = super().link_stats(path, _nsid)
            if path == ov.path:
                del rows[gone]
                rows[999] = (1, 1, 0, 0, 1, 1, 0, 0)
            return rows

    collector = OverlayCollector(
        sockets=cast("NamespaceSockets", Changed(state)),
        netlink=lambda: cast("OverlayNetlink", FakeNetlink(state)),
    )
    text = render(collector.collect(snap))
    assert f'dockernet_overlay_endpoints{{network="ov"}} {len(ov.endpoints)}' in text
    assert len(ov.endpoints) == 5
