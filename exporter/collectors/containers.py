"""Per-container interface counters and container metadata."""
from __future__ import annotations

from ..exposition import Family, labels
from ..sources.procfs import (RX_BYTES, RX_DROP, RX_ERRS, RX_PACKETS, TX_BYTES, TX_DROP, TX_ERRS,
                              TX_PACKETS, Procfs)
from ..topology import Snapshot

# (metric suffix, column read on the host veth, column read inside the namespace).
# The host end of a veth sees the container's traffic mirrored: what the host
# end transmits, the container receives.
COUNTERS = (
    ("receive_bytes", TX_BYTES, RX_BYTES, "Bytes received by the container on this interface."),
    ("receive_packets", TX_PACKETS, RX_PACKETS, "Packets received by the container on this interface."),
    ("receive_errors", TX_ERRS, RX_ERRS, "Receive errors of the container on this interface."),
    ("receive_dropped", TX_DROP, RX_DROP,
     "Packets dropped on their way into the container on this interface."),
    ("transmit_bytes", RX_BYTES, TX_BYTES, "Bytes transmitted by the container on this interface."),
    ("transmit_packets", RX_PACKETS, TX_PACKETS, "Packets transmitted by the container on this interface."),
    ("transmit_errors", RX_ERRS, TX_ERRS, "Transmit errors of the container on this interface."),
    ("transmit_dropped", RX_DROP, TX_DROP,
     "Packets the container sent on this interface that were dropped."),
)


class ContainersCollector:
    name = "containers"
    help = "per-container interface counters and dockernet_container_info"
    default = True

    def __init__(self, procfs: Procfs, **_options) -> None:
        self.procfs = procfs

    def collect(self, snap: Snapshot) -> list:
        return [snap.memo("container_info", container_info)] + self._counters(snap)

    def _counters(self, snap: Snapshot) -> list:
        targets, veths = snap.memo("counter_targets", counter_targets)
        host = self.procfs.net_dev(only=veths)
        inside: dict = {}
        families = [Family(f"dockernet_container_{suffix}_total", "counter", text)
                    for suffix, _, _, text in COUNTERS]
        for label_set, veth, pid, interface in targets:
            row, columns = self._row(veth, pid, interface, host, inside)
            if row is None:
                continue
            for fam, column in zip(families, columns):
                fam.samples.append((label_set, row[column]))
        return families

    def _row(self, veth: str, pid: int, interface: str, host: dict, inside: dict):
        """The counter row of one interface and the columns to read from it."""
        if veth:
            return host.get(veth), [c[1] for c in COUNTERS]
        if pid not in inside:
            try:
                inside[pid] = self.procfs.net_dev(pid)
            except OSError:
                inside[pid] = {}
        return inside[pid].get(interface), [c[2] for c in COUNTERS]


def container_info(snap: Snapshot) -> Family:
    fam = Family("dockernet_container_info", "gauge", "Metadata of each running container; value is always 1.",
                 static=True)
    for view in snap.containers:
        c = view.container
        fam.add(labels(container_id=c.id, container_name=c.name, image=c.image,
                       network_mode=view.network_mode, compose_project=c.compose_project,
                       compose_service=c.compose_service), 1)
    return fam


def counter_targets(snap: Snapshot) -> tuple[list, frozenset]:
    """(label set, host veth, pid, interface) of each container interface, and the veths to read."""
    targets = [(labels(container_id=i.container.id, container_name=i.container.name, interface=i.interface),
                i.veth, i.container.pid, i.interface) for i in snap.interfaces]
    return targets, frozenset(t[1] for t in targets if t[1])
