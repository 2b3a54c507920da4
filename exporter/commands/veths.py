"""`veths`: every container or pod interface and its host veth (docker-netns.sh showveth, exact)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .base import SnapshotCommand

if TYPE_CHECKING:
    from ..topology import Snapshot, Veth

COLUMNS = [
    ("veth", "VETH"),
    ("container_id", "CONTAINER ID"),
    ("container_name", "NAME"),
    ("namespace", "NAMESPACE"),
    ("pod", "POD"),
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
    c = v.container
    pod = c is not None and c.is_pod
    row = {
        "veth": v.link.name,
        "container_id": c.id if c and not pod else "",
        "container_name": c.name if c and not pod else "",
        "namespace": c.pod_namespace if c else "",
        "pod": c.pod_name if c else "",
        "interface": v.interface,
        "bridge": v.bridge,
        "network": v.network,
    }
    if c is not None and pod:
        row["sandbox_id"] = c.id
    return row
