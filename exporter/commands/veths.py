"""`veths`: every container or pod interface and its host veth (docker-netns.sh showveth, exact)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from exporter.commands.base import OWNER_COLUMNS, SnapshotCommand, owner_fields

if TYPE_CHECKING:
    from exporter.core.topology import Snapshot, Veth

COLUMNS = [
    ("veth", "VETH"),
    *OWNER_COLUMNS,
    ("interface", "INTERFACE"),
    ("bridge", "BRIDGE"),
    ("network", "NETWORK"),
]


class VethsCommand(SnapshotCommand):
    name = "veths"
    help = "list each container interface with its host-side veth, bridge and network"
    columns = COLUMNS

    def rows(self, snap: Snapshot) -> list[dict]:
        return rows(snap)


def rows(snap: Snapshot) -> list[dict]:
    """A pod's veth names its namespace and pod (and the sandbox id in the JSON), a container's
    its id and name."""
    return [_row(v) for v in snap.veths]


def _row(v: Veth) -> dict:
    return {
        "veth": v.link.name,
        **owner_fields(v.container),
        "interface": v.interface,
        "bridge": v.bridge,
        "network": v.network,
    }
