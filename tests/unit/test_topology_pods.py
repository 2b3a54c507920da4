"""Pods in the join: a sandbox is a workload with its namespace file; a not-ready sandbox whose
namespace id the kernel has given again loses it to the ready workload that now holds it; a
hostNetwork pod has no interface; orphans of cni-* namespaces are the runtime's."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

from test_orphan_classification import NetnsFiles

from exporter.commands.topology import tree
from exporter.core import orphan_rules, topology
from exporter.core.model import HostState, Link, PodMember, Workload
from exporter.views import document as topology_view
from exporter.views import render as topology_page

BRIDGE = Link(5, "cni0", kind="bridge")


def pod(name: str, nsid: int | None, inode: int, ready: bool = True, mode: str = "pod") -> Workload:
    return Workload(
        id=name * 8,
        name=f"shop_{name}",
        runtime="containerd",
        pid=100 if ready else 0,
        netns_path=f"/var/run/netns/cni-{name}",
        network_mode=mode,
        netns_inode=inode,
        nsid=nsid,
        pod_namespace="shop",
        pod_name=name,
        ready=ready,
        members=(PodMember("c1", "app", "busybox"),) if ready else (),
    )


def state(
    *containers: Workload,
    links: Iterable[Link] = (),
    netns: dict[int, list[Link]] | None = None,
    files: NetnsFiles | None = None,
) -> HostState:
    return HostState(
        links={l.ifindex: l for l in (BRIDGE, *links)},
        containers={c.id: c for c in containers},
        netns_links={n: {l.ifindex: l for l in ls} for n, ls in (netns or {}).items()},
        netns_files=files or {},
        host_netns_inode=1,
        runtimes_up={"containerd": True},
    )


def veth(ifindex: int, nsid: int) -> Link:
    return Link(ifindex, f"veth{ifindex}", kind="veth", master=5, peer_ifindex=2, peer_netnsid=nsid)


EOF0 = Link(2, "eth0", kind="veth", peer_ifindex=7, peer_netnsid=0)


def test_a_ready_pod_wins_a_namespace_id_over_a_stale_not_ready_sandbox():
    stale = pod("aaa", nsid=0, inode=1001, ready=False)  # stopped: its namespace is gone
    fresh = pod("zzz", nsid=0, inode=1002)  # the kernel gave the id again
    for order in ((stale, fresh), (fresh, stale)):
        snap = topology.build(state(*order, links=[veth(7, 0)], netns={0: [EOF0]}))
        (v,) = snap.veths
        assert v.container is not None and v.container.pod_name == "zzz"


def test_host_network_pod_has_no_interface():
    host = pod("host", nsid=None, inode=1, mode="host")
    snap = topology.build(state(host))
    assert not snap.interfaces and not snap.veths
    (view,) = snap.containers
    assert view.network_mode == "host"


def test_not_ready_sandbox_keeps_its_veth_from_being_an_orphan():
    dead = pod("dead", nsid=0, inode=1001, ready=False)
    files: NetnsFiles = {"/var/run/netns/cni-dead": (1001, 0)}
    snap = topology.build(state(dead, links=[veth(7, 0)], netns={0: [EOF0]}, files=files))
    assert not snap.suspects


def test_leaked_cni_namespace_is_the_runtime_s_orphan():
    files: NetnsFiles = {"/var/run/netns/cni-0f0e8b0c-1111-2222-3333-444455556666": (1001, 3)}
    snap = topology.build(state(links=[veth(7, 3)], files=files))
    (s,) = snap.suspects
    assert (s.reason, s.runtime_blamed) == ("netns_without_container", True)
    named: NetnsFiles = {"/var/run/netns/mine": (1001, 3)}  # `ip netns add`: another tool's
    (s,) = topology.build(state(links=[veth(7, 3)], files=named)).suspects
    assert not s.runtime_blamed
    assert orphan_rules.netns_kinds(files) == {3: "cni"}


def test_topology_draws_a_pod_as_one_namespace_of_its_containers():
    members = (PodMember("c1", "app", "busybox"), PodMember("c2", "side", "pause"))
    web = dataclasses.replace(pod("web", nsid=0, inode=1001), members=members)
    host = pod("node", nsid=None, inode=1, mode="host")
    snap = topology.build(state(web, host, links=[veth(7, 0)], netns={0: [EOF0]}))
    doc = topology_view.document(snap, 0.0)
    (ns,) = doc["namespaces"]
    assert ns["pod"] == {"namespace": "shop", "name": "web", "uid": "", "sandbox_id": web.id}
    assert ns["shared"] and [c["name"] for c in ns["containers"]] == ["app", "side"]
    assert {c["id"] for c in ns["containers"]} == {"c1", "c2"}
    assert all(c["pod"] == ns["pod"] for c in ns["containers"])
    (h,) = doc["host_network"]
    assert (h["name"], h["pod"]["name"]) == ("app", "node")
    page = topology_page.render_main(doc)
    assert page.count('<span class="pod" title="pod">shop/web</span>') == 2
    assert "app (busybox) pod=shop/web" in tree(doc)
