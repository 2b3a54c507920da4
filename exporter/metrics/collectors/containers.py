"""Per-container interface counters and container metadata."""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import TYPE_CHECKING, NamedTuple, cast

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
from exporter.metrics.exposition import Family, LabelCache, labels, sample_head, sample_lines

if TYPE_CHECKING:
    from exporter.core.topology import Interface, Snapshot, WorkloadView
    from exporter.sources.kernel.overlay import NamespaceSockets

# Reads the counters of the host's links by ifindex (netlink's by default; tests give their own).
LinkStats = Callable[[Collection[int]], dict[int, Counters]]

# (metric suffix, column of the host veth's row, help). The host end of a veth sees the
# container's traffic mirrored: what the host end transmits, the container receives. A row read
# inside the container's namespace is mirrored to the host end's view first (as_host_end).
COUNTERS = (
    ("receive_bytes", TX_BYTES, "Bytes received by the container on this interface."),
    ("receive_packets", TX_PACKETS, "Packets received by the container on this interface."),
    ("receive_errors", TX_ERRS, "Receive errors of the container on this interface."),
    (
        "receive_dropped",
        TX_DROP,
        "Packets dropped on their way into the container on this interface.",
    ),
    ("transmit_bytes", RX_BYTES, "Bytes transmitted by the container on this interface."),
    ("transmit_packets", RX_PACKETS, "Packets transmitted by the container on this interface."),
    ("transmit_errors", RX_ERRS, "Transmit errors of the container on this interface."),
    (
        "transmit_dropped",
        RX_DROP,
        "Packets the container sent on this interface that were dropped.",
    ),
)


class Targets(NamedTuple):
    """What a snapshot's counters are read from and rendered with: (veth, pid, interface) of each
    interface (the veth a host ifindex, (nsid, ifindex) of one in an overlay's namespace, or 0:
    an interface with no veth, read inside its namespace); the heads of its sample lines, one per
    family of COUNTERS, and the same by family; the host veths and the overlays' veths to read."""

    targets: list[tuple[int | tuple[int, int], int, str]]
    heads: list[tuple[str, ...]]
    by_family: list[tuple[str, ...]]
    in_host: frozenset[int]
    in_overlays: frozenset[tuple[int, int]]


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
        self._counter_heads = LabelCache(self.counter_heads)
        # Its own keys: the subclass for pods computes other targets from the same snapshot.
        self._info_key: MemoKey[Family] = MemoKey(f"{self.name} info")
        self._targets_key: MemoKey[Targets] = MemoKey(f"{self.name} targets")
        # (name, help, column of the host end's row) of each family of COUNTERS.
        self._families = [
            (f"{self.prefix}_{suffix}_total", text.replace("container", self.counter_help), column)
            for suffix, column, text in COUNTERS
        ]

    # What the subclass for pods changes: the prefix of the counters, which workloads it renders,
    # and their metadata.
    prefix = "dockernet_container"
    counter_help = "container"

    @staticmethod
    def selects(c: Workload) -> bool:
        return not c.is_pod

    def counter_heads(self, _key: tuple, i: Interface) -> tuple[str, ...]:
        """The heads of the interface's sample lines, one per family of COUNTERS."""
        label_set = labels(**owner(i.container), interface=i.interface)
        return tuple(sample_head(name, label_set) for name, _help, _column in self._families)

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

    def counter_targets(self, snap: Snapshot) -> Targets:
        interfaces = [i for i in snap.interfaces if self.selects(i.container)]
        heads = self._counter_heads.rendered(((i.container.id, i.interface), i) for i in interfaces)
        # An overlay interface's veth is in the overlay's namespace: keyed (nsid, ifindex) there.
        targets = [
            (i.netns_veth or i.veth_ifindex, i.container.pid, i.interface) for i in interfaces
        ]
        veths = [veth for veth, _pid, _interface in targets if veth]
        return Targets(
            targets,
            heads,
            by_family(heads),
            frozenset(v for v in veths if isinstance(v, int)),
            frozenset(v for v in veths if isinstance(v, tuple)),
        )

    def _counters(self, snap: Snapshot) -> list[Family]:
        found = snap.memo(self._targets_key, self.counter_targets)
        host: dict[int | tuple[int, int], Counters] = {}
        if found.in_host:
            host.update(self.link_stats(found.in_host).items())
        if found.in_overlays:  # what the overlay collector reads too: once per scrape for both
            _live, overlays = overlay_counters(snap, self.sockets)
            for nsid, ifindex in found.in_overlays:
                row = overlays.get(nsid, {}).get(ifindex)
                if row is not None:
                    host[nsid, ifindex] = row
        inside: dict = {}
        rows = [
            host.get(veth) if veth else as_host_end(self._inside(pid, inside).get(interface))
            for veth, pid, interface in found.targets
        ]
        heads = found.by_family
        if None in rows:  # interfaces gone since the snapshot: no samples
            kept = [(h, row) for h, row in zip(found.heads, rows, strict=True) if row is not None]
            heads, rows = by_family([h for h, _ in kept]), [row for _, row in kept]
        columns = list(zip(*rows, strict=True)) if rows else [()] * len(COUNTERS)
        return [
            Family(name, "counter", text, lines=sample_lines(family_heads, columns[column]))
            for (name, text, column), family_heads in zip(self._families, heads, strict=True)
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


def by_family(heads: list[tuple[str, ...]]) -> list[tuple[str, ...]]:
    """Each interface's heads, one per family, regrouped as each family's heads."""
    return list(zip(*heads, strict=True)) if heads else [()] * len(COUNTERS)


def as_host_end(row: Counters | None) -> Counters | None:
    """A row read inside the container's namespace as its host veth counts it: what the container
    receives, the veth transmits."""
    return None if row is None else cast(Counters, row[TX_BYTES:] + row[:TX_BYTES])


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
