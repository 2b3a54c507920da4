"""The join: host links + containers + their namespaces -> an immutable snapshot.

Pure: no I/O, no clock. A host veth belongs to a container when its peer's
namespace id (IFLA_LINK_NETNSID) is the id the host gives that container's
namespace; the peer's ifindex (IFLA_LINK) is then looked up among the links of
that namespace to name the container-side interface. Ifindexes are only
compared within the namespace they belong to.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple, TypeVar, cast

from exporter.core import orphan_rules, overlay
from exporter.core.memo import MemoKey
from exporter.core.model import Address, HostState, Link, Network, Workload

CONTAINER_SIDE_KINDS = ("macvlan", "ipvlan")


@dataclass(frozen=True)
class WorkloadView:
    container: Workload
    network_mode: str  # bridge, host, none, container:<owner id>, <network name>
    netns_owner: str | None  # id of the container whose namespace this one uses (itself if its own)


@dataclass(frozen=True)
class Interface:
    """One interface of a container, with where it plugs in on the host."""

    container: Workload
    interface: str  # container-side name: eth0, eth1, ...
    ifindex: int  # container-side ifindex (in the container's namespace)
    kind: str  # veth | macvlan | ipvlan
    veth: str = ""  # the other end (veth only): in the host, or in `netns`
    veth_ifindex: int = 0  # the host end's ifindex (0: no host end)
    bridge: str = ""
    network: str = ""
    mac: str = ""
    netns: str = ""  # the namespace of the veth's other end when not the host's: an overlay's
    netns_veth: tuple[int, int] | None = None  # that veth as (namespace id, ifindex there)


@dataclass(frozen=True)
class Veth:
    """A veth in the host namespace and what it maps to (container None: unmapped)."""

    link: Link
    container: Workload | None
    interface: str
    bridge: str
    network: str


class Verdict(NamedTuple):
    """What one host veth is."""

    veth: Veth
    suspect: orphan_rules.Suspect | None
    interface: Interface | None  # the container interface it is the host end of


T = TypeVar("T")


@dataclass(frozen=True)
class Snapshot:
    """The host's topology at one moment. Nothing in it changes after build(), except `cache`:
    what collectors render once per snapshot (see memo). The dicts are the snapshot's own copies;
    nobody writes to them."""

    containers: tuple[WorkloadView, ...]
    interfaces: tuple[Interface, ...]
    veths: tuple[Veth, ...]
    links: dict[int, Link]
    networks: dict[str, Network]
    runtimes_up: dict[str, bool]
    pod_runtimes: frozenset[str] = frozenset()  # the followed runtimes whose workloads are pods
    addresses: dict[int, tuple[Address, ...]] = field(default_factory=dict)  # nsid -> addresses
    suspects: tuple[orphan_rules.Suspect, ...] = ()
    overlays: tuple[overlay.Namespace, ...] = ()  # Docker's overlay namespaces on this node
    sandboxes: dict[int, str] = field(default_factory=dict)  # nsid -> name of Swarm's own sandbox
    # Host ifindex -> since when (monotonic) the veth has been a suspect.
    suspect_since: dict[int, float] = field(default_factory=dict)
    cache: dict[MemoKey, object] = field(default_factory=dict, compare=False)  # see memo()
    # What the next build() reuses: the verdicts by host ifindex, and what it read of each peer namespace.
    verdicts: dict[int, Verdict] = field(default_factory=dict, compare=False)
    netns_contexts: dict[int, tuple] = field(default_factory=dict, compare=False)

    def memo(self, key: MemoKey[T], build: Callable[[Snapshot], T]) -> T:
        """build(self), computed once per snapshot: for what changes only with the topology."""
        if key not in self.cache:
            self.cache[key] = build(self)
        return cast(T, self.cache[key])

    @property
    def workloads_known(self) -> bool:
        return bool(self.runtimes_up) and all(self.runtimes_up.values())


def empty() -> Snapshot:
    return build(HostState())


def build(state: HostState, previous: Snapshot | None = None, now: float = 0.0) -> Snapshot:
    """The snapshot of `state` at monotonic time `now`. Given the snapshot before it, only the veths
    that a change touched are judged again; the others keep their earlier verdicts (the same
    objects), and suspects keep the time they became suspects."""
    views = _container_views(state)
    # A ready workload's claim wins over a not-ready sandbox's, whose namespace (and so its id,
    # which the kernel may give again) can be gone before its runtime forgets it.
    owners_by_nsid = {
        v.container.nsid: v.container
        for v in sorted(views, key=lambda v: v.container.ready)
        if v.netns_owner == v.container.id
        and v.network_mode != "host"
        and v.container.nsid is not None
    }
    bridge_networks = {n.bridge: n for n in state.networks.values() if n.bridge}
    host = _orphan_host(state, bridge_networks)
    contexts = _netns_contexts(state, owners_by_nsid, host)
    verdicts = _judge_veths(
        state, owners_by_nsid, bridge_networks, host, _changes(previous, state, contexts)
    )
    veths = tuple(v.veth for v in verdicts.values())
    interfaces = [v.interface for v in verdicts.values() if v.interface is not None]
    for nsid, owner in owners_by_nsid.items():
        interfaces.extend(_container_side_interfaces(owner, state.netns_links.get(nsid, {})))
    sandboxes = overlay.sandbox_names(state.netns_files, state.docker_netns_dir, state.networks)
    overlays = overlay.namespaces(
        state.netns_files, state.netns_links, state.networks, state.docker_netns_dir
    )
    interfaces.extend(_overlay_interfaces(overlays, owners_by_nsid, state))
    interfaces.sort(key=lambda i: (i.container.name, i.container.id, i.interface))
    suspects = tuple(v.suspect for v in verdicts.values() if v.suspect is not None)
    since = previous.suspect_since if previous is not None else {}
    return Snapshot(
        containers=views,
        interfaces=tuple(interfaces),
        veths=veths,
        links=dict(state.links),
        networks=dict(state.networks),
        runtimes_up=dict(state.runtimes_up),
        pod_runtimes=state.pod_runtimes,
        addresses=dict(state.netns_addresses),
        suspects=suspects,
        overlays=overlays,
        sandboxes=sandboxes,
        suspect_since=orphan_rules.track(suspects, since, now),
        verdicts=verdicts,
        netns_contexts=contexts,
    )


class Changes(NamedTuple):
    """What changed since the previous snapshot, as far as the verdicts on veths go."""

    earlier: dict[int, Verdict]  # the previous verdicts (empty: judge every veth)
    links: set[int]  # host ifindexes whose link is new, gone or replaced
    netns: set[int]  # nsids whose context is new, gone or different


def _netns_contexts(
    state: HostState, owners_by_nsid: dict, host: orphan_rules.Host
) -> dict[int, tuple]:
    """Per peer namespace, everything a verdict reads of it: its links, owner, members, kind and the
    pod the CNI cache names."""
    nsids = (
        state.netns_links.keys()
        | owners_by_nsid.keys()
        | host.members.keys()
        | host.netns_kinds.keys()
    )
    return {
        nsid: (
            state.netns_links.get(nsid),
            owners_by_nsid.get(nsid),
            host.members.get(nsid),
            host.netns_kinds.get(nsid),
            host.netns_pods.get(nsid),
        )
        for nsid in nsids
    }


def _changes(previous: Snapshot | None, state: HostState, contexts: dict) -> Changes:
    """Links are compared by identity (the state replaces a link that changes), namespace contexts by
    value. The runtimes' networks and whether they answered feed every verdict: a change there, or no
    previous snapshot, means judging every veth."""
    if (
        previous is None
        or previous.runtimes_up != state.runtimes_up
        or previous.networks != state.networks
    ):
        return Changes({}, set(), set())
    old_links, old_contexts = previous.links, previous.netns_contexts
    links = {i for i, link in state.links.items() if old_links.get(i) is not link}
    links.update(i for i in old_links if i not in state.links)
    netns = {
        nsid
        for nsid in contexts.keys() | old_contexts.keys()
        if contexts.get(nsid) != old_contexts.get(nsid)
    }
    return Changes(previous.verdicts, links, netns)


def _judge_veths(
    state: HostState,
    owners_by_nsid: dict,
    bridge_networks: dict,
    host: orphan_rules.Host,
    changes: Changes,
) -> dict[int, Verdict]:
    """The verdict on every host veth, by ifindex in ifindex order."""
    verdicts = {}
    for ifindex in sorted(state.links):
        link = state.links[ifindex]
        if link.kind != "veth":
            continue
        old = changes.earlier.get(ifindex)
        if old is None or _touched(link, state.links, changes):
            veth = _veth(link, state, owners_by_nsid, bridge_networks)
            interface = (
                _veth_interface(veth, veth.container, state) if veth.container is not None else None
            )
            old = Verdict(veth, orphan_rules.suspect(link, host), interface)
        verdicts[ifindex] = old
    return verdicts


def _touched(link: Link, links: dict[int, Link], changes: Changes) -> bool:
    """Whether anything _veth(), _veth_interface() or orphan_rules.suspect() read about this veth changed:
    the link, its bridge, and its peer's namespace, or (a peer in the host) the peer and its bridge."""
    if link.ifindex in changes.links or link.master in changes.links:
        return True
    if link.peer_netnsid is not None:
        return link.peer_netnsid in changes.netns
    peer = links.get(link.peer_ifindex)
    return link.peer_ifindex in changes.links or (peer is not None and peer.master in changes.links)


def _orphan_host(state: HostState, bridge_networks: dict) -> orphan_rules.Host:
    members: dict[int, tuple[Workload, ...]] = {}
    for c in state.containers.values():
        if c.nsid is not None:
            members[c.nsid] = members.get(c.nsid, ()) + (c,)
    return orphan_rules.Host(
        links=state.links,
        runtime_bridges=bridge_networks,
        members=members,
        netns_links=state.netns_links,
        netns_kinds=orphan_rules.netns_kinds(state.netns_files, state.docker_netns_dir),
        workloads_known=state.workloads_known,
        netns_pods=orphan_rules.netns_pods(state.netns_files, state.cni_pods),
    )


def _container_views(state: HostState) -> tuple[WorkloadView, ...]:
    """Decide who owns each namespace; containers sharing one are counted once."""
    by_inode: dict[int, list[Workload]] = {}
    for c in state.containers.values():
        if c.netns_inode is not None:
            by_inode.setdefault(c.netns_inode, []).append(c)
    owner_of: dict[str, str] = {}
    for _inode, members in by_inode.items():
        owner = min(
            members, key=lambda c: (c.network_mode.startswith("container:"), c.started_at, c.id)
        )
        for c in members:
            owner_of[c.id] = owner.id
    views = []
    for c in sorted(state.containers.values(), key=lambda c: (c.name, c.id)):
        owner_id = owner_of.get(c.id)
        mode = _network_mode(c, owner_id, state.host_netns_inode, state.networks)
        views.append(WorkloadView(c, mode, owner_id))
    return tuple(views)


def _network_mode(
    c: Workload, owner: str | None, host_inode: int | None, networks: dict[str, Network]
) -> str:
    if c.network_mode == "host" or (host_inode is not None and c.netns_inode == host_inode):
        return "host"
    if owner is not None and owner != c.id:
        return f"container:{owner}"
    if c.network_mode.startswith("container:"):
        return c.network_mode
    if c.network_mode in ("", "default"):
        return overlay.task_network(c.endpoints, networks) or "bridge"
    return c.network_mode


def _veth(link: Link, state: HostState, owners_by_nsid: dict, bridge_networks: dict) -> Veth:
    bridge = state.links[link.master].name if link.master in state.links else ""
    network = bridge_networks[bridge].name if bridge in bridge_networks else ""
    nsid = link.peer_netnsid
    owner = owners_by_nsid.get(nsid) if nsid is not None else None
    peer = (
        state.netns_links.get(nsid, {}).get(link.peer_ifindex)
        if owner and nsid is not None
        else None
    )
    if owner and not network and peer is not None:
        network = _network_by_mac(owner, peer.mac)
    return Veth(link, owner, peer.name if peer else "", bridge, network)


def _veth_interface(v: Veth, container: Workload, state: HostState) -> Interface:
    nsid = v.link.peer_netnsid
    peer = state.netns_links.get(nsid, {}).get(v.link.peer_ifindex) if nsid is not None else None
    return Interface(
        container=container,
        interface=v.interface,
        ifindex=v.link.peer_ifindex,
        kind="veth",
        veth=v.link.name,
        veth_ifindex=v.link.ifindex,
        bridge=v.bridge,
        network=v.network,
        mac=peer.mac if peer else "",
    )


def _overlay_interfaces(
    overlays: tuple[overlay.Namespace, ...], owners_by_nsid: dict, state: HostState
) -> list[Interface]:
    """Interfaces whose veth's other end is on an overlay's br0: found, as host veths are, by the
    peer's namespace id and ifindex; counted from inside the container (no host end)."""
    out = []
    for ns in overlays:
        for veth in ns.endpoints:
            nsid = veth.peer_netnsid
            owner = owners_by_nsid.get(nsid) if nsid is not None else None
            peer = state.netns_links.get(owner.nsid, {}).get(veth.peer_ifindex) if owner else None
            if owner is None or peer is None:
                continue
            out.append(
                Interface(
                    container=owner,
                    interface=peer.name,
                    ifindex=peer.ifindex,
                    kind="veth",
                    veth=veth.name,
                    bridge=ns.bridge.name if ns.bridge else "",
                    network=ns.network_name or _network_by_mac(owner, peer.mac),
                    mac=peer.mac,
                    netns=ns.name,
                    netns_veth=(ns.nsid, veth.ifindex),
                )
            )
    return out


def _container_side_interfaces(owner: Workload, links: dict[int, Link]) -> list[Interface]:
    """Interfaces with no host veth (macvlan, ipvlan): counted from inside the namespace."""
    out = []
    for link in links.values():
        if link.kind in CONTAINER_SIDE_KINDS:
            out.append(
                Interface(
                    container=owner,
                    interface=link.name,
                    ifindex=link.ifindex,
                    kind=link.kind,
                    network=_network_by_mac(owner, link.mac),
                    mac=link.mac,
                )
            )
    return out


def _network_by_mac(c: Workload, mac: str) -> str:
    for ep in c.endpoints:
        if mac and ep.mac.lower() == mac.lower():
            return ep.network
    return ""
