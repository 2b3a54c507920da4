"""A namespace id given again: the kernel frees a namespace's id with the namespace and gives it to
the next one. A stopped sandbox that its runtime still lists (in poll mode, until the next poll
and look-up) held the id; the veth of the next pod's namespace, announced with that id before
its runtime was asked about the new pod, must not bring the stopped pod back. Forced here on the
state loop's own path (StateLoader.apply_link, then the join), without root."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, cast

from exporter.core import topology
from exporter.core.model import HostState, Link, Workload
from exporter.sources.kernel.procfs import Procfs
from exporter.state.loader import StateLoader

if TYPE_CHECKING:
    from exporter.sources.kernel.netlink import Netlink

BRIDGE = Link(5, "cni0", kind="bridge")
EOF0 = Link(3, "eth0", kind="veth", peer_ifindex=40, peer_netnsid=0)
NSID = 7


def stopped_pod(netns_path: str, inode: int) -> Workload:
    """A sandbox whose pause process exited (not ready, no pid), found in the namespace whose file
    was at `netns_path` with that inode and id NSID."""
    return Workload(
        id="a" * 64,
        name="shop_old",
        runtime="containerd",
        netns_path=netns_path,
        network_mode="pod",
        netns_inode=inode,
        nsid=NSID,
        pod_namespace="shop",
        pod_name="old",
        ready=False,
    )


def reader(tmp_path: Path) -> StateLoader:
    """The state loop's reader, its namespace directories empty ones of the test's own."""
    loader = StateLoader(cast("Netlink", None), (), Procfs())
    loader.netns_dirs = (str(tmp_path / "docker"), str(tmp_path / "netns"))
    return loader


def state_with(pod: Workload) -> HostState:
    """The stopped pod with its namespace's links as last read; its own veth already deleted."""
    return HostState(
        links={5: BRIDGE},
        containers={pod.id: pod},
        netns_links={NSID: {3: EOF0}},
        host_netns_inode=1,
        runtimes_up={"containerd": True},
    )


def next_pods_veth() -> Link:
    """The host end of the next pod's pair: its eth0 has the same index in a namespace of its own,
    which the kernel gave the freed id."""
    return Link(41, "vethnext", kind="veth", master=5, peer_ifindex=3, peer_netnsid=NSID)


def owners(state: HostState) -> dict[str, str]:
    snap = topology.build(state)
    return {v.link.name: v.container.pod_name if v.container else "" for v in snap.veths}


def test_a_stopped_pod_whose_namespace_is_gone_does_not_own_the_veth_of_the_next_one(tmp_path):
    gone = tmp_path / "netns" / "cni-old"  # removed by StopPodSandbox: never made here
    loader, state = reader(tmp_path), state_with(stopped_pod(str(gone), inode=4242))
    loader.apply_link(state, "add", next_pods_veth())
    assert owners(state) == {"vethnext": ""}  # nobody's until the next pod is looked up
    assert not [i for i in topology.build(state).interfaces if i.container.pod_name == "old"]
    assert state.containers["a" * 64].nsid is None and NSID not in state.netns_links


def test_a_stopped_pod_whose_namespace_lives_keeps_its_veth(tmp_path):
    """Its pause process died, its namespace file still holds the namespace: the id is still its
    own (a veth made in it, or its own veth announced again, stays the pod's)."""
    held = tmp_path / "netns" / "cni-old"
    held.parent.mkdir()
    held.write_text("")
    loader = reader(tmp_path)
    state = state_with(stopped_pod(str(held), inode=os.stat(held).st_ino))
    loader.apply_link(state, "add", next_pods_veth())
    assert owners(state) == {"vethnext": "old"}
    assert state.containers["a" * 64].nsid == NSID
