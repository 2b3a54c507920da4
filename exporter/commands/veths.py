"""`veths`: every container interface and its host veth (docker-netns.sh showveth, exact)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .base import SnapshotCommand

if TYPE_CHECKING:
    from ..topology import Snapshot

COLUMNS = [
    ("veth", "VETH"),
    ("container_id", "CONTAINER ID"),
    ("container_name", "NAME"),
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
    return [
        {
            "veth": v.link.name,
            "container_id": v.container.id if v.container else "",
            "container_name": v.container.name if v.container else "",
            "interface": v.interface,
            "bridge": v.bridge,
            "network": v.network,
        }
        for v in snap.veths
    ]
