"""The netstat sampler: which namespaces a pass reads and which readings it keeps, on procfs
trees made of recorded files; its thread through a failing pass and a stop; and the collector
serving its latest sample for the owners of the scrape's snapshot only."""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path

from test_netstat_parsers import ALL, procfs_tree, recorded, samples, snapshot, view

from exporter import logs
from exporter.metrics.collectors.base import Context
from exporter.metrics.collectors.netstat import NetstatCollector
from exporter.sources.kernel import netstat
from exporter.sources.kernel.procfs import Procfs

WANTED = {"snmp": {"Tcp": ["ActiveOpens"]}, "sockstat": {"TCP": ["inuse"]}}
OPENS = "dockernet_container_tcp_active_opens_total"


def opens(tmp_path: Path, pid: int, n: int) -> None:
    """Make the recorded snmp of `pid` say ActiveOpens n."""
    text = recorded("snmp").decode().splitlines()
    at = next(i for i, line in enumerate(text) if line.startswith("Tcp:"))  # its header line
    values = text[at + 1].split()
    values[text[at].split().index("ActiveOpens")] = str(n)
    text[at + 1] = " ".join(values)
    (tmp_path / str(pid) / "net" / "snmp").write_text("\n".join(text) + "\n")


def active_opens(reading: netstat.Reading | None) -> int:
    assert reading is not None
    return reading.values["snmp"][("Tcp", "ActiveOpens")]


def sampler(
    tmp_path: Path, topology: list, reader: netstat.NamespaceReader | None = None
) -> netstat.Sampler:
    """A sampler of the namespaces topology[-1] names (a new topology: append a new dict)."""
    reader = reader or netstat.NamespaceReader(str(tmp_path), WANTED)
    return netstat.Sampler(reader, lambda: topology[-1], 60.0)


def test_refreshed_keeps_what_is_wanted_and_prefers_the_fresh_reading():
    a, b, c = netstat.Reading(), netstat.Reading(), netstat.Reading()
    got = netstat.refreshed({"x": a, "gone": b}, {"y": c, "x": b}, {"x": 1, "y": 2, "z": 3})
    assert got == {"x": b, "y": c} and got["x"] is b
    assert netstat.unread({"x": a, "y": None}, {"x": 1, "y": 2, "z": 3}) == {"z": 3}


def test_a_pass_reads_every_namespace_and_a_check_only_the_new_ones(tmp_path):
    procfs_tree(tmp_path, 10)
    opens(tmp_path, 10, 5)
    topology = [{"a": 10, "gone": 99}]
    s = sampler(tmp_path, topology)
    s.sample(full=True)
    first = s.latest
    assert active_opens(first.readings["a"]) == 5 and first.readings["gone"] is None
    assert first.started is not None and first.namespaces == 2 and first.seconds > 0
    # a new namespace: read by the check; the others keep their reading until the next pass
    procfs_tree(tmp_path, 20)
    opens(tmp_path, 20, 7)
    opens(tmp_path, 10, 6)
    topology.append({"a": 10, "gone": 99, "b": 20})
    s.sample(full=False)
    assert active_opens(s.latest.readings["b"]) == 7
    assert active_opens(s.latest.readings["a"]) == 5
    assert s.latest.started == first.started and s.latest.readings["gone"] is None
    topology.append({"a": 10})
    s.sample(full=True)
    assert s.latest.readings.keys() == {"a"} and active_opens(s.latest.readings["a"]) == 6
    assert s.latest.started > first.started


def test_a_namespace_vanishing_mid_read_is_left_out_and_the_pass_goes_on(tmp_path):
    procfs_tree(tmp_path, 10)
    procfs_tree(tmp_path, 20)

    class Vanishing(netstat.NamespaceReader):
        """Namespace 10 goes away once its first file has been read."""

        def read_file(self, path: str, records: bool = False) -> bytes:
            data = super().read_file(path, records)
            if path.startswith(f"{tmp_path}/10/"):
                shutil.rmtree(tmp_path / "10")
            return data

    s = sampler(tmp_path, [{"a": 10, "b": 20}], reader=Vanishing(str(tmp_path), WANTED))
    s.sample(full=True)
    assert s.latest.readings["a"] is None and s.latest.readings["b"] is not None


def test_a_full_pass_reads_new_namespaces_first_and_serves_each_at_once(tmp_path):
    for pid in (10, 20, 30):
        procfs_tree(tmp_path, pid)
    topology = [{"a": 10, "b": 20}]
    served: list = []

    class Watching(netstat.NamespaceReader):
        """Notes, at each read, which pid it is and what the sampler serves."""

        def read(self, pid, opened=None):
            served.append((pid, set(s.latest.readings)))
            return super().read(pid, opened)

    s = sampler(tmp_path, topology, reader=Watching(str(tmp_path), WANTED))
    s.sample(full=True)
    topology.append({"a": 10, "b": 20, "new": 30})
    served.clear()
    s.sample(full=True)
    # the new one first; served before the known ones are read again
    assert served == [(30, {"a", "b"}), (10, {"a", "b", "new"}), (20, {"a", "b", "new"})]


def test_a_check_stops_when_a_pass_falls_due(tmp_path):
    for pid in (10, 20):
        procfs_tree(tmp_path, pid)
    now = [0.0]
    s = netstat.Sampler(
        netstat.NamespaceReader(str(tmp_path), WANTED),
        lambda: {"a": 10, "b": 20},
        60.0,
        clock=lambda: now[0],
    )
    s.due = 0.0  # the pass over every namespace is due: the check leaves the reads to it
    s.sample(full=False)
    assert s.latest.readings == {}
    s.due = 1.0
    s.sample(full=False)
    assert s.latest.readings.keys() == {"a", "b"}


def wait_until(predicate: Callable[[], object], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_the_thread_survives_a_failing_pass_logs_it_once_and_stops(tmp_path, capsys):
    logs.configure("info")
    procfs_tree(tmp_path, 10)
    calls = []

    def wanted():
        calls.append(1)
        if len(calls) <= 3:
            raise RuntimeError("topology not ready")
        return {"a": 10}

    s = netstat.Sampler(netstat.NamespaceReader(str(tmp_path), WANTED), wanted, 0.02, 0.01)
    s.start()
    try:
        wait_until(lambda: s.latest.readings.get("a") is not None)
    finally:
        s.stop()
    assert s._thread is not None and not s._thread.is_alive()
    err = capsys.readouterr().err
    assert err.count("event=netstat_sample_failed") == 1 and "topology not ready" in err


def test_the_collector_serves_the_sample_for_the_snapshot_owners_only(tmp_path):
    procfs_tree(tmp_path, 10)
    procfs_tree(tmp_path, 20)
    opens(tmp_path, 10, 3)
    alpha, beta = view("alpha", 10), view("beta", 20)
    current = snapshot(alpha, beta)
    c = NetstatCollector(Context(Procfs(str(tmp_path))), fields=ALL, interval=3600)
    c.start(lambda: current)
    try:
        wait_until(lambda: c.sampler is not None and c.sampler.latest.started is not None)
        first = samples(c.collect(current))
        opens(tmp_path, 10, 4)  # after the sample: served at the next one
        again = samples(c.collect(current))
        current = snapshot(alpha)  # beta is gone: its series go at once, the sample holds it
        after = samples(c.collect(current))
    finally:
        c.stop()
    alpha_opens = (OPENS, '{container_id="' + "a" * 64 + '",container_name="alpha"}')
    assert first[alpha_opens] == again[alpha_opens] == after[alpha_opens] == 3
    assert c.sampler is not None
    assert c.sampler.latest.readings.keys() == {(10, None), (20, None)}
    assert [k for k in first if "beta" in k[1]] and not [k for k in after if "beta" in k[1]]
    assert first["dockernet_netstat_sample_namespaces", ""] == 2
    assert 0 <= first["dockernet_netstat_sample_age_seconds", ""] < 60
    assert not [t for t in threading.enumerate() if t.name == "netstat-sampler"]


def test_without_a_sampler_the_collector_reads_during_the_scrape(tmp_path):
    procfs_tree(tmp_path, 10)
    current = snapshot(view("alpha", 10))
    c = NetstatCollector(Context(Procfs(str(tmp_path))), fields=ALL, interval=0)
    c.start(lambda: current)
    opens(tmp_path, 10, 1)
    one = samples(c.collect(current))
    opens(tmp_path, 10, 2)
    two = samples(c.collect(current))
    assert c.sampler is None and {v for k, v in one.items() if k[0] == OPENS} == {1}
    assert {v for k, v in two.items() if k[0] == OPENS} == {2}
    assert ("dockernet_netstat_sample_age_seconds", "") not in two
