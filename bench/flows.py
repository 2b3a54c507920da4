"""Flows: the cost of following the host's conntrack table (docs/flows.md#cost).

    .venv/bin/python -m bench.flows                 # every figure, full size
    .venv/bin/python -m bench.flows --entries 1000 --rate 100 --seconds 5   # small, seconds

1. dump: ``conntrack.dump()`` plus the attribution's filter over a table holding --entries more
   entries (written with ctnetlink, IPCTNL_MSG_CT_NEW, between addresses of 198.19.250.0/23 that
   no workload holds, removed after), median of 5, against ``conntrack -L > /dev/null`` median of
   5 in the same run; target at most 1.5x.
2. scrape: the flows collector's ``collect`` with 1,000 series, median of 101, against nothing
   (its whole cost is added); target at most 2 ms.
3. rate: a real exporter with the flows collector, two containers on a network of their own, the
   client opening --rate connections a second to the server for --seconds; the exporter's count
   against the generator's, its CPU (utime + stime over the window) and RSS growth; targets exact,
   at most 15% of one core, at most 20 MB.

Holds the test lock exclusively (the table and the load are the host's).
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import socket
import statistics
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

from exporter.core import flow_peers
from exporter.sources.kernel import conntrack as ct
from exporter.sources.kernel.netlink import NLM_F_REQUEST

LOCK_PATH = "/run/dockernet-tests.lock"
NLA_F_NESTED = 0x8000
CTA_TIMEOUT = 7
NLM_F_CREATE = 0x400
BASE = socket.inet_aton("198.19.250.0")


def _nla(kind: int, payload: bytes) -> bytes:
    data = struct.pack("=HH", 4 + len(payload), kind) + payload
    return data + b"\0" * (-len(data) % 4)


def _tuple(kind: int, src: bytes, dst: bytes, sport: int, dport: int) -> bytes:
    ip = _nla(ct.CTA_IP_V4_SRC, src) + _nla(ct.CTA_IP_V4_DST, dst)
    proto = (
        _nla(ct.CTA_PROTO_NUM, bytes([6]))
        + _nla(ct.CTA_PROTO_SRC_PORT, struct.pack(">H", sport))
        + _nla(ct.CTA_PROTO_DST_PORT, struct.pack(">H", dport))
    )
    return _nla(
        kind | NLA_F_NESTED,
        _nla(ct.CTA_TUPLE_IP | NLA_F_NESTED, ip) + _nla(ct.CTA_TUPLE_PROTO | NLA_F_NESTED, proto),
    )


def _message(msg_type: int, flags: int, i: int, timeout: int) -> bytes:
    src = (int.from_bytes(BASE, "big") + 1 + i % 250).to_bytes(4, "big")
    dst = (int.from_bytes(BASE, "big") + 256 + 1 + i % 250).to_bytes(4, "big")
    sport, dport = 1024 + i // 250, 80
    body = struct.pack("=BBH", socket.AF_INET, 0, 0) + _tuple(
        ct.CTA_TUPLE_ORIG, src, dst, sport, dport
    )
    body += _tuple(ct.CTA_TUPLE_REPLY, dst, src, dport, sport)
    if msg_type == ct.CT_NEW:
        body += _nla(CTA_TIMEOUT, struct.pack(">I", timeout))
        tcp = _nla(ct.CTA_PROTOINFO_TCP_STATE, bytes([3]))
        body += _nla(
            ct.CTA_PROTOINFO | NLA_F_NESTED, _nla(ct.CTA_PROTOINFO_TCP | NLA_F_NESTED, tcp)
        )
    return struct.pack("=IHHII", 16 + len(body), msg_type, NLM_F_REQUEST | flags, i + 1, 0) + body


def _batches(msg_type: int, flags: int, n: int, timeout: int) -> Iterator[bytes]:
    for start in range(0, n, 100):
        yield b"".join(
            _message(msg_type, flags, i, timeout) for i in range(start, min(n, start + 100))
        )


def write_entries(n: int, timeout: int = 600) -> None:
    """n established TCP entries (at most 250 x 64,000), expiring after `timeout` seconds."""
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, ct.NETLINK_NETFILTER) as sock:
        sock.bind((0, 0))
        for batch in _batches(ct.CT_NEW, NLM_F_CREATE, n, timeout):
            sock.send(batch)


def delete_entries(n: int) -> None:
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, ct.NETLINK_NETFILTER) as sock:
        sock.bind((0, 0))
        for batch in _batches(ct.CT_DELETE, 0, n, 0):
            sock.send(batch)


def count_table() -> int:
    return int(open("/proc/sys/net/netfilter/nf_conntrack_count").read())


def median_seconds(run: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def dump_figure(entries: int) -> dict:
    before = count_table()
    write_entries(entries)
    try:
        size = count_table()
        subnets = tuple(s for s in map(flow_peers.subnet, ("198.18.0.0/24", "198.19.0.0/24")) if s)
        attr = flow_peers.Attribution({}, frozenset(), subnets)

        def ours() -> None:
            kept = [e for e in ct.dump() if attr.involves_workload(e)]
            assert len(kept) < size

        def theirs() -> None:
            with open(os.devnull, "w") as null:
                subprocess.run(["conntrack", "-L"], stdout=null, stderr=null, check=True)

        ours_s, theirs_s = median_seconds(ours, 5), median_seconds(theirs, 5)
    finally:
        delete_entries(entries)
    return {
        "table_entries": size,
        "table_before": before,
        "dump_seconds": round(ours_s, 4),
        "conntrack_list_seconds": round(theirs_s, 4),
        "ratio": round(ours_s / theirs_s, 2),
        "target": "<= 1.5x",
        "met": ours_s <= 1.5 * theirs_s,
    }


def scrape_figure(series: int = 100) -> dict:
    """collect() and the text of its families, with `series` flows (the table's size does not
    enter: the series are kept up to date by the thread)."""
    from exporter.core import topology
    from exporter.metrics.collectors.base import Context
    from exporter.metrics.collectors.flows import SHOWN, FlowsCollector, Follower
    from exporter.sources.kernel.procfs import Procfs

    collector = FlowsCollector(Context(procfs=Procfs()))
    snap = topology.empty()
    follower = Follower(collector.table, lambda: snap, "/proc", 1 << 20, 15.0)
    follower.error = None
    collector.follower = follower
    peers: set[flow_peers.Peer] = set()
    for i in range(series):
        source = flow_peers.Peer(f"client-{i % 50}", "bench")
        destination = flow_peers.Peer(f"server-{i // 50}", "bench")
        peers.update((source, destination))
        collector.table.series[(source, destination, "tcp", str(8000 + i))] = [i, 0, 1, 0, 0, 0, 0]
    snap.cache[SHOWN] = frozenset(peers)  # as if the snapshot held those workloads
    from exporter.metrics.exposition import render

    render(collector.collect(snap))
    seconds = median_seconds(lambda: render(collector.collect(snap)), 101)
    return {
        "series": series,
        "collect_ms": round(seconds * 1000, 3),
        "target": "<= 2 ms",
        "met": seconds <= 0.002,
    }


def _cpu_rss(pid: int) -> tuple[float, int]:
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    rss = next(int(l.split()[1]) for l in open(f"/proc/{pid}/status") if l.startswith("VmRSS:"))
    return cpu, rss * 1024


ACCEPT = """
import socket
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("0.0.0.0", 80))
srv.listen(4096)
while True:
    srv.accept()[0].close()
"""

GENERATE = """
import socket, sys, time
host, rate, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
made, start = 0, time.monotonic()
while (now := time.monotonic()) - start < seconds:
    due = int((now - start) * rate)
    while made < due:
        s = socket.socket()
        s.connect((host, 80))
        s.close()
        made += 1
    time.sleep(0.005)
print(made)
"""


def rate_figure(rate: int, seconds: float) -> dict:
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
    import docker

    from helpers import TEST_IMAGE, ExporterProcess, unique, wait_for

    client = docker.from_env()
    net = client.networks.create(unique("dnxbflow"))
    made = []
    exporter = accepting = None
    try:
        server = client.containers.run(
            TEST_IMAGE, "sleep 3600", detach=True, network=net.name, name=unique("dnxbflow")
        )
        opener = client.containers.run(
            TEST_IMAGE, "sleep 3600", detach=True, network=net.name, name=unique("dnxbflow")
        )
        made = [server, opener]
        server.reload()
        opener.reload()
        address = server.attrs["NetworkSettings"]["Networks"][net.name]["IPAddress"]
        server_ns = f"--net=/proc/{server.attrs['State']['Pid']}/ns/net"
        accepting = subprocess.Popen(["nsenter", server_ns, sys.executable, "-c", ACCEPT])
        exporter = ExporterProcess("--collector.flows").wait_ready()

        def value(name: str, **labels: str | None) -> float | None:
            return exporter.metrics().get_value(name, **labels)

        wait_for(lambda: value("dockernet_scrape_collector_success", collector="flows") == 1, 60)
        wait_for(lambda: value("dockernet_container_info", container_name=opener.name), 30)
        time.sleep(2)
        cpu0, rss0 = _cpu_rss(exporter.proc.pid)
        started = time.monotonic()
        pid = opener.attrs["State"]["Pid"]
        out = subprocess.run(
            [
                "nsenter",
                f"--net=/proc/{pid}/ns/net",
                sys.executable,
                "-c",
                GENERATE,
                address,
                str(rate),
                str(seconds),
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        generated = int(out)
        labels = {"source": opener.name, "destination": server.name, "port": "80"}
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if value("dockernet_flow_connections_opened_total", **labels) == generated:
                break
            time.sleep(0.2)
        window = time.monotonic() - started
        cpu1, rss1 = _cpu_rss(exporter.proc.pid)
        counted = value("dockernet_flow_connections_opened_total", **labels)
        lost = value("dockernet_flow_events_lost_total")
    finally:
        if exporter is not None:
            exporter.stop()
        if accepting is not None:
            accepting.kill()
            accepting.wait()
        for c in made:
            c.remove(force=True)
        net.remove()
    cpu_share = (cpu1 - cpu0) / window
    return {
        "rate": rate,
        "seconds": seconds,
        "generated": generated,
        "counted": counted,
        "events_lost": lost,
        "cpu_share_of_a_core": round(cpu_share, 4),
        "rss_growth_mb": round((rss1 - rss0) / 1e6, 1),
        "targets": "exact; <= 0.15; <= 20 MB",
        "met": counted == generated and cpu_share <= 0.15 and rss1 - rss0 <= 20e6,
    }


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.flows", description=__doc__.split("\n\n")[0])
    p.add_argument("--entries", type=int, default=100_000)
    p.add_argument("--rate", type=int, default=2000)
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--only", choices=("dump", "scrape", "rate"), action="append")
    args = p.parse_args()
    only = set(args.only or ("dump", "scrape", "rate"))
    lock = os.open(LOCK_PATH, os.O_CREAT | os.O_RDWR, 0o644)
    fcntl.flock(lock, fcntl.LOCK_EX)
    print(json.dumps({"started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}), flush=True)
    figures = {
        "dump": lambda: dump_figure(args.entries),
        "scrape": lambda: [scrape_figure(100), scrape_figure(1000)],
        "rate": lambda: rate_figure(args.rate, args.seconds),
    }
    for name, measure in figures.items():
        if name in only:  # each figure printed as soon as it is measured
            print(json.dumps({name: measure()}), flush=True)


if __name__ == "__main__":
    main()
