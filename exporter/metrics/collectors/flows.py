"""Flows between workloads, from the host's conntrack table (docs/flows.md).

A thread of its own follows the table over ctnetlink (sources/kernel/conntrack.py): one dump at
start, then the NEW, UPDATE and DESTROY events; when the kernel dropped events (ENOBUFS) it counts
them and reconciles with a fresh dump. Each connection is attributed to workloads by address
(core/flows.py) with the latest snapshot. A scrape renders the series as they stand, for the
workloads of its own snapshot: its cost grows with the series, not with the table.
"""

from __future__ import annotations

import argparse
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from exporter import logs
from exporter.app.flags import byte_size, positive_duration
from exporter.core import flow_peers, flows
from exporter.core.flow_peers import Attribution
from exporter.core.flows import Entry, Flows, Key
from exporter.core.memo import MemoKey
from exporter.metrics.collectors.base import Collector, Context, Option
from exporter.metrics.exposition import Family, LabelCache, labels
from exporter.sources.kernel import conntrack, conntrack_events
from exporter.sources.kernel.netlink import Netlink

if TYPE_CHECKING:
    from exporter.core.topology import Snapshot

# The peers whose series are shown: the workloads of the snapshot, and "host", "external".
SHOWN: MemoKey[frozenset[flow_peers.Peer]] = MemoKey("flows shown")

log = logs.get_logger()

SYSCTL_ACCT = "sys/net/netfilter/nf_conntrack_acct"
SYSCTL_COUNT = "sys/net/netfilter/nf_conntrack_count"
SYSCTL_BRIDGE = "sys/net/bridge/bridge-nf-call-iptables"
SYSFS_NET = "/sys/class/net"
RETRY_SECONDS = 5.0
ATTRIBUTION_MAX_AGE = 60.0  # the host's own addresses are read again at least this often

# (family, series index, help): the series of each (source, destination, protocol, port).
SERIES = (
    (
        "dockernet_flow_connections_opened_total",
        flows.OPENED,
        "counter",
        "Connections opened from source to destination (port: the server's port).",
    ),
    (
        "dockernet_flow_connections_unanswered_total",
        flows.UNANSWERED,
        "counter",
        "Connections that got no reply packet at all, counted once: after "
        "--collector.flows.unanswered-after without one, or when they end without one.",
    ),
    (
        "dockernet_flow_connections",
        flows.OPEN,
        "gauge",
        "Connections from source to destination open now (in the host's conntrack table).",
    ),
)
ACCOUNTED = (
    ("dockernet_flow_sent_bytes_total", flows.SENT_BYTES, "Bytes the source sent"),
    ("dockernet_flow_sent_packets_total", flows.SENT_PACKETS, "Packets the source sent"),
    ("dockernet_flow_received_bytes_total", flows.RECEIVED_BYTES, "Bytes the source received"),
    (
        "dockernet_flow_received_packets_total",
        flows.RECEIVED_PACKETS,
        "Packets the source received",
    ),
)


def positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"invalid count {text!r}: a whole number, at least 1")
    return int(text)


def read_int(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def ephemeral_range(procfs: str) -> tuple[int, int]:
    try:
        low, high = Path(procfs, "sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return flows.EPHEMERAL


def key_labels(key: Key, _same: object = None) -> str:
    source, destination, protocol, port = key
    return labels(
        source=source.name,
        source_namespace=source.namespace,
        destination=destination.name,
        destination_namespace=destination.namespace,
        protocol=protocol,
        port=port,
    )


class Follower:
    """The thread that keeps a Flows up to date with the kernel's table."""

    def __init__(
        self,
        table: Flows,
        snapshot: Callable[[], Snapshot],
        procfs: str,
        rcvbuf: int,
        counters_interval: float,
        workloads_read: Callable[[Snapshot], bool] = lambda snap: bool(snap.runtimes_up),
    ) -> None:
        self.table = table
        self.workloads_read = workloads_read
        self.snapshot = snapshot
        self.procfs = procfs
        self.rcvbuf = rcvbuf
        self.counters_interval = counters_interval
        self.lock = threading.Lock()
        self.lost = 0
        self.resyncs = 0
        # Why the table is not followed, while it is not: a scrape then marks the collector failed.
        self.error: str | None = "the conntrack table is not read yet"
        self.reading = True  # until the first read of the table is applied, or has failed
        self._stopping = threading.Event()
        self._monitor: conntrack_events.EventMonitor | None = None
        self._netlink: Netlink | None = None
        self._attr: tuple[Snapshot | None, float, Attribution] | None = None
        self._next_counters = 0.0
        self.thread = threading.Thread(target=self._run, name="flows", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._monitor is not None:
            self._monitor.stop()
        self.thread.join(2.0)

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                self._follow()
            except OSError as exc:
                self.error = str(exc)
                self.reading = False
                log.error("flows_failed", error=self.error)
                self._stopping.wait(RETRY_SECONDS)
            finally:
                if self._netlink is not None:
                    self._netlink.close()
                    self._netlink = None

    def _follow(self) -> None:
        self._netlink = Netlink()
        self._attr = None
        monitor = conntrack_events.EventMonitor(
            self._on_events, self._on_overflow, self._on_idle, self.rcvbuf, self._keep
        )
        self._monitor = monitor
        if self._stopping.is_set():
            monitor.stop()
        # The snapshot before the daemon's first read of the runtimes knows no workload.
        while not self.workloads_read(self.snapshot()) and not self._stopping.wait(0.1):
            pass
        attr = self.attribution()
        entries = self._dump(attr)
        with self.lock:
            self.table.start(entries, time.monotonic(), attr)
            self.table.retain(flow_peers.live(self.snapshot()))
        self.error = None
        self.reading = False
        log.debug("flows_following", connections=len(entries))
        monitor.run()

    def attribution(self) -> Attribution:
        """The attribution of the current snapshot, built again when it changes (then the series
        of workloads gone are dropped) or has grown old."""
        snap, now = self.snapshot(), time.monotonic()
        cached = self._attr
        if cached is not None and cached[0] is snap and now - cached[1] < ATTRIBUTION_MAX_AGE:
            return cached[2]
        host = self._netlink.addresses() if self._netlink else []
        attr = flow_peers.attribution(snap, host)
        if cached is not None and cached[0] is not snap:
            with self.lock:
                self.table.retain(flow_peers.live(snap))
        self._attr = (snap, now, attr)
        return attr

    def _keep(self) -> conntrack.Keep | None:
        """Events between the host and the outside are not decoded past their tuples."""
        return self.attribution().keep

    def _dump(self, attr: Attribution) -> list[Entry]:
        """The entries of a fresh dump that involve a workload (the others are never kept)."""
        return conntrack.dump(attr.keep)

    def _on_events(self, batch: list[tuple[str, Entry]]) -> None:
        now, attr = time.monotonic(), self.attribution()
        with self.lock:
            for kind, entry in batch:
                self.table.event(kind, entry, now, attr)

    def _on_overflow(self, lost: int | None) -> None:
        attr = self.attribution()
        entries = self._dump(attr)
        with self.lock:
            self.lost += lost if lost else 1
            self.resyncs += 1
            self.table.resync(entries, time.monotonic(), attr)
        log.warning("flows_events_lost", lost=lost, connections=len(entries))

    def _on_idle(self) -> float:
        """Due verdicts, and counters while accounting is on; how long the next wait may be."""
        now, attr = time.monotonic(), self.attribution()
        if now >= self._next_counters:
            self._next_counters = now + self.counters_interval
            if read_int(Path(self.procfs, SYSCTL_ACCT)) == 1:
                self._refresh_counters(attr)
        with self.lock:
            due = self.table.tick(now, attr)
        return 1.0 if due is None else min(1.0, max(0.0, due - time.monotonic()) + 0.001)

    def tick(self) -> None:
        """The verdicts due now, with the latest attribution (the thread may be stopped)."""
        if self._attr is not None:
            with self.lock:
                self.table.tick(time.monotonic(), self._attr[2])

    def _refresh_counters(self, attr: Attribution) -> None:
        known = self.table.conns  # written by this thread only: read without the lock
        if not known:
            return
        entries = [e for e in conntrack.dump(attr.keep) if e.id in known and e.counters is not None]
        with self.lock:
            self.table.refresh(entries)


class FlowsCollector(Collector):
    name = "flows"
    help = (
        "dockernet_flow_*: connections between workloads (opened, unanswered, open, bytes), "
        "from the host's conntrack table"
    )
    default = False
    options = (
        Option(
            "max-peers",
            positive_int,
            "20",
            "destinations kept apart per source; connections to any further one are counted "
            "under destination=other",
        ),
        Option(
            "unanswered-after",
            positive_duration,
            "3s",
            "a connection without a reply packet this long is counted unanswered",
        ),
        Option(
            "rcvbuf",
            byte_size,
            "8MiB",
            "receive buffer of the conntrack event socket; when it overflows, the lost events "
            "are counted and the table is read again",
        ),
        Option(
            "counters-interval",
            positive_duration,
            "15s",
            "while nf_conntrack_acct is on, read the byte and packet counters of open "
            "connections this often (the kernel reports them in events only when a "
            "connection ends)",
        ),
    )

    def __init__(self, context: Context, **options: Any) -> None:
        # Keyword arguments named like the options, hyphens and all.
        given = {o.name: o.type(o.default) for o in FlowsCollector.options} | options
        self.procfs = context.procfs.root
        self.rcvbuf: int = given["rcvbuf"]
        self.counters_interval: float = given["counters-interval"]
        self.table = Flows(
            max_peers=given["max-peers"],
            unanswered_after=given["unanswered-after"],
            ephemeral=ephemeral_range(self.procfs),
        )
        self.follower: Follower | None = None
        self._labels: LabelCache = LabelCache(key_labels)

    def start(self, snapshot: Callable[[], Snapshot]) -> None:
        self.follower = Follower(
            self.table, snapshot, self.procfs, self.rcvbuf, self.counters_interval
        )
        self.follower.start()

    def stop(self) -> None:
        if self.follower is not None:
            self.follower.stop()

    def rows(self, snap: Snapshot) -> list[tuple[Key, list[int]]]:
        """The series of the workloads of ``snap`` as they stand (what a scrape and the topology
        page show); RuntimeError while the table is not followed."""
        follower = self.follower
        if follower is None or follower.error is not None:
            raise RuntimeError(follower.error if follower else "the flows collector is not started")
        # The workloads of this snapshot, and the peers that are none (host, external, other).
        shown = snap.memo(SHOWN, lambda s: flow_peers.live(s) | flow_peers.NOT_WORKLOADS)
        with follower.lock:
            return [
                (k, list(v))
                for k, v in self.table.series.items()
                if k[0] in shown and k[1] in shown
            ]

    def collect(self, snap: Snapshot) -> list[Family]:
        rows = self.rows(snap)
        lost = self.follower.lost if self.follower else 0
        label_sets = self._labels.rendered((k, k) for k, _row in rows)
        accounting = read_int(Path(self.procfs, SYSCTL_ACCT)) == 1
        values = [row for _key, row in rows]

        def family(name: str, kind: str, text: str, index: int) -> Family:
            return Family(
                name, kind, text, [(ls, v[index]) for ls, v in zip(label_sets, values, strict=True)]
            )

        out = [family(name, kind, text, i) for name, i, kind, text in SERIES]
        if accounting:
            out += [
                family(
                    name, "counter", f"{text}, from the conntrack counters (nf_conntrack_acct).", i
                )
                for name, i, text in ACCOUNTED
            ]
        return out + self._state_families(snap, accounting, lost)

    def _state_families(self, snap: Snapshot, accounting: bool, lost: int) -> list[Family]:
        entries = read_int(Path(self.procfs, SYSCTL_COUNT))
        return [
            Family(
                "dockernet_flow_accounting_enabled",
                "gauge",
                "Whether the host's conntrack counts bytes and packets (nf_conntrack_acct); "
                "the byte and packet families exist only while it does.",
                [("", int(accounting))],
            ),
            Family(
                "dockernet_flow_visibility",
                "gauge",
                "Whether the traffic between the containers of this bridge reaches the host's "
                "conntrack (br_netfilter loaded, bridge-nf-call-iptables on): 0 means its flows "
                "are not seen, not that there are none.",
                [(labels(bridge=b), v) for b, v in self._visibility(snap)],
            ),
            Family(
                "dockernet_flow_events_lost_total",
                "counter",
                "Conntrack events the kernel dropped for want of room in the exporter's socket "
                "(each loss is followed by a fresh read of the table).",
                [("", lost)],
            ),
            Family(
                "dockernet_flow_table_entries",
                "gauge",
                "Entries in the host's conntrack table (nf_conntrack_count).",
                [("", entries)] if entries is not None else [],
            ),
        ]

    def _visibility(self, snap: Snapshot) -> list[tuple[str, int]]:
        on = read_int(Path(self.procfs, SYSCTL_BRIDGE))  # None: br_netfilter is not loaded
        bridges = sorted(l.name for l in snap.links.values() if l.kind == "bridge")
        out = []
        for bridge in bridges:
            own = read_int(Path(SYSFS_NET, bridge, "bridge/nf_call_iptables"))
            out.append((bridge, int(on is not None and (on == 1 or own == 1))))
        return out
