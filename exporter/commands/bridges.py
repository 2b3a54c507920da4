"""`bridges`: each Linux bridge with its ports and their containers or pods (brctl show, with names):
the host's, then each overlay network's br0 in its namespace, with its VXLAN device and VNI."""

from __future__ import annotations

from typing import TYPE_CHECKING

from exporter.commands.base import SnapshotCommand, owner_fields
from exporter.commands.overlays import overlay_endpoints, overlays
from exporter.core import queries
from exporter.core.overlay import sandbox_at

if TYPE_CHECKING:
    from exporter.core.model import Link, Workload
    from exporter.core.topology import Snapshot

HELP = (
    "list each Linux bridge (the host's, and each overlay's br0 in its namespace) with its id, "
    "STP, state, Docker network, VNI and ports with their containers"
)
COLUMNS = [
    ("bridge", "BRIDGE"),
    ("netns", "NETNS"),
    ("id", "BRIDGE ID"),
    ("stp", "STP"),
    ("state", "STATE"),
    ("network", "NETWORK"),
    ("vni", "VNI"),
    ("port", "PORT"),
    ("port_state", "PORT STATE"),
    ("container_name", "CONTAINER"),
    ("namespace", "NAMESPACE"),
    ("pod", "POD"),
    ("interface", "INTERFACE"),
]
STP = {0: "no", 1: "yes", 2: "yes (user)"}


class BridgesCommand(SnapshotCommand):
    name = "bridges"
    help = HELP
    columns = COLUMNS

    def rows(self, snap: Snapshot) -> list[dict]:
        return rows(snap)

    def table_rows(self, found: list[dict]) -> list[dict]:
        return table_rows(found)


def rows(snap: Snapshot) -> list[dict]:
    """One entry per bridge with its ports nested (the JSON output): the host's by name, then each
    overlay's br0."""
    networks = {n.bridge: n.name for n in snap.networks.values() if n.bridge}
    by_veth = {v.link.ifindex: v for v in snap.veths}
    ports_of = queries.ports_by_bridge(snap)
    out = []
    for bridge in queries.bridges(snap):
        ports = []
        for port in ports_of.get(bridge.ifindex, []):
            v = by_veth.get(port.ifindex)
            c = v.container if v else None
            sandbox = sandbox_at(snap.sandboxes, port.peer_netnsid) if c is None else None
            ports.append(_port(port, c, v.interface if v and c else "", sandbox))
        out.append(_bridge(bridge, networks.get(bridge.name, ""), ports))
    return out + overlay_bridges(snap)


def overlay_bridges(snap: Snapshot) -> list[dict]:
    """Each overlay's br0 in its namespace: its ports are the VXLAN device and a veth per local
    endpoint, with the container interface at its other end (/topology.json's endpoints)."""
    ends = {(e.netns.name, e.veth): e for e in overlay_endpoints(snap)}
    out = []
    for ns, o in overlays(snap):
        bridge = ns.bridge
        if bridge is None:
            continue
        ports = []
        for port in sorted((l for l in ns.links if l.master == bridge.ifindex), key=_name):
            e = ends.get((ns.name, port.name))
            c = e.container if e else None
            ports.append(_port(port, c, e.interface if e and c else "", e.sandbox if e else None))
        head = _bridge(bridge, o["network"] or "", ports)
        head.update(netns=ns.name, netns_path=ns.path, vni=o["vni"] or "", vxlan=o["vxlan"])
        out.append(head)
    return out


def _name(link: Link) -> str:
    return link.name


def _port(port: Link, c: Workload | None, interface: str, sandbox: str | None) -> dict:
    return {
        "port": port.name,
        "kind": port.kind,
        "port_state": queries.port_state(port),
        **owner_fields(c),
        "interface": interface,
        "sandbox": sandbox,  # Swarm's own sandbox at the port's other end, as Docker names it
    }


def _bridge(bridge: Link, network: str, ports: list[dict]) -> dict:
    return {
        "bridge": bridge.name,
        "netns": "",
        "netns_path": "",
        "id": bridge.bridge_id,
        "stp": STP.get(bridge.stp_state, "") if bridge.stp_state is not None else "",
        "state": bridge.operstate,
        "network": network,
        "vni": "",
        "vxlan": None,
        "ports": ports,
    }


def table_rows(bridges: list[dict]) -> list[dict]:
    """brctl's layout: the bridge's columns on its first port's line only."""
    out = []
    for b in bridges:
        head = {k: v for k, v in b.items() if k not in ("ports", "vxlan")}
        for n, port in enumerate(b["ports"] or [{}]):
            if port.get("sandbox"):  # no container: its name in parentheses
                port = dict(port, container_name=f"({port['sandbox']})")
            out.append(dict(head if n == 0 else {}, **port))
    return out
