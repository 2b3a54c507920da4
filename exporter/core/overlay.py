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

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass

from exporter.core.model import Endpoint, Link, Network, Workload

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
    path: str  # the file: under Docker's exec root's netns/
    inode: int  # of the namespace bound on it when the state read it
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


def sandbox_names(
    files: dict[str, tuple[int, int | None]], docker_dir: str, networks: dict[str, Network]
) -> dict[int, str]:
    """The ids of Swarm's own sandboxes' namespaces (ingress_sbox, lb_<network>), each with the
    name `docker network inspect` gives it among the network's containers."""
    docker_dir = docker_dir.rstrip("/") + "/"
    out = {}
    for path, (_inode, nsid) in files.items():
        name = path[len(docker_dir) :] if path.startswith(docker_dir) else ""
        if nsid is not None and is_sandbox(name):
            out[nsid] = sandbox_name(name, networks)
    return out


def sandbox_name(file_name: str, networks: dict[str, Network]) -> str:
    """`ingress-sbox` for the routing mesh's sandbox, `lb-<network>` for a network's load
    balancer (its file carries the network id's first characters); the file's name when no
    network of that id is listed."""
    if file_name == INGRESS_SANDBOX:
        return "ingress-sbox"
    m = LB_SANDBOX.fullmatch(file_name)
    network = next((n for n in networks.values() if m and n.id.startswith(m.group(1))), None)
    return f"lb-{network.name}" if network else file_name


def sandbox_at(sandboxes: dict[int, str], nsid: int | None) -> str | None:
    """The name of Swarm's own sandbox whose namespace has that id, if it is one."""
    return None if nsid is None else sandboxes.get(nsid)


def is_sandbox(name: str) -> bool:
    return name == INGRESS_SANDBOX or bool(LB_SANDBOX.fullmatch(name))


def namespaces(
    files: dict[str, tuple[int, int | None]],
    netns_links: dict[int, dict[int, Link]],
    networks: dict[str, Network],
    docker_dir: str,
) -> tuple[Namespace, ...]:
    """The overlay namespaces among the namespace files whose links the state has read, in file name
    order."""
    docker_dir = docker_dir.rstrip("/") + "/"
    out = []
    for path, (inode, nsid) in sorted(files.items()):
        prefix = namespace_prefix(path[len(docker_dir) :]) if path.startswith(docker_dir) else None
        links = netns_links.get(nsid) if nsid is not None and prefix else None
        if links is None or prefix is None or nsid is None:
            continue
        out.append(
            Namespace(
                name=path[len(docker_dir) :],
                path=path,
                inode=inode,
                nsid=nsid,
                network_prefix=prefix,
                network=network_of(prefix, networks),
                links=tuple(links[i] for i in sorted(links)),
            )
        )
    return tuple(out)


def task_network(endpoints: tuple[Endpoint, ...], networks: dict[str, Network]) -> str:
    """A Swarm task's network mode, which Docker reports as "default": the first overlay it is on
    besides the routing mesh's (``ingress`` when that is its only one); "" for a container that is
    not only on overlays (Docker's default then is its bridge)."""
    names = [ep.network for ep in endpoints if ep.network != GATEWAY_BRIDGE]
    overlays = {n.name for n in networks.values() if n.driver == "overlay"}
    if not names or not all(name in overlays for name in names):
        return ""
    return next((name for name in names if name != INGRESS_NETWORK), names[0])


# -- leaks -----------------------------------------------------------------------------------------


def leak_candidates(
    overlays: Iterable[Namespace], host_links: Iterable[Link], workloads_known: bool
) -> list[tuple[str, str]]:
    """(kind, name) of what looks leaked now: an overlay namespace whose network Docker does not
    list (only when Docker answered), a VXLAN device named as libnetwork names them while they are
    in the host namespace (they belong in an overlay's namespace)."""
    out = [
        ("vxlan_device", l.name)
        for l in host_links
        if l.kind == "vxlan" and LEAKED_VXLAN_NAME.fullmatch(l.name)
    ]
    if workloads_known:
        out.extend(("namespace", ns.name) for ns in overlays if ns.network is None)
    return sorted(out)


def track(keys: Iterable[tuple[str, str]], since: dict, now: float) -> dict:
    """Since when each current candidate has been one."""
    return {k: since.get(k, now) for k in keys}


def flagged(since: dict, now: float, grace: float) -> list[tuple[str, str]]:
    return sorted(k for k, t in since.items() if now - t >= grace)


# -- address use -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class AddressUse:
    network: str
    subnet: str
    used: int
    total: int


def subnet_size(subnet: str) -> int:
    """The addresses Docker's IPAM can hand out in a subnet: all but the network's own address (and
    the broadcast address in IPv4)."""
    net = ipaddress.ip_network(subnet, strict=False)
    return max(net.num_addresses - (2 if net.version == 4 else 1), 0)


def address_use(
    networks: Iterable[Network], containers: Iterable[Workload], others: dict[str, int]
) -> list[AddressUse]:
    """Per network and subnet, the addresses in use as this node knows them: the gateway, its
    running containers' endpoints, and `others` (network id -> endpoints that are no container's,
    one address each, counted in the network's first IPv4 subnet)."""
    containers = list(containers)
    out = []
    for n in sorted(networks, key=lambda n: n.name):
        addresses = {
            a
            for c in containers
            for ep in c.endpoints
            if ep.network_id == n.id or (not ep.network_id and ep.network == n.name)
            for a in (ep.ipv4, ep.ipv6)
            if a
        }
        extra = others.get(n.id, 0)
        for subnet, gateway in n.subnets:
            net = ipaddress.ip_network(subnet, strict=False)
            inside = {a for a in addresses | {gateway} if a and ipaddress.ip_address(a) in net}
            out.append(
                AddressUse(
                    n.name,
                    subnet,
                    len(inside) + (extra if net.version == 4 else 0),
                    subnet_size(subnet),
                )
            )
            extra = 0 if net.version == 4 else extra
    return out
