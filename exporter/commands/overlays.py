"""Docker's overlay networks for the commands: what /topology.json shows of each (views/overlay.py),
with the snapshot's objects that rows need (the namespace, its links, the workloads)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from exporter.views import overlay as overlay_view

if TYPE_CHECKING:
    from exporter.core.model import Workload
    from exporter.core.overlay import Namespace
    from exporter.core.topology import Snapshot


@dataclass(frozen=True)
class Endpoint:
    """A veth on an overlay's br0, in the overlay's namespace, and the interface at its other end
    (no container: Swarm's own sandboxes)."""

    netns: Namespace
    veth: str
    container: Workload | None
    interface: str
    bridge: str
    network: str
    sandbox: str | None  # Swarm's own sandbox at its other end, as Docker names it


def overlays(snap: Snapshot) -> list[tuple[Namespace, dict[str, Any]]]:
    """Each overlay namespace with its /topology.json entry."""
    namespaces = {ns.name: ns for ns in snap.overlays}
    return [(namespaces[o["namespace"]], o) for o in overlay_view.overlays(snap)]


def overlay_endpoints(snap: Snapshot) -> list[Endpoint]:
    """Every overlay's local endpoints, each with its container when it has one."""
    workloads = {v.container.id: v.container for v in snap.containers}
    return [
        Endpoint(
            ns,
            e["veth"],
            workloads.get(e["container_id"] or ""),
            e["interface"] or "",
            o["bridge"] or "",
            o["network"] or "",
            e["sandbox"],
        )
        for ns, o in overlays(snap)
        for e in o["endpoints"]
    ]
