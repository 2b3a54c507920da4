"""The per-namespace statistics: parsers on files recorded from a container namespace, the
collector on a procfs tree made of them, and odd files (truncated, extra columns, a kernel
with fewer fields) that leave series out and say so once, never failing the scrape."""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from exporter.core.model import Workload
from exporter.core.topology import Snapshot, WorkloadView
from exporter.metrics.collectors.base import Context
from exporter.metrics.collectors.netstat import NetstatCollector
from exporter.metrics.collectors.netstat_fields import (
    BY_KEY,
    DASHBOARD_FIELDS,
    HOST_CONNTRACK,
    parse_fields,
    wanted_of,
)
from exporter.sources.kernel import netstat
from exporter.sources.kernel.procfs import Procfs

if TYPE_CHECKING:
    from exporter.metrics.exposition import Family

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "netstat"
ON_DISK = {name: name.replace("/", "_") for name in netstat.FILES}  # stat/nf_conntrack

ALL = tuple(BY_KEY)  # every family


def recorded(name: str) -> bytes:
    return (FIXTURES / ON_DISK[name]).read_bytes()


def test_pairs_pick_the_wanted_fields_by_name():
    values = netstat.parse_pairs(
        recorded("snmp"), {"Tcp": ["MaxConn", "ActiveOpens", "Absent"], "Udp": ["NoPorts"]}
    )
    assert values == {("Tcp", "MaxConn"): -1, ("Tcp", "ActiveOpens"): 0, ("Udp", "NoPorts"): 0}
    ext = netstat.parse_pairs(recorded("netstat"), {"TcpExt": ["ListenOverflows", "TCPSynRetrans"]})
    assert ext == {("TcpExt", "ListenOverflows"): 0, ("TcpExt", "TCPSynRetrans"): 0}


def test_pairs_tell_sections_apart_by_their_whole_name():
    data = b"UdpLite: InDatagrams NoPorts\nUdpLite: 7 8\nUdp: InDatagrams NoPorts\nUdp: 1 2\n"
    assert netstat.parse_pairs(data, {"Udp": ["NoPorts"]}) == {("Udp", "NoPorts"): 2}


def test_snmp6_sockstat_and_conntrack():
    assert netstat.parse_snmp6(recorded("snmp6"), {"": ["Ip6InDiscards", "Udp6NoPorts"]}) == {
        ("", "Ip6InDiscards"): 2,
        ("", "Udp6NoPorts"): 0,
    }
    sockstat = netstat.parse_sockstat(recorded("sockstat"), {"TCP": ["inuse", "tw"]})
    assert sockstat == {("TCP", "inuse"): 0, ("TCP", "tw"): 0}
    assert netstat.parse_nf_conntrack(recorded("stat/nf_conntrack"), {"": ["entries"]}) == {
        ("", "entries"): 0
    }


def test_snmp6_names_match_whole_words():
    data = b"Udp6InErrorsX                   \t9\nUdp6InErrors                    \t4\n"
    assert netstat.parse_snmp6(data, {"": ["Udp6InErrors"]}) == {("", "Udp6InErrors"): 4}


def test_conntrack_sums_counters_over_cpus_and_takes_entries_once():
    data = (
        b"entries  drop insert_failed\n0000000a  00000001 00000010\n0000000a  00000002 00000001\n"
    )
    assert netstat.parse_nf_conntrack(data, {"": ["entries", "drop", "insert_failed"]}) == {
        ("", "entries"): 10,
        ("", "drop"): 3,
        ("", "insert_failed"): 17,
    }


def test_odd_files():
    # a kernel with fewer fields: what it lacks is absent, the rest is read
    assert netstat.parse_pairs(
        b"Tcp: ActiveOpens\nTcp: 5\n", {"Tcp": ["ActiveOpens", "OutRsts"]}
    ) == {("Tcp", "ActiveOpens"): 5}
    # extra columns and sections the parser does not know
    extra = b"Tcp: New ActiveOpens More\nTcp: 1 2 3\nNew: A\nNew: 1\n"
    assert netstat.parse_pairs(extra, {"Tcp": ["ActiveOpens"]}) == {("Tcp", "ActiveOpens"): 2}
    # truncated: a header without values, or values cut short
    assert netstat.parse_pairs(b"Tcp: ActiveOpens OutRsts\n", {"Tcp": ["OutRsts"]}) == {}
    assert netstat.parse_pairs(b"Tcp: ActiveOpens OutRsts\nTcp: 4", {"Tcp": ["OutRsts"]}) == {}
    with pytest.raises(ValueError):
        netstat.parse_pairs(b"Tcp: ActiveOpens\nTcp: x\n", {"Tcp": ["ActiveOpens"]})
    with pytest.raises(ValueError, match="columns"):
        netstat.parse_nf_conntrack(b"entries drop\n00000001\n", {"": ["drop"]})
    assert netstat.parse_sockstat(b"TCP: inuse", {"TCP": ["inuse"]}) == {}
    assert netstat.parse_snmp6(b"", {"": ["Udp6NoPorts"]}) == {}


def procfs_tree(root: Path, pid: int, files: dict[str, bytes] | None = None) -> None:
    net = root / str(pid) / "net"
    (net / "stat").mkdir(parents=True)
    for name in netstat.FILES:
        (net / name).write_bytes((files or {}).get(name, recorded(name)))


def view(name: str, pid: int, mode: str = "bridge", owner: str | None = None) -> WorkloadView:
    c = Workload(id=name[0] * 64, name=name, pid=pid)
    return WorkloadView(c, mode, owner or c.id)


def snapshot(*views: WorkloadView) -> Snapshot:
    return Snapshot(views, (), (), {}, {}, {"docker": True})


def samples(families: Iterable[Family]) -> dict:
    return {(f.name, ls): v for f in families for ls, v in f.samples}


def test_collector_one_series_per_namespace_owner(tmp_path):
    procfs_tree(tmp_path, 10)
    procfs_tree(tmp_path, 20)
    owner, joined = view("alpha", 10), view("beta", 20, "container:" + "a" * 64, "a" * 64)
    host = view("gamma", 30, "host")
    got = samples(
        NetstatCollector(Context(Procfs(str(tmp_path))), fields=ALL).collect(
            snapshot(owner, joined, host)
        )
    )
    alpha = 'container_id="' + "a" * 64 + '",container_name="alpha"'
    assert got["dockernet_container_tcp_active_opens_total", "{" + alpha + "}"] == 0
    assert got["dockernet_container_ip_in_discards_total", "{" + alpha + ',family="ipv6"}'] == 2
    assert got["dockernet_container_sockets", "{" + alpha + ',protocol="tcp",state="inuse"}'] == 0
    assert got["dockernet_container_tcp_connections_established", "{" + alpha + "}"] == 0
    assert not [k for k in got if "beta" in k[1] or "gamma" in k[1]]


def test_collector_reads_only_the_files_its_fields_need(tmp_path):
    procfs_tree(tmp_path, 10)
    os.unlink(tmp_path / "10/net/netstat")  # would be logged as unreadable, were it read
    c = NetstatCollector(Context(Procfs(str(tmp_path))), fields=("tcp_attempt_fails", "sockets"))
    assert list(c.wanted) == ["snmp", "sockstat", "sockstat6"]
    got = samples(c.collect(snapshot(view("alpha", 10))))
    assert {name for name, _ in got} == {
        "dockernet_container_tcp_attempt_fails_total",
        "dockernet_container_sockets",
    }


def test_collector_on_odd_files_leaves_series_out_and_logs_once(tmp_path, capsys):
    from exporter import logs

    logs.configure("info")
    odd = {
        "snmp": b"Tcp: ActiveOpens\nTcp: 3\n",  # an older kernel: no OutRsts, no Udp section
        "stat/nf_conntrack": b"entries drop\n0000000",  # truncated
    }
    procfs_tree(tmp_path, 10, odd)
    c = NetstatCollector(Context(Procfs(str(tmp_path))), fields=ALL)
    for _ in range(3):
        got = samples(c.collect(snapshot(view("alpha", 10))))
    assert (
        got[
            (
                "dockernet_container_tcp_active_opens_total",
                '{container_id="' + "a" * 64 + '",container_name="alpha"}',
            )
        ]
        == 3
    )
    assert not [k for k in got if k[0] == "dockernet_container_tcp_resets_sent_total"]
    assert not [k for k in got if k[0] == "dockernet_container_conntrack_drop_total"]
    err = capsys.readouterr().err
    assert err.count("event=netstat_file_unparsed") == 1 and "stat/nf_conntrack" in err
    assert err.count('event=netstat_field_missing file=snmp field="Tcp OutRsts"') == 1


def test_a_namespace_gone_mid_scrape_is_skipped(tmp_path):
    procfs_tree(tmp_path, 10)
    got = samples(
        NetstatCollector(Context(Procfs(str(tmp_path))), fields=ALL).collect(
            snapshot(view("alpha", 10), view("omega", 99))
        )
    )
    assert got and not [k for k in got if "omega" in k[1]]


def test_fields_flag():
    assert parse_fields("all") == tuple(BY_KEY)
    assert (
        parse_fields("dashboards")
        == DASHBOARD_FIELDS
        == NetstatCollector.options[0].type(NetstatCollector.options[0].default)
    )
    assert parse_fields("sockets, tcp_timeouts") == ("tcp_timeouts", "sockets")
    with pytest.raises(argparse.ArgumentTypeError, match="unknown field nope"):
        parse_fields("nope,sockets")
    assert wanted_of([BY_KEY["udp_no_ports"]]) == {
        "snmp": {"Udp": ["NoPorts"]},
        "snmp6": {"": ["Udp6NoPorts"]},
    }


def test_reader_reads_this_process_namespace():
    reader = netstat.NamespaceReader(
        "/proc", {"snmp": {"Tcp": ["ActiveOpens"]}, "stat/nf_conntrack": {"": ["entries"]}}
    )
    reading = reader.read(os.getpid())
    assert reading is not None and ("Tcp", "ActiveOpens") in reading.values["snmp"]
    assert reader.read(2**22 + 12345) is None


def test_the_default_fields_are_every_netstat_family_the_dashboards_and_alerts_read():
    """The generated dashboards and rules, and the runbook: each netstat family they name is
    served by default (the host's conntrack families come with the field of the same key), and
    the default serves nothing else."""
    root = Path(__file__).resolve().parents[2]
    texts = [p.read_text() for p in (root / "grafana").rglob("*") if p.suffix in (".json", ".yml")]
    text = "".join(texts) + (root / "docs" / "runbook.md").read_text()
    per_namespace = set(re.findall(r"dockernet_(?:container|pod)_([a-z_]+?)(?:_total)?\b", text))
    host = set(re.findall(r"(dockernet_conntrack_[a-z_]+)", text))
    # the runbook names the host's early drops beside its drops as "`_early_drop_total`"
    host |= {"dockernet_conntrack_early_drop_total"} if "`_early_drop_total`" in text else set()
    wanted = (per_namespace & set(BY_KEY)) | {
        key for key, metric, *_ in HOST_CONNTRACK if metric in host
    }
    assert set(DASHBOARD_FIELDS) == wanted
