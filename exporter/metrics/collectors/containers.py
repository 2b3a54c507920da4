"""Per-container interface counters and container metadata."""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import TYPE_CHECKING

from exporter.core.memo import MemoKey
from exporter.core.model import (
    RX_BYTES,
    RX_DROP,
    RX_ERRS,
    RX_PACKETS,
    TX_BYTES,
    TX_DROP,
    TX_ERRS,
    TX_PACKETS,
    Counters,
    Workload,
)
from exporter.core.queries import owner
from exporter.metrics.collectors.base import Collector, Context
from exporter.metrics.collectors.overlay import overlay_counters
from exporter.metrics.exposition import Family, LabelCache, labels

if TYPE_CHECKING:
    from exporter.core.topology import Interface, Snapshot, WorkloadView
    from exporter.sources.kernel.overlay import NamespaceSockets

# Reads the counters of the host's links by ifindex (netlink's by default; tests give their own).
LinkStats = Callable[[Collection[int]], dict[int, Counters]]

# (metric suffix, column read on the host veth, column read inside the namespace).
# The host end of a veth sees the container's traffic mirrored: what the host
# end transmits, the container receives.
COUNTERS = (
    ("receive_bytes", TX_BYTES, RX_BYTES, "Bytes received by the container on this interface."),
    (
        "receive_packets",
        TX_PACKETS,
        RX_PACKETS,
        "Packets received by the container on this interface.",
    ),
    ("receive_errors", TX_ERRS, RX_ERRS, "Receive errors of the container on this interface."),
    (
        "receive_dropped",
        TX_DROP,
        RX_DROP,
        "Packets dropped on their way into the container on this interface.",
    ),
    ("transmit_bytes", RX_BYTES, TX_BYTES, "Bytes transmitted by the container on this interface."),
    (
        "transmit_packets",
        RX_PACKETS,
        TX_PACKETS,
        "Packets transmitted by the container on this interface.",
    ),
    ("transmit_errors", RX_ERRS, TX_ERRS, "Transmit errors of the container on this interface."),
    (
        "transmit_dropped",
        RX_DROP,
        TX_DROP,
        "Packets the container sent on this interface that were dropped.",
    ),
)


class ContainersCollector(Collector):
    name = "containers"
    help = "per-container interface counters and dockernet_container_info"

    def __init__(
        self,
        context: Context,
        *,
        link_stats: LinkStats | None = None,
        sockets: NamespaceSockets | None = None,
    ) -> None:
        # Here: building the flags (`--help`, every command) needs the class alone.
        from exporter.sources.kernel.netlink import read_link_stats
        from exporter.sources.kernel.overlay import shared_sockets

        self.procfs = context.procfs
        self.link_stats = link_stats or read_link_stats
        self.sockets = sockets or shared_sockets()  # in overlay namespaces, for their veths
        self._info_labels = LabelCache(info_labels)
        self._counter_labels = LabelCache(self.counter_labels)
        # Its own keys: the subclass for pods computes other targets from the same snapshot.
        self._info_key: MemoKey[Family] = MemoKey(f"{self.name} info")
        self._targets_key: MemoKey[tuple[list, frozenset, frozenset]] = MemoKey(
            f"{self.name} targets"
        )

    # What the subclass for pods changes: the prefix of the counters, which workloads it renders,
    # and their metadata.
    prefix = "dockernet_container"
    counter_help = "container"

    @staticmethod
    def selects(c: Workload) -> bool:
        return not c.is_pod

    @staticmethod
    def counter_labels(_key: tuple, i: Interface) -> str:
        return labels(**owner(i.container), interface=i.interface)

    def collect(self, snap: Snapshot) -> list[Family]:
        return self.info(snap) + self._counters(snap)

    def info(self, snap: Snapshot) -> list[Family]:
        return [snap.memo(self._info_key, self.container_info)]

    def container_info(self, snap: Snapshot) -> Family:
        fam = Family(
            "dockernet_container_info",
            "gauge",
            "Metadata of each running container; value is always 1.",
            static=True,
        )
        views = (v for v in snap.containers if self.selects(v.container))
        fam.samples = [
            (ls, 1) for ls in self._info_labels.rendered((v.container.id, v) for v in views)
        ]
        return fam

    def counter_targets(self, snap: Snapshot) -> tuple[list, frozenset, frozenset]:
        """(label set, veth, pid, interface) of each interface, the host veths to read and the
        veths in overlays' namespaces to read. The veth is a host ifindex, (nsid, ifindex) of one in
        an overlay's namespace, or 0: an interface with no veth, read inside its namespace."""
        interfaces = [i for i in snap.interfaces if self.selects(i.container)]
        label_sets = self._counter_labels.rendered(
            ((i.container.id, i.interface), i) for i in interfaces
        )
        # An overlay interface's veth is in the overlay's namespace: keyed (nsid, ifindex) there.
        targets = [
            (ls, i.netns_veth or i.veth_ifindex, i.container.pid, i.interface)
            for ls, i in zip(label_sets, interfaces, strict=True)
        ]
        veths = [t[1] for t in targets if t[1]]
        return (
            targets,
            frozenset(v for v in veths if isinstance(v, int)),
            frozenset(v for v in veths if isinstance(v, tuple)),
        )

    def _counters(self, snap: Snapshot) -> list:
        targets, in_host, in_overlays = snap.memo(self._targets_key, self.counter_targets)
        host: dict[int | tuple[int, int], Counters] = {}
        if in_host:
            host.update(self.link_stats(in_host).items())
        if in_overlays:  # what the overlay collector reads too: once per scrape for both
            _live, overlays = overlay_counters(snap, self.sockets)
            host.update((veth, overlays[veth]) for veth in in_overlays if veth in overlays)
        inside: dict = {}
        # (label set, counter row, whether the row is the other end's: its columns are mirrored)
        rows = [
            (label_set, host.get(veth), True)
            if veth
            else (label_set, self._inside(pid, inside).get(interface), False)
            for label_set, veth, pid, interface in targets
        ]
        found = [(ls, row, host_end) for ls, row, host_end in rows if row is not None]
        return [
            Family(
                f"{self.prefix}_{suffix}_total",
                "counter",
                text.replace("container", self.counter_help),
                [
                    (ls, row[host_column] if host_end else row[inside_column])
                    for ls, row, host_end in found
                ],
            )
            for suffix, host_column, inside_column, text in COUNTERS
        ]

    def _inside(self, pid: int, inside: dict) -> dict:
        """The counters of a container's own namespace (interfaces with no host veth), read once
        per scrape."""
        if pid not in inside:
            try:
                inside[pid] = self.procfs.net_dev(pid)
            except OSError:
                inside[pid] = {}
        return inside[pid]


def info_labels(_container_id: str, view: WorkloadView) -> str:
    c = view.container
    return labels(
        container_id=c.id,
        container_name=c.name,
        runtime=c.runtime,
        image=c.image,
        network_mode=view.network_mode,
        compose_project=c.compose_project,
        compose_service=c.compose_service,
    )
