"""The netstat collector's families: for each, what it is called, its type and help, and which
field of which per-namespace file (``sources/netstat.py``) feeds each of its series; the host's
conntrack table's families; and the ``--collector.netstat.fields`` parser."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass

from exporter.sources.kernel.netstat import (
    CONNTRACK,
    FILES,
    NETSTAT,
    SNMP,
    SNMP6,
    SOCKSTAT,
    SOCKSTAT6,
)

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


# The families the dashboards, the alerts and the runbook read (grafana/mixin, docs/runbook.md):
# the collector's default. The conntrack keys also bring the host table's families.
DASHBOARD_FIELDS = (
    "tcp_attempt_fails",
    "tcp_estab_resets",
    "tcp_retransmitted_segments",
    "tcp_segments_sent",
    "tcp_resets_sent",
    "tcp_listen_overflows",
    "tcp_listen_drops",
    "udp_no_ports",
    "udp_receive_buffer_errors",
    "conntrack_entries",
    "conntrack_insert_failed",
    "conntrack_drop",
    "conntrack_early_drop",
)
NAMED_FIELDS = {"all": tuple(BY_KEY), "dashboards": DASHBOARD_FIELDS}


def parse_fields(text: str) -> tuple[str, ...]:
    """--collector.netstat.fields: 'all', 'dashboards', or a comma-separated list of field keys;
    in the order of FIELDS."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    if len(names) == 1 and names[0] in NAMED_FIELDS:
        names = list(NAMED_FIELDS[names[0]])
    unknown = [n for n in names if n not in BY_KEY]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown field {', '.join(unknown) or repr(text)}: use all, dashboards or some of "
            f"{','.join(BY_KEY)}"
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
