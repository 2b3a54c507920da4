"""The host that the golden /metrics test renders, and the kernel reads it is fed.

The recorded Docker host (tests/fixtures/recorded, see recorded.py: t1..t5, three veths, docker0
and a user network), plus:

- the two containers with published ports and their network recorded with the firewall rules of
  tests/fixtures/nat (the same host: its rules name docker0 and the user network's bridge);
- tests/fixtures/golden/scene.json: a Kubernetes pod on a CNI bridge with its veth and namespace
  links, a veth whose namespace nobody holds (an orphan), the addresses of each namespace, and the
  host veths' counters (what one RTM_GETSTATS dump would answer);
- tests/fixtures/golden/overlay.json: a Swarm overlay network `ov` (Docker's own inspect of one)
  with its namespace (br0, its VXLAN device, a veth to Swarm's load balancer sandbox and one to
  the container t6, whose eth0 is on `ov` only), the namespaces' files and addresses, and what
  the kernel answers of it each scrape (``OverlayKernel``: the namespace's links with their
  counters, the VXLAN device's forwarding database with two peers, the host's route to each);
- a procfs tree (``proc_root``): under every workload's pid the files of tests/fixtures/netstat
  with each number made distinct (tests/fixtures/golden/net: a field read from the wrong column
  shows), and the host's conntrack files (tests/fixtures/golden/proc, and the same
  ``stat/nf_conntrack``);
- the firewall commands (``firewall_commands``): iptables-nft-save answers
  tests/fixtures/nat/docker20.iptables-save, iptables-legacy-save an empty ruleset, and nothing
  else is on PATH (no nft).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Collection, Iterable, Sequence
from pathlib import Path

from recorded import recorded_state

from exporter.core import overlay
from exporter.core.model import (
    Address,
    Counters,
    Endpoint,
    HostState,
    Link,
    Network,
    PodMember,
    Workload,
)
from exporter.sources.kernel.netstat import CONNTRACK
from exporter.sources.runtimes.docker import parse_container, parse_network

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
GOLDEN = FIXTURES / "golden"
NAT = FIXTURES / "nat"
NETSTAT = GOLDEN / "net"


def _scene() -> dict:
    return json.loads((GOLDEN / "scene.json").read_text())


def _links(docs: list[dict]) -> dict[int, Link]:
    return {d["ifindex"]: Link(**d) for d in docs}


def _overlay_scene() -> dict:
    return json.loads((GOLDEN / "overlay.json").read_text())


def _workload(doc: dict) -> Workload:
    members = tuple(PodMember(**m) for m in doc["members"])
    endpoints = tuple(Endpoint(**e) for e in doc["endpoints"])
    return Workload(**dict(doc, members=members, endpoints=endpoints))


def golden_state() -> HostState:
    state, scene = recorded_state(), _scene()
    state.runtimes_up["containerd"] = True
    state.pod_runtimes = frozenset({"containerd"})  # the CRI source says its workloads are pods
    state.links.update(_links(scene["links"]))
    for nsid, docs in scene["netns_links"].items():
        state.netns_links[int(nsid)] = _links(docs)
    for doc in json.loads((NAT / "docker20-containers.json").read_text()):
        c = parse_container(doc)
        state.containers[c.id] = c
    for c in map(_workload, scene["pods"]):
        state.containers[c.id] = c
    known = {n.name for n in state.networks.values()}
    for doc in json.loads((NAT / "docker20-networks.json").read_text()):
        n = parse_network(doc)
        if n.name not in known:
            state.networks[n.id] = n
    for doc in scene["networks"]:
        n = Network(**dict(doc, subnets=tuple(map(tuple, doc["subnets"]))))
        state.networks[n.id] = n
    state.netns_addresses = {
        int(nsid): tuple(Address(**a) for a in found) for nsid, found in scene["addresses"].items()
    }
    _add_overlay(state, _overlay_scene())
    return state


def _add_overlay(state: HostState, scene: dict) -> None:
    """The overlay network, its namespace and the container on it, as the state loader reads them."""
    n = parse_network(scene["network"])
    state.networks[n.id] = n
    c = _workload(scene["workload"])
    state.containers[c.id] = c
    for nsid, docs in scene["netns_links"].items():
        state.netns_links[int(nsid)] = _links(docs)
    for nsid, found in scene["addresses"].items():
        state.netns_addresses[int(nsid)] = tuple(Address(**a) for a in found)
    state.netns_files.update(
        (path, (inode, nsid)) for path, (inode, nsid) in scene["netns_files"].items()
    )
    state.overlay_netns = overlay.namespace_files(state.netns_files, state.docker_netns_dir)


def link_stats(ifindexes: Collection[int]) -> dict[int, Counters]:
    """The host veths' counters as the scene has them (the containers and pods collectors' read)."""
    rows = {int(i): tuple(row) for i, row in _scene()["link_stats"].items()}
    return {i: rows[i] for i in ifindexes if i in rows}


def _overlay_stats() -> dict[tuple[int, int], Counters]:
    rows = _overlay_scene()["link_stats"]
    return {(int(k.split("/")[0]), int(k.split("/")[1])): tuple(v) for k, v in rows.items()}


class OverlayKernel:
    """What the overlay collector reads fresh from the kernel, as the scene has it: one overlay
    namespace's links with their counters (by its id), the forwarding database of its VXLAN device
    (from a socket in the namespace) and the host's route to each peer."""

    def __init__(self) -> None:
        scene = _overlay_scene()
        self.links = {int(nsid): _links(docs) for nsid, docs in scene["netns_links"].items()}
        self.stats = _overlay_stats()
        self.fdb = {int(i): set(peers) for i, peers in scene["fdb"].items()}
        self.routes = scene["routes"]

    def link_stats(self, _path: str, nsid: int, _inode: int | None = None) -> dict[int, Counters]:
        return {i: row for (n, i), row in self.stats.items() if n == nsid}

    def route_oif(self, address: str) -> int | None:
        return self.routes.get(address)

    def fdb_destinations(self, _path: str, ifindex: int) -> set[str]:
        return self.fdb.get(ifindex, set())

    def fdb_destinations_of(self, devices: Sequence[tuple[str, int, int]]) -> list[set[str]]:
        return [self.fdb_destinations(path, ifindex) for path, _inode, ifindex in devices]

    def keep(self, _paths: Iterable[str]) -> None:
        pass

    def close(self) -> None:
        pass


def proc_root(state: HostState, root: Path) -> Path:
    """A procfs tree: the host's conntrack files, and the netstat files under every pid."""
    shutil.copytree(GOLDEN / "proc", root)
    conntrack = NETSTAT / CONNTRACK.replace("/", "_")
    (root / "net" / "stat").mkdir(parents=True)
    shutil.copy(conntrack, root / "net" / CONNTRACK)
    for c in state.containers.values():
        if c.pid > 0:
            net = root / str(c.pid) / "net"
            shutil.copytree(NETSTAT, net, ignore=shutil.ignore_patterns(conntrack.name))
            (net / "stat").mkdir()
            shutil.copy(conntrack, net / CONNTRACK)
    return root


def firewall_commands(bin_dir: Path) -> Path:
    """The save commands, answering recorded rules; the directory is the whole PATH."""
    bin_dir.mkdir()
    cat = shutil.which("cat")
    answers = {
        "iptables-nft-save": NAT / "docker20.iptables-save",
        "ip6tables-nft-save": NAT / "docker20.ip6tables-save",
        "iptables-legacy-save": None,
        "ip6tables-legacy-save": None,
    }
    for name, fixture in answers.items():
        body = f"exec {cat} {fixture}\n" if fixture else "exit 0\n"
        (bin_dir / name).write_text("#!/bin/sh\n" + body)
        (bin_dir / name).chmod(0o755)
    return bin_dir
