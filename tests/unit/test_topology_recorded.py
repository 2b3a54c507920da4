"""The join on a recorded host: t1 on the default bridge, t2 on a user network
and the default bridge, t3 with --network none, t4 in t1's namespace, t5 with
--network host. Expectations come from `ip -d link` and `docker inspect` as
they were when the fixtures were recorded (see tests/fixtures/record.py)."""

from __future__ import annotations

from recorded import by_name, recorded_state

from exporter.core import topology

IDS = {name: doc["Id"] for name, doc in by_name().items()}


def snapshot():
    return topology.build(recorded_state())


def test_every_veth_maps_to_its_container_interface():
    rows = {
        (v.link.name, v.container.name if v.container else "", v.interface, v.bridge, v.network)
        for v in snapshot().veths
    }
    assert rows == {
        ("vethcaaf5d3", "t1", "eth0", "docker0", "bridge"),
        ("veth52fcfaa", "t2", "eth0", "br-b968fc8dede5", "tnet"),
        ("veth4364321", "t2", "eth1", "docker0", "bridge"),
    }


def test_network_modes():
    modes = {v.container.name: v.network_mode for v in snapshot().containers}
    assert modes == {
        "t1": "bridge",
        "t2": "tnet",
        "t3": "none",
        "t4": f"container:{IDS['t1']}",
        "t5": "host",
    }


def test_shared_namespace_is_counted_once_under_its_owner():
    interfaces = [(i.container.name, i.interface) for i in snapshot().interfaces]
    assert interfaces == [("t1", "eth0"), ("t2", "eth0"), ("t2", "eth1")]


def test_container_side_ifindex_is_the_veth_peer():
    snap = snapshot()
    for i in snap.interfaces:
        assert snap.links[i.veth_ifindex].peer_ifindex == i.ifindex


def test_docker_unreachable_leaves_veths_unmapped():
    state = recorded_state()
    state.containers.clear()
    state.runtimes_up["docker"] = False
    snap = topology.build(state)
    assert len(snap.veths) == 3
    assert all(v.container is None and v.interface == "" for v in snap.veths)
    assert snap.interfaces == () and not snap.workloads_known
