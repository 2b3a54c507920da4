"""Per-namespace network health: the TCP, UDP and IP counters, socket counts and conntrack
statistics of each container's own network namespace, and the host's conntrack table.

Each namespace is read through its owner's pid (``/proc/<pid>/net/...``): a namespace shared
by several containers is read once and reported under its owner, host-network containers get no
series (they would repeat the host's numbers), and a namespace that goes away mid-read is
skipped. The kernel's own cost of these files is about 180 µs per namespace, so by default a
sampler thread reads every namespace each ``--collector.netstat.interval`` and the scrape serves
its latest sample, for the owners of the scrape's snapshot only (interval 0: read during the
scrape). The host's conntrack table (three small files) is read during the scrape.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from exporter import logs
from exporter.app.flags import duration
from exporter.core.queries import owner
from exporter.metrics.collectors.base import Collector, Context, Option
from exporter.metrics.exposition import Family, LabelCache, labels
from exporter.sources.kernel.netstat import (
    CONNTRACK,
    FILES,
    NETSTAT,
    SNMP,
    SNMP6,
    SOCKSTAT,
    SOCKSTAT6,
    NamespaceReader,
    Reading,
    Sample,
    Sampler,
    read_host_conntrack,
)

if TYPE_CHECKING:
    from exporter.core.topology import ContainerView, Snapshot

log = logs.get_logger()

IPV4, IPV6 = 'family="ipv4"', 'family="ipv6"'


@dataclass(frozen=True)
class Field:
    """One family: `key` names it in --collector.netstat.fields and is its name after
    ``dockernet_container_`` (``dockernet_pod_`` for pods; without ``_total``); each source is
    (extra label pairs, file, section, kernel field name), the section "" in the files that have
    none (snmp6, nf_conntrack)."""

    key: str
    type: str  # counter | gauge
    help: str
    sources: tuple[tuple[str, str, str, str], ...]

    def metric(self, owner: str) -> str:
        """The family's name for an owner kind, `container` or `pod`."""
        return f"dockernet_{owner}_{self.key}" + ("_total" if self.type == "counter" else "")


def _tcp(key: str, section: str, name: str, help_text: str, file: str = SNMP) -> Field:
    return Field(key, "counter", help_text, (("", file, section, name),))


def _dual(key: str, v4: tuple[str, str], v6: str, help_text: str) -> Field:
    return Field(key, "counter", help_text, ((IPV4, SNMP, v4[0], v4[1]), (IPV6, SNMP6, "", v6)))


def _sock(protocol: str, state: str, file: str, section: str) -> tuple[str, str, str, str]:
    return (f'protocol="{protocol}",state="{state}"', file, section, state)


def _kernel_at_least(version: tuple[int, int], release: str | None = None) -> bool:
    numbers = (release or os.uname().release).split("-")[0].split(".")[:2]
    return tuple(int(n) for n in numbers if n.isdigit()) >= version


# Whether sockstat's TCP `tw` counts the namespace's own time-wait sockets: since the time-wait
# count moved into each namespace (4.13); before, every namespace showed the host's.
TW_PER_NAMESPACE = _kernel_at_least((4, 13))

# The conntrack statistics served for each namespace and the host: (column, what it counts).
CONNTRACK_COUNTERS = (
    ("insert_failed", "Conntrack entries that could not be inserted"),
    ("drop", "Packets dropped for want of a conntrack entry"),
    ("early_drop", "Conntrack entries dropped early to make room"),
    ("invalid", "Packets conntrack could not track"),
)

FIELDS: tuple[Field, ...] = (
    _tcp(
        "tcp_active_opens",
        "Tcp",
        "ActiveOpens",
        "TCP connections the namespace opened (Tcp ActiveOpens).",
    ),
    _tcp(
        "tcp_passive_opens",
        "Tcp",
        "PassiveOpens",
        "TCP connections the namespace accepted (Tcp PassiveOpens).",
    ),
    _tcp(
        "tcp_attempt_fails",
        "Tcp",
        "AttemptFails",
        "TCP connection attempts that failed (Tcp AttemptFails): refused, timed out, reset while opening.",
    ),
    _tcp(
        "tcp_estab_resets",
        "Tcp",
        "EstabResets",
        "Established TCP connections reset (Tcp EstabResets).",
    ),
    _tcp(
        "tcp_retransmitted_segments",
        "Tcp",
        "RetransSegs",
        "TCP segments retransmitted (Tcp RetransSegs).",
    ),
    _tcp("tcp_segments_received", "Tcp", "InSegs", "TCP segments received (Tcp InSegs)."),
    _tcp("tcp_segments_sent", "Tcp", "OutSegs", "TCP segments sent (Tcp OutSegs)."),
    _tcp(
        "tcp_resets_sent",
        "Tcp",
        "OutRsts",
        "TCP resets sent (Tcp OutRsts): connections refused or aborted by this namespace.",
    ),
    _tcp("tcp_in_errors", "Tcp", "InErrs", "TCP segments received in error (Tcp InErrs)."),
    _tcp(
        "tcp_listen_overflows",
        "TcpExt",
        "ListenOverflows",
        "Connections dropped because a listener's accept queue was full (TcpExt ListenOverflows).",
        NETSTAT,
    ),
    _tcp(
        "tcp_listen_drops",
        "TcpExt",
        "ListenDrops",
        "Connection requests a listener dropped, overflows included (TcpExt ListenDrops).",
        NETSTAT,
    ),
    _tcp(
        "tcp_timeouts",
        "TcpExt",
        "TCPTimeouts",
        "TCP retransmission timeouts (TcpExt TCPTimeouts).",
        NETSTAT,
    ),
    _tcp(
        "tcp_syn_retransmits",
        "TcpExt",
        "TCPSynRetrans",
        "SYN and SYN-ACK retransmissions (TcpExt TCPSynRetrans).",
        NETSTAT,
    ),
    _dual(
        "udp_datagrams_received",
        ("Udp", "InDatagrams"),
        "Udp6InDatagrams",
        "UDP datagrams delivered to sockets (Udp InDatagrams, Udp6InDatagrams).",
    ),
    _dual(
        "udp_datagrams_sent",
        ("Udp", "OutDatagrams"),
        "Udp6OutDatagrams",
        "UDP datagrams sent (Udp OutDatagrams, Udp6OutDatagrams).",
    ),
    _dual(
        "udp_no_ports",
        ("Udp", "NoPorts"),
        "Udp6NoPorts",
        "UDP datagrams to a port nobody listens on (Udp NoPorts, Udp6NoPorts).",
    ),
    _dual(
        "udp_receive_buffer_errors",
        ("Udp", "RcvbufErrors"),
        "Udp6RcvbufErrors",
        "UDP datagrams dropped because the socket's receive buffer was full "
        "(Udp RcvbufErrors, Udp6RcvbufErrors).",
    ),
    _dual(
        "udp_in_errors",
        ("Udp", "InErrors"),
        "Udp6InErrors",
        "UDP datagrams received that could not be delivered, buffer errors included "
        "(Udp InErrors, Udp6InErrors).",
    ),
    _dual(
        "ip_in_discards",
        ("Ip", "InDiscards"),
        "Ip6InDiscards",
        "IP packets received and discarded without an error in them (Ip InDiscards, Ip6InDiscards).",
    ),
    _dual(
        "ip_out_no_routes",
        ("Ip", "OutNoRoutes"),
        "Ip6OutNoRoutes",
        "IP packets dropped for want of a route (Ip OutNoRoutes, Ip6OutNoRoutes).",
    ),
    Field(
        "tcp_connections_established",
        "gauge",
        "TCP connections now established or in close-wait (Tcp CurrEstab).",
        (("", SNMP, "Tcp", "CurrEstab"),),
    ),
    Field(
        "sockets",
        "gauge",
        "Sockets of the namespace by protocol and state (sockstat, sockstat6: inuse, and tw where "
        "the kernel counts time-wait sockets per namespace).",
        (
            _sock("tcp", "inuse", SOCKSTAT, "TCP"),
            *((_sock("tcp", "tw", SOCKSTAT, "TCP"),) if TW_PER_NAMESPACE else ()),
            _sock("udp", "inuse", SOCKSTAT, "UDP"),
            _sock("tcp6", "inuse", SOCKSTAT6, "TCP6"),
            _sock("udp6", "inuse", SOCKSTAT6, "UDP6"),
        ),
    ),
    Field(
        "conntrack_entries",
        "gauge",
        "Conntrack entries of the namespace's own table (0 unless the namespace's own rules use "
        "conntrack: bridged and published-port flows are in the host's table).",
        (("", CONNTRACK, "", "entries"),),
    ),
    *(
        Field(
            f"conntrack_{column}",
            "counter",
            f"{what} in the namespace's own table ({column}, summed over CPUs).",
            (("", CONNTRACK, "", column),),
        )
        for column, what in CONNTRACK_COUNTERS
    ),
)
BY_KEY = {f.key: f for f in FIELDS}

# The host's conntrack table, read in the exporter's own (the host's) namespace.
HOST_CONNTRACK = (
    # (field whose key asks for it, metric, type, help, what it reads)
    (
        "conntrack_entries",
        "dockernet_conntrack_entries",
        "gauge",
        "Entries in the host's conntrack table (nf_conntrack_count).",
        "count",
    ),
    (
        "conntrack_entries",
        "dockernet_conntrack_entries_limit",
        "gauge",
        "Size limit of the conntrack table, shared by every namespace (nf_conntrack_max).",
        "limit",
    ),
    *(
        (
            f"conntrack_{column}",
            f"dockernet_conntrack_{column}_total",
            "counter",
            f"{what} in the host namespace ({column}, summed over CPUs).",
            column,
        )
        for column, what in CONNTRACK_COUNTERS
    ),
)


def parse_fields(text: str) -> tuple[str, ...]:
    """--collector.netstat.fields: 'all', or a comma-separated list of field keys."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    if names == ["all"]:
        return tuple(BY_KEY)
    unknown = [n for n in names if n not in BY_KEY]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown field {', '.join(unknown) or repr(text)}: use all or some of {','.join(BY_KEY)}"
        )
    return tuple(k for k in BY_KEY if k in names)


def wanted_of(fields: list[Field]) -> dict[str, dict[str, list[str]]]:
    """{file: {section: kernel field names}}: what the fields read, and no other file."""
    out: dict[str, dict[str, list[str]]] = {}
    for f in fields:
        for _extra, file, section, name in f.sources:
            names = out.setdefault(file, {}).setdefault(section, [])
            if name not in names:
                names.append(name)
    return {file: out[file] for file in FILES if file in out}


def owner_labels(view: ContainerView) -> str:
    """The owner of a namespace as label pairs without braces, those of the interface counters:
    namespace and pod for a pod, container_id and container_name for a container."""
    return labels(**owner(view.container))[1:-1]


OWNERS = ("container", "pod")
Target = tuple[str, int, Hashable, dict[str, str]]  # owner kind, pid, namespace key, label sets
Found = list[tuple[str, dict[str, str], Reading]]
DEFAULT_INTERVAL = "15s"

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
    # Off: reading every file costs several times the 40 us per namespace that a default
    # collector may take here (docs/netstat.md has the figures).
    default = False
    options = (
        Option(
            "fields",
            parse_fields,
            "all",
            "the families to serve, comma-separated (all, or e.g. tcp_listen_overflows,sockets); "
            "only the files they need are read",
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
        fields: tuple[str, ...] = tuple(BY_KEY),
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

    def _render_labels(self, _key: str, view: ContainerView) -> dict[str, str]:
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
        return {key: pid for _owner, pid, key, _ls in snap.memo("netstat_targets", self.targets)}

    def start(self, snapshot: Callable[[], Snapshot]) -> None:
        if self.interval > 0:
            self.sampler = Sampler(
                NamespaceReader(self.root, self.wanted),
                lambda: snapshot().memo("netstat_namespaces", self.namespaces),
                self.interval,
            )
            self.sampler.start()

    def stop(self) -> None:
        if self.sampler is not None:
            self.sampler.stop()

    def collect(self, snap: Snapshot) -> list[Family]:
        targets = snap.memo("netstat_targets", self.targets)
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
