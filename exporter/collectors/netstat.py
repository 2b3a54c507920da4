"""Per-namespace network health: the TCP, UDP and IP counters, socket counts and conntrack
statistics of each container's own network namespace, and the host's conntrack table.

One read of each file per namespace per scrape, through the namespace owner's pid
(``/proc/<pid>/net/...``): a namespace shared by several containers is read once and
reported under its owner, host-network containers get no series (they would repeat
the host's numbers), and a namespace that goes away mid-scrape is skipped.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .. import logs
from ..exposition import Family, LabelCache, labels
from ..sources.netstat import (
    CONNTRACK,
    FILES,
    NETSTAT,
    SNMP,
    SNMP6,
    SOCKSTAT,
    SOCKSTAT6,
    NamespaceReader,
    Reading,
    read_host_conntrack,
)
from .base import Collector, Context, Option

if TYPE_CHECKING:
    from ..topology import ContainerView, Snapshot

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
    c = view.container
    if c.is_pod:
        return labels(namespace=c.pod_namespace, pod=c.pod_name)[1:-1]
    return labels(container_id=c.id, container_name=c.name)[1:-1]


OWNERS = ("container", "pod")
Target = tuple[str, int, dict[str, str]]  # owner kind, pid, label sets
Found = list[tuple[str, dict[str, str], Reading]]


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
    )

    def __init__(self, context: Context, *, fields: tuple[str, ...] = tuple(BY_KEY)) -> None:
        self.root = context.procfs.root
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
            ("pod" if v.container.is_pod else "container", v.container.pid, ls)
            for v, ls in zip(owners, label_sets, strict=True)
        ]

    def collect(self, snap: Snapshot) -> list[Family]:
        reader = NamespaceReader(self.root, self.wanted)
        found: Found = []
        for owner, pid, label_sets in snap.memo("netstat_targets", self.targets):
            reading = reader.read(pid)
            if reading is not None:
                found.append((owner, label_sets, reading))
        if found:
            self._report(found)
        # The pods' families only where pods are: a host without them gets no empty families.
        owners = [o for o in OWNERS if o == "container" or any(f[0] == o for f in found)]
        families = [self._family(f, o, found) for o in owners for f in self.fields]
        return families + self._host_families()

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
