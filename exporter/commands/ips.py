"""`ips`: every address of every container and pod interface (docker-netns.sh showip, for all
interfaces), with its network: an overlay's for an interface whose veth is on that overlay's br0."""

from __future__ import annotations

from typing import TYPE_CHECKING

from exporter.commands.base import OWNER_COLUMNS, SnapshotCommand, owner_fields
from exporter.core.queries import workload_addresses

if TYPE_CHECKING:
    from exporter.core.topology import Snapshot

COLUMNS = [
    *OWNER_COLUMNS,
    ("interface", "INTERFACE"),
    ("network", "NETWORK"),
    ("address", "ADDRESS"),
]


class IpsCommand(SnapshotCommand):
    name = "ips"
    help = "list each IPv4 and IPv6 address of each container interface, as the kernel has it"
    columns = COLUMNS

    def rows(self, snap: Snapshot) -> list[dict]:
        return rows(snap)


def rows(snap: Snapshot) -> list[dict]:
    return [
        {
            **owner_fields(i.container),
            "interface": i.interface,
            "address": f"{a.address}/{a.prefix_length}",
            "family": a.family,
            "network": i.network,
            "mac": i.mac,
        }
        for i, a in workload_addresses(snap)
    ]
