"""Orphan reasons, their precedence, the scope and the grace period, on
synthetic hosts (the recorded host has no orphan: checked too)."""

from __future__ import annotations

from collections.abc import Iterable

from recorded import recorded_state

from exporter.core import orphan_rules, topology
from exporter.core.model import Endpoint, HostState, Link, Network, Workload
from exporter.metrics.collectors.orphans import OrphansCollector
from exporter.metrics.exposition import render

# What HostState.netns_files holds: path -> (inode, nsid or None).
NetnsFiles = dict[str, tuple[int, int | None]]

DOCKER0 = Link(5, "docker0", kind="bridge")
OTHER_BR = Link(6, "dnx-br", kind="bridge")
BRIDGE_NET = Network(
    "n1", "bridge", "bridge", bridge="docker0", subnets=(("198.18.0.0/24", "198.18.0.1"),)
)
USER_NET = Network("n2", "backend", "bridge", bridge="br-n2")
MAC = "02:42:c6:12:00:02"


def host(
    *links: Link,
    containers: Iterable[Workload] = (),
    netns: dict[int, list[Link]] | None = None,
    files: NetnsFiles | None = None,
    docker_up: bool = True,
) -> HostState:
    return HostState(
        links={l.ifindex: l for l in (DOCKER0, OTHER_BR, Link(7, "br-n2", kind="bridge")) + links},
        containers={c.id: c for c in containers},
        netns_links={nsid: {l.ifindex: l for l in ls} for nsid, ls in (netns or {}).items()},
        networks={n.id: n for n in (BRIDGE_NET, USER_NET)},
        netns_files=files or {},
        host_netns_inode=1,
        runtimes_up={"docker": docker_up},
    )


def container(cid: str, nsid: int, network: Network = BRIDGE_NET, mac: str = MAC) -> Workload:
    return Workload(
        id=cid * 64,
        name=cid,
        pid=100,
        network_mode="bridge",
        netns_inode=1000 + nsid,
        nsid=nsid,
        endpoints=(Endpoint(network.name, network.id, mac=mac),),
    )


def veth(ifindex: int, name: str, peer: int, nsid: int | None = None, master: int = 0) -> Link:
    return Link(ifindex, name, kind="veth", master=master, peer_ifindex=peer, peer_netnsid=nsid)


def suspects(state: HostState) -> dict:
    return {s.link.name: (s.reason, s.runtime_blamed) for s in topology.build(state).suspects}


def test_recorded_host_has_no_suspect():
    assert topology.build(recorded_state()).suspects == ()


def test_owned_veth_is_no_suspect():
    a = container("a", nsid=0)
    state = host(
        veth(10, "vethaaaaaaa", 2, nsid=0, master=5),
        containers=[a],
        netns={0: [Link(2, "eth0", kind="veth", mac=MAC)]},
    )
    assert suspects(state) == {}


def test_pair_left_in_the_host_is_peer_in_host_on_both_ends():
    # Plugged into docker0: Docker created it (a crash before moving the peer).
    state = host(veth(10, "dnx-a", 11, master=5), veth(11, "dnx-b", 10))
    assert suspects(state) == {"dnx-a": ("peer_in_host", True), "dnx-b": ("peer_in_host", True)}


def test_unplugged_pair_is_docker_scope_only_with_docker_names():
    assert suspects(host(veth(10, "veth1234abc", 11), veth(11, "vethabcdef0", 10))) == {
        "veth1234abc": ("peer_in_host", True),
        "vethabcdef0": ("peer_in_host", True),
    }
    assert suspects(host(veth(10, "dnx-a", 11), veth(11, "vethabcdef0", 10))) == {
        "dnx-a": ("peer_in_host", False),
        "vethabcdef0": ("peer_in_host", False),
    }


def test_pair_on_a_non_docker_bridge_is_out_of_docker_scope():
    state = host(veth(10, "veth1234abc", 11, master=6), veth(11, "vethabcdef0", 10))
    assert suspects(state) == {
        "veth1234abc": ("peer_in_host", False),
        "vethabcdef0": ("peer_in_host", False),
    }


def test_namespace_without_container():
    on_docker0 = veth(10, "vethaaaaaaa", 2, nsid=3, master=5)
    assert suspects(host(on_docker0)) == {"vethaaaaaaa": ("netns_without_container", True)}
    # Docker's own namespace file makes an unplugged one Docker's.
    loose = veth(10, "vethaaaaaaa", 2, nsid=3)
    assert suspects(host(loose)) == {"vethaaaaaaa": ("netns_without_container", False)}
    docker_file: NetnsFiles = {"/var/run/docker/netns/0123456789ab": (4026532999, 3)}
    assert suspects(host(loose, files=docker_file)) == {
        "vethaaaaaaa": ("netns_without_container", True)
    }


def test_dockers_own_namespaces_without_container_are_no_suspects():
    # Swarm's ingress sandbox has a veth on docker_gwbridge and never a container.
    files: NetnsFiles = {
        "/var/run/docker/netns/ingress_sbox": (4026532997, 3),
        "/var/run/docker/netns/lb_x1y2z3": (4026532996, 4),
    }
    state = host(
        veth(10, "vethaaaaaaa", 2, nsid=3, master=5),
        veth(11, "vethbbbbbbb", 2, nsid=4, master=5),
        files=files,
    )
    assert suspects(state) == {}


def test_namespace_of_ip_netns_add_is_out_of_docker_scope_even_on_docker0():
    files: NetnsFiles = {"/var/run/netns/dnx-ns": (4026532998, 3)}
    state = host(veth(10, "dnx-h", 2, nsid=3, master=5), files=files)
    assert suspects(state) == {"dnx-h": ("netns_without_container", False)}


def test_port_of_a_non_docker_bridge_is_out_of_docker_scope():
    state = host(
        veth(10, "dnx-h", 2, nsid=3, master=6), files={"/var/run/docker/netns/0123456789ab": (1, 3)}
    )
    assert suspects(state) == {"dnx-h": ("netns_without_container", False)}


def test_no_endpoint_when_the_mac_or_the_network_is_not_dockers():
    a = container("a", nsid=0)
    handmade = veth(12, "dnx-extra", 7, nsid=0, master=5)
    netns = {
        0: [
            Link(2, "eth0", kind="veth", mac=MAC),
            Link(7, "dnx-in", kind="veth", mac="aa:bb:cc:00:00:01"),
        ]
    }
    assert suspects(
        host(veth(10, "vethaaaaaaa", 2, nsid=0, master=5), handmade, containers=[a], netns=netns)
    ) == {"dnx-extra": ("no_endpoint", True)}
    b = container("b", nsid=1, network=USER_NET)  # on backend only, but plugged into docker0
    state = host(
        veth(11, "vethbbbbbbb", 2, nsid=1, master=5),
        containers=[b],
        netns={1: [Link(2, "eth0", kind="veth", mac=MAC)]},
    )
    assert suspects(state) == {"vethbbbbbbb": ("no_endpoint", True)}


def test_endpoint_of_a_second_container_in_the_namespace_counts():
    owner = container("p", nsid=0, network=USER_NET)
    member = container("q", nsid=0)
    state = host(
        veth(10, "vethaaaaaaa", 2, nsid=0, master=5),
        containers=[owner, member],
        netns={0: [Link(2, "eth0", kind="veth", mac=MAC)]},
    )
    assert suspects(state) == {}


def test_precedence_follows_the_order_of_reasons():
    assert orphan_rules.REASONS == ("peer_in_host", "netns_without_container", "no_endpoint")
    # A Docker bridge port in a namespace no container owns has no endpoint either: the earlier reason wins.
    assert (
        suspects(host(veth(10, "vethaaaaaaa", 2, nsid=3, master=5)))["vethaaaaaaa"][0]
        == "netns_without_container"
    )
    # With no container at all a pair left in the host is still peer_in_host.
    assert (
        suspects(host(veth(10, "dnx-a", 11, master=5), veth(11, "dnx-b", 10)))["dnx-a"][0]
        == "peer_in_host"
    )


def test_without_docker_only_pairs_left_in_the_host_are_suspects():
    state = host(
        veth(10, "dnx-a", 11, master=5),
        veth(11, "dnx-b", 10),
        veth(12, "vethaaaaaaa", 2, nsid=3, master=5),
        docker_up=False,
    )
    assert suspects(state) == {"dnx-a": ("peer_in_host", True), "dnx-b": ("peer_in_host", True)}


def _suspects_of(state: HostState) -> tuple[orphan_rules.Suspect, ...]:
    return topology.build(state).suspects


def test_grace_counts_from_when_the_veth_was_first_a_suspect():
    found = _suspects_of(host(veth(10, "vethaaaaaaa", 2, nsid=3, master=5)))
    since = orphan_rules.track(found, {}, now=100.0)
    assert orphan_rules.flagged(found, since, now=129.9, grace=30) == []
    (o,) = orphan_rules.flagged(
        found, orphan_rules.track(found, since, now=125.0), now=130.0, grace=30
    )
    assert (o.suspect.link.name, o.age) == ("vethaaaaaaa", 30.0)
    # Once owned (the container's start event), it is forgotten; a new suspicion starts afresh.
    assert orphan_rules.track((), since, now=131.0) == {}
    assert orphan_rules.track(found, {}, now=140.0) == {10: 140.0}


def test_scope_all_keeps_what_docker_scope_drops():
    found = _suspects_of(host(veth(10, "dnx-h", 2, nsid=3, master=6)))
    since = orphan_rules.track(found, {}, now=0.0)
    assert orphan_rules.flagged(found, since, now=60.0, scope="docker", grace=30) == []
    assert [
        o.suspect.reason
        for o in orphan_rules.flagged(found, since, now=60.0, scope="all", grace=30)
    ] == ["netns_without_container"]


def test_collector_renders_each_orphan_and_every_reason_count():
    snap = topology.build(host(veth(10, "dnx-a", 11, master=5), veth(11, "dnx-b", 10)), now=0.0)
    assert snap.suspect_since == {10: 0.0, 11: 0.0}
    clock = [10.0]
    collector = OrphansCollector(grace=30.0, clock=lambda: clock[0])
    text = render(collector.collect(snap))
    assert "dockernet_veth_orphaned{" not in text
    for reason in orphan_rules.REASONS:
        assert f'dockernet_orphaned_veths{{reason="{reason}"}} 0\n' in text
    clock[0] = 30.0  # no event in between: the scrape alone turns the suspects into orphans
    text = render(collector.collect(snap))
    assert (
        'dockernet_veth_orphaned{veth="dnx-a",bridge="docker0",reason="peer_in_host"} 1\n' in text
    )
    assert 'dockernet_veth_orphaned{veth="dnx-b",bridge="",reason="peer_in_host"} 1\n' in text
    assert 'dockernet_orphaned_veths{reason="peer_in_host"} 2\n' in text
    assert 'dockernet_orphaned_veths{reason="no_endpoint"} 0\n' in text


def test_netns_kinds_from_files():
    files: NetnsFiles = {
        "/var/run/docker/netns/0123456789ab": (1, 4),
        "/var/run/netns/x": (2, 5),
        "/var/run/netns/y": (3, None),
        "/var/run/netns/web": (1, 4),  # `netns visible` links a Docker namespace: still Docker's
        "/var/run/docker/netns/ingress_sbox": (6, 6),
        "/var/run/docker/netns/default": (7, 7),
        # CRI pods': containerd's cni-<uuid>, CRI-O's bare uuid (pinns); not a uuid-like name.
        "/var/run/netns/cni-5e1e4e4c-43a8-6b7b-ae7e-d1b2fd3a3c51": (8, 8),
        "/var/run/netns/0f3c7c66-2b1e-4b8a-9d55-1b0b5d3b9e2a": (9, 9),
        "/var/run/netns/cni-not-a-uuid": (10, 10),
    }
    assert orphan_rules.netns_kinds(files) == {
        4: "docker",
        5: "named",
        6: "docker_internal",
        7: "docker_internal",
        8: "cni",
        9: "cni",
        10: "named",
    }
