"""Docker's overlay networks as the kernel holds them on one node. Pure: no I/O.

libnetwork gives each overlay network with a local endpoint a namespace bound on
``<epoch>-<network id[:10]>`` under Docker's exec root's ``netns/``. In it, ``br0``
bridges the network's VXLAN device (``vxlan0``; ``vx-<vni>-<id>`` while being set up in
the host) and one veth per local endpoint, whose peer is the endpoint's ``eth*`` in a
container's namespace (or in Swarm's own ``lb_*`` and ``ingress_sbox``). The state
dumps those links by the namespace's id (IFLA_TARGET_NETNSID), so that each veth's
IFLA_LINK_NETNSID is the id the host gives its peer's namespace: the same key that maps
host veths to containers.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from exporter.core.model import Endpoint, Link, Network

# `<sandbox key epoch>-<first 10 characters of the network id>` (swarm ids are base 36).
NETNS_NAME = re.compile(r"(\d+)-([0-9a-z]{10})")
INGRESS_SANDBOX = "ingress_sbox"
INGRESS_NETWORK = "ingress"
GATEWAY_BRIDGE = "docker_gwbridge"  # every Swarm container's way out: a Docker bridge network
LB_SANDBOX = re.compile(r"lb_([0-9a-z]{9})")
# What libnetwork names a VXLAN device while it lives in the host namespace: `vx-<vni hex 6>-<id 5>`.
LEAKED_VXLAN_NAME = re.compile(r"vx-[0-9a-f]{6}-[0-9a-z]{5}")


@dataclass(frozen=True)
class Namespace:
    """One overlay network's namespace on this node, as the state last read it."""

    name: str  # the file's name: "1-h2qftybqtz"
    nsid: int  # the id the host gives it
    network_prefix: str  # the network id's first 10 characters
    network: Network | None  # Docker's network of that id (None: Docker lists none: leaked)
    links: tuple[Link, ...]  # by ifindex

    @property
    def bridge(self) -> Link | None:
        return next((l for l in self.links if l.kind == "bridge"), None)

    @property
    def vxlan(self) -> Link | None:
        return next((l for l in self.links if l.kind == "vxlan"), None)

    @property
    def endpoints(self) -> tuple[Link, ...]:
        """The veths plugged into br0: one per local endpoint (containers, and Swarm's lb_ and
        ingress sandboxes)."""
        bridge = self.bridge
        return tuple(
            l for l in self.links if l.kind == "veth" and bridge and l.master == bridge.ifindex
        )

    @property
    def network_name(self) -> str:
        return self.network.name if self.network is not None else ""


def namespace_prefix(name: str) -> str | None:
    """The network id prefix an overlay namespace's file name carries, or None for another file."""
    m = NETNS_NAME.fullmatch(name)
    return m.group(2) if m else None


def namespace_files(files: dict[str, tuple[int, int | None]], docker_dir: str) -> dict[int, str]:
    """nsid -> file name of the overlay namespaces among the namespace files (Docker's are those in
    `docker_dir`)."""
    docker_dir = docker_dir.rstrip("/") + "/"
    out = {}
    for path, (_inode, nsid) in files.items():
        name = path[len(docker_dir) :] if path.startswith(docker_dir) else ""
        if nsid is not None and namespace_prefix(name):
            out[nsid] = name
    return out


def network_of(prefix: str, networks: dict[str, Network]) -> Network | None:
    for n in networks.values():
        if n.driver == "overlay" and n.id.startswith(prefix):
            return n
    return None


def namespaces(
    names: dict[int, str], netns_links: dict[int, dict[int, Link]], networks: dict[str, Network]
) -> tuple[Namespace, ...]:
    """The overlay namespaces whose links the state has read, in file name order."""
    out = []
    for nsid, name in names.items():
        links = netns_links.get(nsid)
        prefix = namespace_prefix(name)
        if links is None or prefix is None:
            continue
        out.append(
            Namespace(
                name=name,
                nsid=nsid,
                network_prefix=prefix,
                network=network_of(prefix, networks),
                links=tuple(links[i] for i in sorted(links)),
            )
        )
    return tuple(sorted(out, key=lambda n: n.name))


def task_network(endpoints: tuple[Endpoint, ...], networks: dict[str, Network]) -> str:
    """A Swarm task's network mode, which Docker reports as "default": the first overlay it is on
    besides the routing mesh's (``ingress`` when that is its only one); "" for a container that is
    not only on overlays (Docker's default then is its bridge)."""
    names = [ep.network for ep in endpoints if ep.network != GATEWAY_BRIDGE]
    overlays = {n.name for n in networks.values() if n.driver == "overlay"}
    if not names or not all(name in overlays for name in names):
        return ""
    return next((name for name in names if name != INGRESS_NETWORK), names[0])
