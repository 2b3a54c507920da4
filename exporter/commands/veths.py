"""`veths`: every container interface and its host veth (docker-netns.sh showveth, exact)."""

from __future__ import annotations

from ..topology import Snapshot

NAME = "veths"
HELP = "list each container interface with its host-side veth, bridge and network"
COLUMNS = [
    ("veth", "VETH"),
    ("container_id", "CONTAINER ID"),
    ("container_name", "NAME"),
    ("interface", "INTERFACE"),
    ("bridge", "BRIDGE"),
    ("network", "NETWORK"),
]


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
