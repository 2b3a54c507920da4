"""`veths`: every container or pod interface and its veth (docker-netns.sh showveth, exact): the
host veths, then the veths on each overlay network's br0, in that overlay's namespace."""

from __future__ import annotations

from typing import TYPE_CHECKING

from exporter.commands.base import OWNER_COLUMNS, SnapshotCommand, owner_fields
from exporter.commands.overlays import overlay_endpoints

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


def rows(snap: Snapshot) -> list[dict]:
    """A pod's veth names its namespace and pod (and the sandbox id in the JSON), a container's
    its id and name. `netns` is "" for a veth in the host namespace, else the file of the overlay's
    namespace under Docker's exec root (`netns_path`)."""
    return [_row(v) for v in snap.veths] + [
        {
            "veth": e.veth,
            "netns": e.netns.name,
            "netns_path": e.netns.path,
            **owner_fields(e.container),
            "interface": e.interface,
            "bridge": e.bridge,
            "network": e.network,
        }
        for e in overlay_endpoints(snap)
    ]


def _row(v: Veth) -> dict:
    return {
        "veth": v.link.name,
        "netns": "",
        "netns_path": "",
        **owner_fields(v.container),
        "interface": v.interface,
        "bridge": v.bridge,
        "network": v.network,
    }
