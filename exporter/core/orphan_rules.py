"""Orphaned veths: which host veths no container owns, and why. Pure: the
caller passes the clock (``now``, monotonic seconds).

A reason is decided for each veth of the host namespace; where several
apply, the first in REASONS wins:

- ``peer_in_host``: the peer is in the host namespace too (the pair was
  created and never moved: a crash between the two steps).
- ``netns_without_container``: the peer's namespace is alive but no running
  container (or pod sandbox the runtime still lists) owns it: a leaked
  namespace, Docker's or a CRI runtime's ``cni-*`` one. Needs every runtime's
  answer.
- ``no_endpoint``: a port of a Docker-managed bridge whose peer is in a
  running container's namespace but matches none of the endpoints Docker
  reports for that network (by network and MAC). Needs Docker's answer.

Scope ``docker`` (the default) keeps a suspect only when a container runtime
(Docker, or a CRI runtime for its ``/var/run/netns/cni-*`` namespaces) can be
blamed for it; ``all`` keeps every suspect. See runtime_blamed.

The grace period counts from the moment the veth was first seen as a
suspect (``track``), so that a veth still being set up, or one whose
container has just stopped and whose removal is under way, is not flagged.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from exporter.core.model import Link, Network, PodRef, Workload

REASONS = ("peer_in_host", "netns_without_container", "no_endpoint")
SCOPES = ("docker", "all")
DEFAULT_GRACE = 30.0

DOCKER_NETNS_DIR = "/var/run/docker/netns/"
NAMED_NETNS_DIR = "/var/run/netns/"
# libnetwork names both ends of a new pair "veth" + 7 hex digits, and a
# container's namespace file after 12 hex digits of its sandbox id; its other
# namespaces (Swarm's ingress_sbox, lb_*, overlay 1-*) serve no container.
DOCKER_VETH_NAME = re.compile(r"veth[0-9a-f]{7}")
DOCKER_SANDBOX_NAME = re.compile(r"[0-9a-f]{12}")
# CRI pods' namespaces: containerd's /var/run/netns/cni-<uuid>, CRI-O's /var/run/netns/<uuid>.
CNI_NETNS_NAME = re.compile(
    r"(?:cni-)?[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
)


@dataclass(frozen=True)
class Suspect:
    link: Link
    bridge: str
    reason: str
    runtime_blamed: bool  # a runtime can be blamed for it: kept at scope=docker
    pod: PodRef | None = None  # netns_without_container: the pod the CNI cache names, if any


@dataclass(frozen=True)
class Orphan:
    suspect: Suspect
    age: float


@dataclass(frozen=True)
class Host:
    """What the classification reads, from one consistent state."""

    links: dict[int, Link]  # host namespace, by ifindex
    runtime_bridges: dict[str, Network]  # Linux bridge name -> the runtime's network
    members: dict[int, tuple[Workload, ...]]  # nsid -> running containers in that namespace
    netns_links: dict[int, dict[int, Link]]  # nsid -> ifindex -> Link
    netns_kinds: dict[int, str]  # nsid -> "docker" | "docker_internal" | "cni" | "named"
    workloads_known: bool  # every runtime answered
    netns_pods: dict[int, PodRef] = field(default_factory=dict)  # nsid -> pod the CNI cache names


def netns_kinds(
    files: dict[str, tuple[int, int | None]], docker_dir: str = DOCKER_NETNS_DIR
) -> dict[int, str]:
    """nsid -> "docker", "docker_internal", "cni" or "named", from the namespace files and their
    ids; Docker's are those under `docker_dir` (its exec root's netns/)."""
    kinds = {}
    docker_dir = docker_dir.rstrip("/") + "/"
    for path, (_inode, nsid) in files.items():
        if nsid is not None and path.startswith(docker_dir):
            sandbox = DOCKER_SANDBOX_NAME.fullmatch(path[len(docker_dir) :])
            kinds[nsid] = "docker" if sandbox else "docker_internal"
        elif nsid is not None and path.startswith(NAMED_NETNS_DIR):
            cni = CNI_NETNS_NAME.fullmatch(path[len(NAMED_NETNS_DIR) :])
            kinds.setdefault(nsid, "cni" if cni else "named")
    return kinds


def netns_pods(
    files: dict[str, tuple[int, int | None]], pods: dict[str, PodRef]
) -> dict[int, PodRef]:
    """nsid -> the pod that CNI's cache names for that namespace file."""
    return {
        nsid: pods[path]
        for path, (_inode, nsid) in files.items()
        if nsid is not None and path in pods
    }


def suspect(link: Link, host: Host) -> Suspect | None:
    """The veth as a suspect, with its reason and scope, or None when it does not look orphaned.
    A namespace no workload owns names the pod it was made for when CNI's cache still does."""
    why = reason(link, host)
    if why is None:
        return None
    pod = None
    if why == "netns_without_container" and link.peer_netnsid is not None:
        pod = host.netns_pods.get(link.peer_netnsid)
    return Suspect(link, _bridge_of(link, host.links), why, runtime_blamed(link, why, host), pod)


def reason(link: Link, host: Host) -> str | None:
    if link.peer_netnsid is None:
        peer = host.links.get(link.peer_ifindex)
        return "peer_in_host" if peer is not None and peer.kind == "veth" else None
    if not host.workloads_known:  # without every runtime's answer, nobody owns nothing
        return None
    members = host.members.get(link.peer_netnsid)
    if not members and host.netns_kinds.get(link.peer_netnsid) == "docker_internal":
        return None  # Docker's own, e.g. Swarm's ingress sandbox on docker_gwbridge
    if not members:
        return "netns_without_container"
    network = host.runtime_bridges.get(_bridge_of(link, host.links))
    peer = host.netns_links.get(link.peer_netnsid, {}).get(link.peer_ifindex)
    if network is not None and peer is not None and not _has_endpoint(members, network, peer.mac):
        return "no_endpoint"
    return None


def runtime_blamed(link: Link, why: str, host: Host) -> bool:
    """Whether a runtime can be blamed: a port of a Docker bridge, a peer in
    Docker's own namespace or in a CRI pod's one (``cni-<uuid>``, ``<uuid>``), never another
    namespace of `ip netns add` nor (but for a pod's) a port of another bridge;
    a pair left in the host counts when either end is on a Docker bridge, or
    when both are unplugged and named as Docker names them."""
    kind = host.netns_kinds.get(link.peer_netnsid) if link.peer_netnsid is not None else None
    if kind in ("named", "cni"):
        return kind == "cni"
    ends = [link]
    if why == "peer_in_host":
        ends.append(host.links[link.peer_ifindex])
    bridges = [_bridge_of(end, host.links) for end in ends]
    if any(b in host.runtime_bridges for b in bridges):
        return True
    if any(bridges):
        return False
    if why == "peer_in_host":
        return all(DOCKER_VETH_NAME.fullmatch(end.name) for end in ends)
    return kind == "docker"


def track(suspects: Iterable[Suspect], since: dict[int, float], now: float) -> dict[int, float]:
    """Since when each current suspect has been one (by host ifindex)."""
    return {s.link.ifindex: since.get(s.link.ifindex, now) for s in suspects}


def flagged(
    suspects: Iterable[Suspect],
    since: dict[int, float],
    now: float,
    scope: str = "docker",
    grace: float = DEFAULT_GRACE,
) -> list[Orphan]:
    """The suspects in scope that have been suspects for at least the grace period."""
    out = []
    for s in suspects:
        age = now - since.get(s.link.ifindex, now)
        if (scope == "all" or s.runtime_blamed) and age >= grace:
            out.append(Orphan(s, age))
    return out


def _bridge_of(link: Link, links: dict[int, Link]) -> str:
    master = links.get(link.master) if link.master else None
    return master.name if master is not None and master.kind == "bridge" else ""


def _has_endpoint(members: tuple[Workload, ...], network: Network, mac: str) -> bool:
    return any(
        (ep.network_id == network.id or ep.network == network.name)
        and (not ep.mac or ep.mac.lower() == mac.lower())
        for c in members
        for ep in c.endpoints
    )
