"""`bridges`: each Linux bridge with its ports and their containers or pods (brctl show, with names)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from exporter.commands.base import SnapshotCommand, owner_fields
from exporter.core import queries

if TYPE_CHECKING:
    from exporter.core.topology import Snapshot

HELP = (
    "list each Linux bridge with its id, STP, state, Docker network and ports with their containers"
)
COLUMNS = [
    ("bridge", "BRIDGE"),
    ("id", "BRIDGE ID"),
    ("stp", "STP"),
    ("state", "STATE"),
    ("network", "NETWORK"),
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
    """One entry per bridge with its ports nested (the JSON output)."""
    networks = {n.bridge: n.name for n in snap.networks.values() if n.bridge}
    by_veth = {v.link.ifindex: v for v in snap.veths}
    ports_of = queries.ports_by_bridge(snap)
    out = []
    for bridge in queries.bridges(snap):
        ports = []
        for port in ports_of.get(bridge.ifindex, []):
            v = by_veth.get(port.ifindex)
            c = v.container if v else None
            ports.append(
                {
                    "port": port.name,
                    "port_state": queries.port_state(port),
                    **owner_fields(c),
                    "interface": v.interface if v and c else "",
                }
            )
        out.append(
            {
                "bridge": bridge.name,
                "id": bridge.bridge_id,
                "stp": STP.get(bridge.stp_state, "") if bridge.stp_state is not None else "",
                "state": bridge.operstate,
                "network": networks.get(bridge.name, ""),
                "ports": ports,
            }
        )
    return out


def table_rows(bridges: list[dict]) -> list[dict]:
    """brctl's layout: the bridge's columns on its first port's line only."""
    out = []
    for b in bridges:
        head = {k: v for k, v in b.items() if k != "ports"}
        for n, port in enumerate(b["ports"] or [{}]):
            out.append(dict(head if n == 0 else {}, **port))
    return out
