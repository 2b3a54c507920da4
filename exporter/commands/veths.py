"""`veths`: every container or pod interface and its veth (docker-netns.sh showveth, exact): the
host veths, then the veths on each overlay network's br0, in that overlay's namespace."""

from __future__ import annotations

from typing import TYPE_CHECKING

from exporter.commands.base import OWNER_COLUMNS, SnapshotCommand, owner_fields
from exporter.commands.overlays import overlay_endpoints
from exporter.core.overlay import sandbox_at

if TYPE_CHECKING:
    from exporter.core.topology import Snapshot, Veth

COLUMNS = [
    ("veth", "VETH"),
    ("netns", "NETNS"),
    *OWNER_COLUMNS,
    ("interface", "INTERFACE"),
    ("bridge", "BRIDGE"),
    ("network", "NETWORK"),
]


class VethsCommand(SnapshotCommand):
    name = "veths"
    help = (
        "list each container interface with its veth (in the host, or on an overlay's br0 in its "
        "namespace), bridge and network"
    )
    columns = COLUMNS

    def rows(self, snap: Snapshot) -> list[dict]:
        return rows(snap)

    def table_rows(self, found: list[dict]) -> list[dict]:
        return table_rows(found)


def rows(snap: Snapshot) -> list[dict]:
    """A pod's veth names its namespace and pod (and the sandbox id in the JSON), a container's
    its id and name. `netns` is "" for a veth in the host namespace, else the file of the overlay's
    namespace under Docker's exec root (`netns_path`)."""
    return [_row(v, snap.sandboxes) for v in snap.veths] + [
        {
            "veth": e.veth,
            "netns": e.netns.name,
            "netns_path": e.netns.path,
            **owner_fields(e.container),
            "interface": e.interface,
            "bridge": e.bridge,
            "network": e.network,
            "sandbox": e.sandbox,
        }
        for e in overlay_endpoints(snap)
    ]


def _row(v: Veth, sandboxes: dict[int, str]) -> dict:
    return {
        "veth": v.link.name,
        "netns": "",
        "netns_path": "",
        **owner_fields(v.container),
        "interface": v.interface,
        "bridge": v.bridge,
        "network": v.network,
        "sandbox": sandbox_at(sandboxes, v.link.peer_netnsid) if v.container is None else None,
    }


def table_rows(rows: list[dict]) -> list[dict]:
    """A Swarm sandbox's name in the NAME column, in parentheses: it is no container."""
    return [dict(r, container_name=f"({r['sandbox']})") if r["sandbox"] else r for r in rows]
