"""What the readers of a snapshot ask of it, answered once for the collectors, the commands and
the topology page: who a workload is to its series and rows, the addresses of each workload
interface, the bridges and their ports. Pure: plain data in, plain data out."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from exporter.core.model import Address, Link, Workload
    from exporter.core.topology import Interface, Snapshot

# Who a series or a row belongs to, every key present: a pod's namespace and pod, or a Docker or
# Podman container's id and name.
OWNER_KEYS = ("container_id", "container_name", "namespace", "pod")
# IFLA_BRPORT_STATE values (BR_STATE_*).
PORT_STATES = ("disabled", "listening", "learning", "forwarding", "blocking")


def owner(c: Workload) -> dict[str, str]:
    """A pod is its namespace and pod (kube-state-metrics' join keys), a container its id and name."""
    if c.is_pod:
        return {"namespace": c.pod_namespace, "pod": c.pod_name}
    return {"container_id": c.id, "container_name": c.name}


def owner_columns(c: Workload | None) -> dict[str, str]:
    """Every key of OWNER_KEYS, in that order; those that do not apply, or all of them for no
    workload, empty."""
    found = owner(c) if c is not None else {}
    return {key: found.get(key, "") for key in OWNER_KEYS}


def workload_addresses(snap: Snapshot) -> list[tuple[Interface, Address]]:
    """(interface, address) pairs; the kernel's addresses of the interface's own namespace."""
    by_ifindex: dict[tuple[int, int], list[Address]] = {}
    for nsid, addresses in snap.addresses.items():
        for a in addresses:
            by_ifindex.setdefault((nsid, a.ifindex), []).append(a)
    return [
        (i, a)
        for i in snap.interfaces
        if i.container.nsid is not None
        for a in by_ifindex.get((i.container.nsid, i.ifindex), ())
    ]


def bridges(snap: Snapshot) -> list[Link]:
    """The Linux bridges of the host namespace, by name."""
    return sorted((l for l in snap.links.values() if l.kind == "bridge"), key=lambda l: l.name)


def grouped_ports(snap: Snapshot) -> dict[int, tuple[Link, ...]]:
    """Bridge ifindex -> its ports, in the snapshot's link order."""
    out: dict[int, list[Link]] = {}
    for l in snap.links.values():
        if l.master:
            out.setdefault(l.master, []).append(l)
    return {master: tuple(ports) for master, ports in out.items()}


def ports_by_bridge(snap: Snapshot) -> dict[int, list[Link]]:
    """Bridge ifindex -> its ports, by name."""
    return {
        master: sorted(ports, key=lambda l: l.name) for master, ports in grouped_ports(snap).items()
    }


def port_state(link: Link) -> str:
    """A bridge port's STP state by name, or 'unknown'."""
    if link.port_state is None or link.port_state >= len(PORT_STATES):
        return "unknown"
    return PORT_STATES[link.port_state]
