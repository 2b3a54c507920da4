"""build(state, previous) reuses the verdicts of unchanged veths: after any sequence of changes it must
give exactly what a build from scratch gives, and keep the objects of the veths nothing touched."""

from __future__ import annotations

import dataclasses
import random

from recorded import recorded_state

from exporter.core import topology
from exporter.core.model import HostState, Link, Network

STEPS = 400


def with_orphans(state: HostState) -> HostState:
    """The recorded host plus a pair left in the host and a veth into a namespace nobody owns."""
    bridge = next(l for l in state.links.values() if l.name == "docker0")
    top = max(state.links) + 1
    for link in (
        Link(top, "vethaaaaaaa", kind="veth", master=bridge.ifindex, peer_ifindex=top + 1),
        Link(top + 1, "vethbbbbbbb", kind="veth", peer_ifindex=top),
        Link(
            top + 2,
            "vethccccccc",
            kind="veth",
            master=bridge.ifindex,
            peer_ifindex=2,
            peer_netnsid=77,
        ),
    ):
        state.links[link.ifindex] = link
    state.netns_files["/var/run/docker/netns/0123456789ab"] = (9999, 77)
    return state


def veths_of(state: HostState) -> list[Link]:
    return [l for l in state.links.values() if l.kind == "veth"]


def change_something(state: HostState, rng: random.Random, spare: dict) -> None:
    """One change of the kind events make, picked at random; what goes away waits in `spare`."""
    kind = rng.choice(
        [
            "container_gone",
            "container_back",
            "renamed",
            "link_flaps",
            "veth_gone",
            "veth_back",
            "port_moves",
            "bridge_renamed",
            "netns_relisted",
            "docker_down",
            "network_gone",
            "netns_file_gone",
            "nothing",
        ]
    )
    if kind == "container_gone" and state.containers:
        c = state.containers.pop(rng.choice(sorted(state.containers)))
        spare["containers"][c.id] = c
    elif kind == "container_back" and spare["containers"]:
        c = spare["containers"].pop(rng.choice(sorted(spare["containers"])))
        state.containers[c.id] = c
    elif kind == "renamed" and state.containers:
        cid = rng.choice(sorted(state.containers))
        state.containers[cid] = dataclasses.replace(
            state.containers[cid], name=f"renamed-{rng.random():.6f}"
        )
    elif kind == "link_flaps" and veths_of(state):
        link = rng.choice(veths_of(state))
        state.links[link.ifindex] = dataclasses.replace(link, operstate=rng.choice(["up", "down"]))
    elif kind == "veth_gone" and len(veths_of(state)) > 2:
        link = rng.choice(veths_of(state))
        spare["links"][link.ifindex] = state.links.pop(link.ifindex)
    elif kind == "veth_back" and spare["links"]:
        link = spare["links"].pop(rng.choice(sorted(spare["links"])))
        state.links[link.ifindex] = link
    elif kind == "port_moves" and veths_of(state):
        link = rng.choice(veths_of(state))
        bridges = [l.ifindex for l in state.links.values() if l.kind == "bridge"] + [0]
        state.links[link.ifindex] = dataclasses.replace(link, master=rng.choice(bridges))
    elif kind == "bridge_renamed":
        bridge = rng.choice([l for l in state.links.values() if l.kind == "bridge"])
        state.links[bridge.ifindex] = dataclasses.replace(
            bridge, name=rng.choice(["docker0", "br-x", bridge.name])
        )
    elif kind == "netns_relisted" and state.netns_links:
        nsid = rng.choice(sorted(state.netns_links))
        state.netns_links[nsid] = {
            i: dataclasses.replace(l, mac=rng.choice([l.mac, "02:00:00:00:00:01"]))
            for i, l in state.netns_links[nsid].items()
        }
    elif kind == "docker_down":
        state.runtimes_up["docker"] = not state.runtimes_up.get("docker")
    elif kind == "network_gone" and spare["networks"]:
        net = spare["networks"].pop()
        state.networks[net.id] = net
    elif kind == "network_gone" and state.networks:
        net = state.networks.pop(rng.choice(sorted(state.networks)))
        spare["networks"].append(net)
        if rng.random() < 0.5:
            state.networks[net.id] = dataclasses.replace(net, bridge="br-x")
    elif kind == "netns_file_gone" and state.netns_files:
        path = rng.choice(sorted(state.netns_files))
        inode, file_nsid = state.netns_files.pop(path)
        state.netns_files[path.replace("/docker/", "/") if rng.random() < 0.5 else path] = (
            inode,
            file_nsid,
        )


def assert_same(incremental: topology.Snapshot, scratch: topology.Snapshot) -> None:
    assert incremental.veths == scratch.veths
    assert incremental.suspects == scratch.suspects
    assert incremental.interfaces == scratch.interfaces
    assert incremental.containers == scratch.containers


def test_incremental_builds_equal_builds_from_scratch():
    rng = random.Random(20261128)
    state = with_orphans(recorded_state())
    spare: dict = {"containers": {}, "links": {}, "networks": []}
    snap = topology.build(state)
    seen_suspects = set()
    for _ in range(STEPS):
        change_something(state, rng, spare)
        incremental = topology.build(state, snap)
        assert_same(incremental, topology.build(state))
        seen_suspects |= {s.reason for s in incremental.suspects}
        snap = incremental
    # The walk went through every kind of verdict, so each was checked against a fresh one.
    assert seen_suspects == {"peer_in_host", "netns_without_container", "no_endpoint"}


def test_unchanged_veths_keep_their_objects_and_a_changed_one_does_not():
    state = with_orphans(recorded_state())
    before = topology.build(state)
    changed = next(v.link for v in before.veths if v.container is not None)
    state.links[changed.ifindex] = dataclasses.replace(changed, operstate="down")
    after = topology.build(state, before)
    assert len(after.veths) == len(before.veths) > 3
    for old, new in zip(before.veths, after.veths, strict=False):
        assert (new is old) == (old.link.ifindex != changed.ifindex)


def test_a_change_of_dockers_networks_or_reachability_judges_every_veth_again():
    state = with_orphans(recorded_state())
    before = topology.build(state)
    state.networks = {
        **state.networks,
        "extra": Network("extra", "extra", "bridge", bridge="br-extra"),
    }
    after = topology.build(state, before)
    assert not any(new is old for old, new in zip(before.veths, after.veths, strict=False))
    assert_same(after, topology.build(state))
