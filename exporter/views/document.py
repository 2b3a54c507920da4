"""The host's container network as one JSON document: what /topology.json serves, what the
/topology page draws and what `dockernet-exporter topology` prints (schema: docs/topology.md).

Pure: the caller passes the snapshot, the clock (``now``, monotonic), the firewall rules last read
(or None), the rates, the host addresses, the overlays' remote VTEPs and the flows it read.

Shape: the host's own ``interfaces``; ``bridges``, each with its subnets (and their MASQUERADE rule)
and its ``veths``, each naming the ``namespace`` at its other end; ``namespaces``, one per network
namespace of workloads with every container in it (a ``container:X`` or a pod's containers share
one) and its interfaces; ``host_network`` and ``no_network`` containers set apart; ``unattached``
veths (on no bridge) and ``orphans``; the ``overlays`` (views/overlay.py) and the ``flows``
between workloads (views/flows.py).
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from exporter.core import orphan_rules
from exporter.core.memo import MemoKey
from exporter.core.model import (
    RX_BYTES,
    TX_BYTES,
    Address,
    Counters,
    Link,
    Network,
    PortBinding,
    Workload,
)
from exporter.views import flows as flows_view
from exporter.views import overlay as overlay_view

if TYPE_CHECKING:
    from exporter.core.topology import Interface, Snapshot, Veth, WorkloadView
    from exporter.sources.firewall.rules import Ruleset

SCHEMA = 1
MAX_BRIDGE_PORTS = 1023  # BR_MAX_PORTS port numbers, number 0 reserved: the 1,024th join fails
_SNAPSHOTS = itertools.count(1)  # a number per snapshot drawn, for the revision
REVISION: MemoKey[int] = MemoKey("topology revision")


@dataclass(frozen=True)
class Rates:
    """Bytes per second by host ifindex, as the container sees them: rx is what it receives (what
    the host end transmits), tx what it sends."""

    rx: dict[int, float] = field(default_factory=dict)
    tx: dict[int, float] = field(default_factory=dict)


def rates_between(before: dict[int, Counters], after: dict[int, Counters], seconds: float) -> Rates:
    """Rates of the host veths read twice, ``seconds`` apart (a counter that went back: no rate)."""
    rates = Rates()
    if seconds <= 0:
        return rates
    for ifindex, now in after.items():
        then = before.get(ifindex)
        if then is None:
            continue
        sent, received = now[TX_BYTES] - then[TX_BYTES], now[RX_BYTES] - then[RX_BYTES]
        if sent >= 0 and received >= 0:
            rates.rx[ifindex] = sent / seconds
            rates.tx[ifindex] = received / seconds
    return rates


@dataclass(frozen=True)
class Options:
    """What the document shows besides the snapshot."""

    rules: Ruleset | None = None  # None: the firewall was not read (rule states "unknown")
    rates: Rates = field(default_factory=Rates)
    host_addresses: tuple[Address, ...] = ()
    scope: str = "docker"
    grace: float = orphan_rules.DEFAULT_GRACE
    peers: Mapping[str, Sequence[str]] | None = None  # overlay namespace -> remote VTEPs
    flows: flows_view.Reading | None = None  # None: the flows collector is off


class _Lookups:
    """Everything the document looks up by key, built once per document."""

    def __init__(self, snap: Snapshot, now: float, options: Options) -> None:
        from exporter.sources.firewall.attribution import masquerade_statuses, port_statuses

        self.snap, self.now, self.options = snap, now, options
        self.ports: dict[tuple[str, PortBinding], str] = {}
        self.masquerade: dict[tuple[str, str], str] = {}
        if options.rules is not None:
            containers = [v.container for v in snap.containers]
            for p in port_statuses(containers, options.rules):
                self.ports[(p.container.id, p.binding)] = _rule_state(p.expected, p.present)
            for m in masquerade_statuses(snap.networks.values(), options.rules):
                self.masquerade[(m.bridge, m.subnet)] = _rule_state(m.expected, m.present)
        self.suspects = {
            s.link.ifindex: s
            for s in snap.suspects
            if options.scope == "all" or s.runtime_blamed  # out of scope: not drawn as an orphan
        }
        self.addresses: dict[tuple[int, int], list[Address]] = {}
        for nsid, found in snap.addresses.items():
            for a in found:
                self.addresses.setdefault((nsid, a.ifindex), []).append(a)
        self.host_addresses: dict[int, list[Address]] = {}
        for a in options.host_addresses:
            self.host_addresses.setdefault(a.ifindex, []).append(a)
        self.owner_of_veth = {i.veth_ifindex: i.container.id for i in snap.interfaces if i.veth}


def document(snap: Snapshot, now: float, options: Options | None = None) -> dict[str, Any]:
    """The JSON document of the snapshot at monotonic time ``now`` (see docs/topology.md)."""
    look = _Lookups(snap, now, options or Options())
    namespaces, host_network, no_network = _namespaces(look)
    veths = [_port(look, v) for v in snap.veths]
    doc: dict[str, Any] = {
        "schema": SCHEMA,
        "workloads_known": snap.workloads_known,
        "runtimes_up": dict(sorted(snap.runtimes_up.items())),
        "nat_read": look.options.rules is not None,
        "interfaces": _host_interfaces(look),
        "bridges": _bridges(look, veths),
        "namespaces": namespaces,
        "host_network": host_network,
        "no_network": no_network,
        "unattached": [v for v in veths if not v["bridge"]],
        "orphans": [_orphan_entry(v) for v in veths if v["orphan"] is not None],
        "overlays": overlay_view.overlays(snap, look.options.peers),
        "flows": flows_view.section(look.options.flows),
    }
    doc["revision"] = revision(look)
    return doc


def revision(look: _Lookups) -> str:
    """An opaque token that changes with the snapshot, the rules' states, which suspects are
    flagged and the host's addresses, and not with rates or ages: the page redraws only then.
    Drawn from what the document is made of, not from the document (hashing that would cost as
    much as building it)."""
    snap = look.snap
    parts = (
        snap.memo(REVISION, lambda _snap: next(_SNAPSHOTS)),
        look.options.rules is not None,
        [look.ports.get((v.container.id, b)) for v in snap.containers for b in v.container.ports],
        sorted(look.masquerade.items()),
        sorted(i for i in look.suspects if _age(look, i) >= look.options.grace),
        look.options.host_addresses,
        sorted((name, sorted(found)) for name, found in (look.options.peers or {}).items()),
        flows_view.revision_part(look.options.flows),
    )
    return hashlib.blake2b(repr(parts).encode(), digest_size=8).hexdigest()


# -- containers and their namespaces ---------------------------------------------------------


def _namespaces(look: _Lookups) -> tuple[list[dict], list[dict], list[dict]]:
    """The namespaces of workloads (each with its containers, its owner first, and interfaces),
    and the host-network and no-network containers."""
    members: dict[str, list[WorkloadView]] = {}
    host_network, no_network = [], []
    for view in look.snap.containers:
        if view.network_mode == "host":
            host_network.extend(_workloads(look, view))
        elif view.network_mode == "none":
            no_network.extend(_workloads(look, view))
        else:
            members.setdefault(view.netns_owner or view.container.id, []).append(view)
    interfaces: dict[str, list[dict]] = {}
    for i in look.snap.interfaces:
        interfaces.setdefault(i.container.id, []).append(_interface(look, i))
    for owner, views in members.items():
        views.sort(key=lambda v: (v.container.id != owner, v.container.name))
    namespaces = [
        {
            "id": owner,
            "shared": len(containers) > 1,
            "pod": _pod(views[0].container),
            "containers": containers,
            "interfaces": interfaces.get(owner, []),
        }
        for owner, views in sorted(members.items(), key=lambda kv: (kv[1][0].container.name, kv[0]))
        for containers in ([w for v in views for w in _workloads(look, v)],)
    ]
    return namespaces, host_network, no_network


def _workloads(look: _Lookups, view: WorkloadView) -> list[dict]:
    """A container; or a pod's running containers, each naming its pod (the sandbox itself while
    none runs)."""
    c = view.container
    if not c.members:
        return [_container(look, view)]
    return [
        _container(look, view) | {"id": m.id, "name": m.name, "image": m.image} for m in c.members
    ]


def _container(look: _Lookups, view: WorkloadView) -> dict:
    c = view.container
    return {
        "id": c.id,
        "name": c.name,
        "runtime": c.runtime,
        "image": c.image,
        "network_mode": view.network_mode,
        "compose_project": c.compose_project,
        "compose_service": c.compose_service,
        "pod": _pod(c),
        "ports": [_published(look, c, b) for b in c.ports],
    }


def _pod(c: Workload) -> dict | None:
    if not c.is_pod:
        return None
    return {"namespace": c.pod_namespace, "name": c.pod_name, "uid": c.pod_uid, "sandbox_id": c.id}


def _published(look: _Lookups, c: Workload, b: PortBinding) -> dict:
    if look.options.rules is None:
        dnat = "unknown"
    else:
        dnat = look.ports.get((c.id, b), "not_expected")
    return {
        "protocol": b.protocol,
        "host_ip": b.host_ip,
        "host_port": b.host_port,
        "container_port": b.container_port,
        "dnat": dnat,
    }


def _interface(look: _Lookups, i: Interface) -> dict:
    """A container-side interface, with the host veth it pairs with (None for macvlan, ipvlan)."""
    nsid = i.container.nsid
    context = look.snap.netns_contexts.get(nsid) if nsid is not None else None
    inside = context[0].get(i.ifindex) if context and context[0] else None
    return {
        "name": i.interface,
        "ifindex": i.ifindex,
        "kind": i.kind,
        "mac": i.mac,
        "state": inside.operstate if inside else "unknown",
        "network": i.network,
        "bridge": i.bridge,
        "addresses": [_address(a) for a in look.addresses.get((nsid, i.ifindex), [])]
        if nsid is not None
        else [],
        "veth": i.veth or None,
        "veth_ifindex": i.veth_ifindex or None,
        "veth_netns": i.netns or None,  # an overlay's namespace: the veth is on its br0
    }


# -- the host side ---------------------------------------------------------------------------


def _port(look: _Lookups, v: Veth) -> dict:
    """A host veth: its state and rates, its bridge, and what is at its other end."""
    link = v.link
    return {
        "name": link.name,
        "ifindex": link.ifindex,
        "state": link.operstate,
        "mac": link.mac,
        "bridge": v.bridge,
        "rx_bps": _rate(look.options.rates.rx.get(link.ifindex)),
        "tx_bps": _rate(look.options.rates.tx.get(link.ifindex)),
        "namespace": look.owner_of_veth.get(link.ifindex, ""),
        "interface": v.interface,
        "orphan": _orphan(look, link.ifindex),
    }


def _orphan(look: _Lookups, ifindex: int) -> dict | None:
    s = look.suspects.get(ifindex)
    if s is None:
        return None
    age = _age(look, ifindex)
    return {
        "reason": s.reason,
        "flagged": age >= look.options.grace,
        "age_seconds": round(age, 1),
    }


def _age(look: _Lookups, ifindex: int) -> float:
    """How long the veth has been a suspect."""
    return look.now - look.snap.suspect_since.get(ifindex, look.now)


def _orphan_entry(v: dict) -> dict:
    return {"veth": v["name"], "ifindex": v["ifindex"], "bridge": v["bridge"], **v["orphan"]}


def _bridges(look: _Lookups, veths: list[dict]) -> list[dict]:
    links = look.snap.links.values()
    networks = {n.bridge: n for n in look.snap.networks.values() if n.bridge}
    ports: dict[int, int] = {}
    for link in links:
        if link.master:
            ports[link.master] = ports.get(link.master, 0) + 1
    by_bridge: dict[str, list[dict]] = {}
    for v in veths:
        by_bridge.setdefault(v["bridge"], []).append(v)
    return [
        _bridge(look, link, networks.get(link.name), ports.get(link.ifindex, 0))
        | {"veths": by_bridge.get(link.name, [])}
        for link in sorted((l for l in links if l.kind == "bridge"), key=lambda l: l.name)
    ]


def _bridge(look: _Lookups, link: Link, n: Network | None, ports: int) -> dict:
    return {
        "name": link.name,
        "ifindex": link.ifindex,
        "state": link.operstate,
        "mac": link.mac,
        "addresses": [_address(a) for a in look.host_addresses.get(link.ifindex, [])],
        "network": n.name if n else "",
        "network_id": n.id if n else "",
        "driver": n.driver if n else "",
        "internal": n.internal if n else False,
        "subnets": [
            {"subnet": s, "gateway": gw, "masquerade": _masquerade(look, n, link.name, s)}
            for s, gw in (n.subnets if n else ())
        ],
        "ports": ports,
        "max_ports": MAX_BRIDGE_PORTS,
    }


def _masquerade(look: _Lookups, n: Network | None, bridge: str, subnet: str) -> str:
    if n is None or n.driver != "bridge" or n.internal or not n.masquerade:
        return "not_expected"
    if look.options.rules is None:
        return "unknown"
    return look.masquerade.get((bridge, subnet), "not_expected")


def _host_interfaces(look: _Lookups) -> list[dict]:
    """The host's own interfaces: everything but veths and bridges (drawn with the bridges)."""
    return [
        {
            "name": l.name,
            "ifindex": l.ifindex,
            "kind": l.kind,
            "state": l.operstate,
            "mac": l.mac,
            "addresses": [_address(a) for a in look.host_addresses.get(l.ifindex, [])],
        }
        for l in sorted(look.snap.links.values(), key=lambda l: l.ifindex)
        if l.kind not in ("veth", "bridge")
    ]


# -- values ----------------------------------------------------------------------------------


def _rule_state(expected: bool, present: bool) -> str:
    if not expected:
        return "not_expected"
    return "present" if present else "missing"


def _rate(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def _address(a: Address) -> dict:
    return {"family": a.family, "address": a.address, "prefix_length": a.prefix_length}
