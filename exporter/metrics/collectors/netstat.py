"""Per-namespace network health: the TCP, UDP and IP counters, socket counts and conntrack
statistics of each container's own network namespace, and the host's conntrack table.

Each namespace is read through its owner's pid (``/proc/<pid>/net/...``): a namespace shared
by several containers is read once and reported under its owner, host-network containers get no
series (they would repeat the host's numbers), and a namespace that goes away mid-read is
skipped. The kernel's own cost of these files is about 200 µs per namespace, so by default a
sampler thread reads every namespace each ``--collector.netstat.interval``, keeping each one's
files open between passes, and the scrape serves its latest sample, for the owners of the
scrape's snapshot only (interval 0: read during the scrape). The host's conntrack table (three
small files) is read during the scrape. The families are declared in netstat_fields.py.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable, Mapping
from typing import TYPE_CHECKING

from exporter import logs
from exporter.app.flags import duration
from exporter.core.memo import MemoKey
from exporter.core.queries import owner
from exporter.metrics.collectors.base import Collector, Context, Option
from exporter.metrics.collectors.netstat_fields import (
    BY_KEY,
    HOST_CONNTRACK,
    Field,
    parse_fields,
    wanted_of,
)
from exporter.metrics.exposition import Family, LabelCache, labels
from exporter.sources.kernel.netstat import (
    NamespaceReader,
    Reading,
    Sample,
    Sampler,
    read_host_conntrack,
)

if TYPE_CHECKING:
    from exporter.core.topology import Snapshot, WorkloadView

TARGETS: MemoKey[list[Target]] = MemoKey("netstat targets")
NAMESPACES: MemoKey[dict[Hashable, int]] = MemoKey("netstat namespaces")

log = logs.get_logger()


def owner_labels(view: WorkloadView) -> str:
    """The owner of a namespace as label pairs without braces, those of the interface counters:
    namespace and pod for a pod, container_id and container_name for a container."""
    return labels(**owner(view.container))[1:-1]


OWNERS = ("container", "pod")
Target = tuple[str, int, Hashable, dict[str, str]]  # owner kind, pid, namespace key, label sets
Found = list[tuple[str, dict[str, str], Reading]]
DEFAULT_INTERVAL = "15s"
DEFAULT_FIELDS = "dashboards"

# The sampler's own cost and staleness, served when it runs: (metric, help, Sample attribute).
SAMPLE_GAUGES = (
    (
        "dockernet_netstat_sample_duration_seconds",
        "How long the latest sample of every namespace took.",
        "seconds",
    ),
    (
        "dockernet_netstat_sample_cpu_seconds",
        "CPU time the sampler thread spent on the latest sample of every namespace.",
        "cpu_seconds",
    ),
    (
        "dockernet_netstat_sample_namespaces",
        "Namespaces read by the latest sample of every namespace.",
        "namespaces",
    ),
)


class NetstatCollector(Collector):
    name = "netstat"
    help = (
        "TCP/UDP/IP counters, sockets and conntrack of each container namespace, "
        "and the host's conntrack table"
    )
    # On: the sampler reads every namespace off the scrape's path (docs/netstat.md, Cost).
    default = True
    options = (
        Option(
            "fields",
            parse_fields,
            DEFAULT_FIELDS,
            "the families to serve: dashboards (those the dashboards, alerts and runbook read), "
            "all, or a comma-separated list (e.g. tcp_listen_overflows,sockets); only the files "
            "they need are read",
        ),
        Option(
            "interval",
            duration,
            DEFAULT_INTERVAL,
            "read every namespace in a thread of its own this often, and serve its latest sample "
            "(a new namespace is read within a second); 0s: read them during each scrape",
        ),
    )

    def __init__(
        self,
        context: Context,
        *,
        fields: tuple[str, ...] = parse_fields(DEFAULT_FIELDS),
        interval: float = duration(DEFAULT_INTERVAL),
    ) -> None:
        self.root = context.procfs.root
        self.interval = interval
        self.sampler: Sampler | None = None  # while it runs (see start); without it, scrapes read
        self._rendered: tuple[Sample, list[Target], list[Family]] | None = None
        self.fields = [BY_KEY[k] for k in fields]
        self.wanted = wanted_of(self.fields)
        self.extras = tuple(dict.fromkeys(s[0] for f in self.fields for s in f.sources))
        self.host = [(m, t, h, c) for key, m, t, h, c in HOST_CONNTRACK if key in fields]
        self._labels = LabelCache(self._render_labels)
        self._reported: set[tuple[str, ...]] = set()  # problems logged once, not per scrape

    def _render_labels(self, _key: str, view: WorkloadView) -> dict[str, str]:
        """The label set of each extra label pair (family, protocol and state) of one owner."""
        owner = owner_labels(view)
        return {e: "{" + owner + ("," + e if e else "") + "}" for e in self.extras}

    def targets(self, snap: Snapshot) -> list[Target]:
        """(owner kind, pid, label sets) of each namespace to read: one per owner (a pod's
        sandbox holds the namespace of all its containers), none for the host's."""
        owners = [
            v
            for v in snap.containers
            if v.netns_owner == v.container.id and v.network_mode != "host" and v.container.pid > 0
        ]
        label_sets = self._labels.rendered((v.container.id, v) for v in owners)
        return [
            (
                "pod" if v.container.is_pod else "container",
                v.container.pid,
                (v.container.pid, v.container.netns_inode),
                ls,
            )
            for v, ls in zip(owners, label_sets, strict=True)
        ]

    def namespaces(self, snap: Snapshot) -> dict[Hashable, int]:
        """{namespace key: pid} of the namespaces to sample."""
        return {key: pid for _owner, pid, key, _ls in snap.memo(TARGETS, self.targets)}

    def start(self, snapshot: Callable[[], Snapshot]) -> None:
        if self.interval > 0:
            self.sampler = Sampler(
                NamespaceReader(self.root, self.wanted),
                lambda: snapshot().memo(NAMESPACES, self.namespaces),
                self.interval,
            )
            self.sampler.start()

    def stop(self) -> None:
        if self.sampler is not None:
            self.sampler.stop()

    def collect(self, snap: Snapshot) -> list[Family]:
        targets = snap.memo(TARGETS, self.targets)
        if self.sampler is None:
            reader = NamespaceReader(self.root, self.wanted)
            readings = {key: reader.read(pid) for _owner, pid, key, _ls in targets}
            return self._families(targets, readings) + self._host_families()
        sample = self.sampler.latest
        rendered = self._rendered
        if rendered is None or rendered[0] is not sample or rendered[1] is not targets:
            # Rendered once per sample and snapshot: scrapes in between reuse the text.
            families = self._families(targets, sample.readings)
            for f in families:
                f.static = True
            self._rendered = rendered = (sample, targets, families)
        return rendered[2] + self._sample_families(sample) + self._host_families()

    def _families(
        self, targets: list[Target], readings: Mapping[Hashable, Reading | None]
    ) -> list[Family]:
        """The namespaces' families, of the targets that have a reading."""
        found: Found = [
            (owner, label_sets, reading)
            for owner, _pid, key, label_sets in targets
            if (reading := readings.get(key)) is not None
        ]
        if found:
            self._report(found)
        # The pods' families only where pods are: a host without them gets no empty families.
        owners = [o for o in OWNERS if o == "container" or any(f[0] == o for f in found)]
        return [self._family(f, o, found) for o in owners for f in self.fields]

    @staticmethod
    def _sample_families(sample: Sample) -> list[Family]:
        """The sampler's staleness and cost; empty until its first pass over every namespace."""
        age = Family(
            "dockernet_netstat_sample_age_seconds",
            "gauge",
            "Seconds since the latest sample of every namespace began: how old the netstat "
            "series are at most.",
        )
        out = [age] + [Family(name, "gauge", text) for name, text, _attr in SAMPLE_GAUGES]
        if sample.started is not None:
            age.add("", round(time.monotonic() - sample.started, 3))
            for f, (_name, _text, attr) in zip(out[1:], SAMPLE_GAUGES, strict=True):
                v = getattr(sample, attr)
                f.add("", round(v, 6) if isinstance(v, float) else v)
        return out

    @staticmethod
    def _family(f: Field, owner: str, found: Found) -> Family:
        samples: list[tuple[str, int | float]] = []
        for kind, label_sets, reading in found:
            if kind != owner:
                continue
            for extra, file, section, name in f.sources:
                v = reading.values.get(file, {}).get((section, name))
                if v is not None:
                    samples.append((label_sets[extra], v))
        return Family(f.metric(owner), f.type, f.help, samples)

    def _host_families(self) -> list[Family]:
        if not self.host:
            return []
        count, limit, stats = read_host_conntrack(self.root)
        read = {"count": count, "limit": limit} | {k[1]: v for k, v in stats.items()}
        out = []
        for metric, kind, text, column in self.host:
            v = read.get(column)
            out.append(Family(metric, kind, text, [("", v)] if v is not None else []))
        return out

    def _report(self, found: Found) -> None:
        """Log once each file that could not be parsed and each field the kernel lacks (judged on
        the first namespace: every namespace has the same files); their series are left out."""
        for _owner, _labels, reading in found:
            for file, error in reading.errors.items():
                self._once(("unparsed", file), "netstat_file_unparsed", file=file, error=error)
        values = found[0][2].values
        for file, sections in self.wanted.items():
            for section, names in sections.items():
                if file not in values:
                    continue
                for name in names:
                    if (section, name) not in values[file]:
                        field = f"{section} {name}".strip()
                        self._once(
                            ("missing", file, field),
                            "netstat_field_missing",
                            file=file,
                            field=field,
                        )

    def _once(self, key: tuple[str, ...], event: str, **kw: str) -> None:
        if key not in self._reported and len(self._reported) < 256:
            self._reported.add(key)
            log.warning(event, **kw)
