"""Join cases that a single recorded host does not show."""

from __future__ import annotations

from collections.abc import Iterable

from exporter.core import topology
from exporter.core.model import Endpoint, HostState, Link, Network, Workload


def host_with(
    *links: Link,
    containers: Iterable[Workload] = (),
    netns: dict[int, list[Link]] | None = None,
    networks: Iterable[Network] = (),
) -> HostState:
    return HostState(
        links={l.ifindex: l for l in links},
        containers={c.id: c for c in containers},
        netns_links={nsid: {l.ifindex: l for l in ls} for nsid, ls in (netns or {}).items()},
        networks={n.id: n for n in networks},
        host_netns_inode=1,
        runtimes_up={"docker": True},
    )


def container(
    cid: str, nsid: int, inode: int, mode: str = "bridge", started: str = "2026-01-01"
) -> Workload:
    return Workload(
        id=cid * 64,
        name=cid,
        pid=100,
        network_mode=mode,
        netns_inode=inode,
        nsid=nsid,
        started_at=started,
        endpoints=(Endpoint("bridge", "n1", mac="02:42:c6:12:00:02"),),
    )


def test_peer_ifindex_that_collides_with_a_host_ifindex():
    # The peer is ifindex 2 in the container's namespace; the host has its own ifindex 2 (eth0).
    host_eth0 = Link(2, "eth0")
    bridge = Link(5, "docker0", kind="bridge")
    veth = Link(7, "vethaaa", kind="veth", master=5, peer_ifindex=2, peer_netnsid=0)
    a = container("a", nsid=0, inode=1001)
    snap = topology.build(
        host_with(
            host_eth0,
            bridge,
            veth,
            containers=[a],
            netns={
                0: [Link(1, "lo"), Link(2, "eth0", kind="veth", peer_ifindex=7, peer_netnsid=0)]
            },
        )
    )
    (v,) = snap.veths
    assert v.container is not None
    assert (v.container.id, v.interface, v.bridge) == (a.id, "eth0", "docker0")
    (i,) = snap.interfaces
    assert (i.ifindex, i.veth) == (2, "vethaaa")


def test_same_peer_ifindex_in_two_namespaces_is_told_apart_by_nsid():
    a, b = container("a", nsid=0, inode=1001), container("b", nsid=1, inode=1002)
    eth0 = Link(2, "eth0", kind="veth")
    snap = topology.build(
        host_with(
            Link(10, "veth-a", kind="veth", peer_ifindex=2, peer_netnsid=0),
            Link(11, "veth-b", kind="veth", peer_ifindex=2, peer_netnsid=1),
            containers=[a, b],
            netns={0: [eth0], 1: [eth0]},
        )
    )
    assert {(v.link.name, v.container and v.container.name) for v in snap.veths} == {
        ("veth-a", "a"),
        ("veth-b", "b"),
    }


def test_namespace_shared_by_two_containers_without_container_mode():
    # Two containers in one namespace (as a pod's containers are): the earlier one owns it.
    first = container("p", nsid=3, inode=2000, started="2026-01-01T00:00:00Z")
    second = container("q", nsid=3, inode=2000, started="2026-01-01T00:00:05Z")
    snap = topology.build(
        host_with(
            Link(20, "veth-p", kind="veth", peer_ifindex=4, peer_netnsid=3),
            containers=[second, first],
            netns={3: [Link(4, "eth0", kind="veth")]},
        )
    )
    modes = {v.container.name: v.network_mode for v in snap.containers}
    assert modes == {"p": "bridge", "q": f"container:{first.id}"}
    assert [(i.container.name, i.interface) for i in snap.interfaces] == [("p", "eth0")]


def test_veth_whose_namespace_has_no_container_is_unmapped():
    snap = topology.build(
        host_with(Link(30, "veth-x", kind="veth", peer_ifindex=2, peer_netnsid=9))
    )
    (v,) = snap.veths
    assert v.container is None and v.interface == ""


def test_veth_pair_with_both_ends_in_the_host():
    snap = topology.build(
        host_with(
            Link(40, "vx0", kind="veth", peer_ifindex=41),
            Link(41, "vx1", kind="veth", peer_ifindex=40),
        )
    )
    assert [v.container for v in snap.veths] == [None, None]


def test_macvlan_interface_is_counted_inside_the_namespace():
    c = container("m", nsid=5, inode=3000, mode="mvnet")
    c = Workload(**{**c.__dict__, "endpoints": (Endpoint("mvnet", "n9", mac="02:42:c6:13:fa:02"),)})
    snap = topology.build(
        host_with(
            Link(50, "dnxmv0", kind="bridge"),
            containers=[c],
            netns={
                5: [
                    Link(1, "lo"),
                    Link(
                        2,
                        "eth0",
                        kind="macvlan",
                        mac="02:42:c6:13:fa:02",
                        peer_ifindex=50,
                        peer_netnsid=0,
                    ),
                ]
            },
            networks=[Network("n9", "mvnet", "macvlan")],
        )
    )
    (i,) = snap.interfaces
    assert (i.container.name, i.interface, i.kind, i.veth, i.network) == (
        "m",
        "eth0",
        "macvlan",
        "",
        "mvnet",
    )


def test_network_of_a_veth_on_a_non_docker_bridge_comes_from_the_endpoint_mac():
    a = container("a", nsid=0, inode=1001)
    snap = topology.build(
        host_with(
            Link(60, "mybr", kind="bridge"),
            Link(61, "veth-a", kind="veth", master=60, peer_ifindex=2, peer_netnsid=0),
            containers=[a],
            netns={0: [Link(2, "eth0", kind="veth", mac="02:42:c6:12:00:02")]},
        )
    )
    (v,) = snap.veths
    assert (v.bridge, v.network) == ("mybr", "bridge")
