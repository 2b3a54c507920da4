"""The netstat collector's cost (docs/netstat.md): per namespace at 10, 100 and 200 container
namespaces, every field and each file alone, against reading one small procfs file per
namespace (``/proc/<pid>/net/dev``) in the same run; for one namespace holding 10 and 10,000
TCP sockets, against reading its ``/proc/<pid>/net/tcp`` (cAdvisor's method); and a full
``/metrics`` with the collector on against the exporter under test, which has it off."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

from exporter.collectors.base import Context
from exporter.collectors.netstat import NetstatCollector
from exporter.model import Container
from exporter.sources.netstat import FILES, NamespaceReader
from exporter.sources.procfs import Procfs
from exporter.topology import ContainerView, Snapshot

from . import procs
from .checks import check
from .scrape_curve import host_veths, measure, settle
from .stats import median

NAMESPACES = (10, 100, 200)
SOCKETS = (10, 10000)
PER_NAMESPACE_TARGET_US = 40.0
SCRAPE_TARGET_MS = 20.0
SOCKETS_RATIO_TARGET = 1.5  # the cost at 10,000 sockets against 10: it must not move


def snapshot(client, ids: list) -> Snapshot:
    """A snapshot holding only what the collector reads: each container's id, name and pid."""
    views = []
    for container_id in ids:
        c = client.api.inspect_container(container_id)
        container = Container(id=c["Id"], name=c["Name"][1:], pid=c["State"]["Pid"])
        views.append(ContainerView(container, "bridge", container.id))
    return Snapshot(tuple(views), (), (), {}, {}, {"docker": True})


def per_namespace_us(collector: NetstatCollector, snap: Snapshot, repeats: int) -> float:
    """Median time of one collect() over the snapshot, per namespace, in µs."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        collector.collect(snap)
        times.append(time.perf_counter() - started)
    return round(median(times) / len(snap.containers) * 1e6, 1)


def dev_read_us(snap: Snapshot, repeats: int) -> float:
    """The baseline: reading one small procfs file (/proc/<pid>/net/dev) of each namespace."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        for v in snap.containers:
            with open(f"/proc/{v.container.pid}/net/dev", "rb") as f:
                f.read()
        times.append(time.perf_counter() - started)
    return round(median(times) / len(snap.containers) * 1e6, 1)


def file_us(name: str, snap: Snapshot, repeats: int) -> float:
    """Reading and parsing one file of each namespace, with the fields the collector takes from it."""
    reader = NamespaceReader("/proc", {name: NetstatCollector(Context(Procfs())).wanted[name]})
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        for v in snap.containers:
            reader.read(v.container.pid)
        times.append(time.perf_counter() - started)
    return round(median(times) / len(snap.containers) * 1e6, 1)


def namespaces(client, load, sizes: list, repeats: int) -> list:
    every = NetstatCollector(Context(Procfs()))
    rows = []
    for n in sizes:
        load.grow_containers(n)
        snap = snapshot(client, load.containers[:n])
        row = {
            "namespaces": n,
            "all_fields_us": per_namespace_us(every, snap, repeats),
            "baseline_net_dev_us": dev_read_us(snap, repeats),
        }
        row |= {f"{name}_us": file_us(name, snap, repeats) for name in FILES}
        rows.append(row)
        print(
            f"  netstat at {n} namespaces: {row['all_fields_us']} µs each "
            f"(/proc/<pid>/net/dev alone {row['baseline_net_dev_us']} µs)",
            flush=True,
        )
    return rows


HOLD = """
    import resource, socket, sys
    n = int(sys.argv[1])
    resource.setrlimit(resource.RLIMIT_NOFILE, (n + 100, n + 100))
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(n)
    held = []
    while len(held) + 1 < n:
        client = socket.create_connection(listener.getsockname())
        held += [client, listener.accept()[0]]
    print(len(held) + 1, flush=True)
    sys.stdin.read()
"""


def sockets(client, load, counts: list, repeats: int) -> list:
    """One namespace per number of TCP sockets, each held by this Python inside it; measured in
    turns, so that the host's load weighs on every count alike."""
    ids = [load.run_container(f"{load.prefix}-tcp{n}") for n in counts]
    snaps = [snapshot(client, [container_id]) for container_id in ids]
    holders = [
        hold(snap.containers[0].container.pid, n) for snap, n in zip(snaps, counts, strict=True)
    ]
    collector = NetstatCollector(Context(Procfs()))
    try:
        held = [int(h.stdout.readline()) for h in holders]
        times: dict = {}
        for _ in range(repeats):
            for snap in snaps:
                pid = snap.containers[0].container.pid
                times.setdefault((pid, "collector"), []).append(
                    per_namespace_us(collector, snap, 1)
                )
                times.setdefault((pid, "tcp"), []).append(tcp_read_us(pid, 1))
    finally:
        for h in holders:
            h.kill()
            h.wait()
        for container_id in ids:
            load.remove_container(container_id)
    pids = [snap.containers[0].container.pid for snap in snaps]
    return [
        {
            "sockets": n,
            "collector_us": median(times[(pid, "collector")]),
            "proc_net_tcp_us": median(times[(pid, "tcp")]),
        }
        for pid, n in zip(pids, held, strict=True)
    ]


def hold(pid: int, n: int) -> subprocess.Popen:
    """A process in the namespace of ``pid`` holding ``n`` TCP sockets; it prints how many."""
    return subprocess.Popen(
        [
            "nsenter",
            f"--net=/proc/{pid}/ns/net",
            sys.executable,
            "-c",
            textwrap.dedent(HOLD),
            str(n),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


def tcp_read_us(pid: int, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        with open(f"/proc/{pid}/net/tcp", "rb") as f:
            while f.read(65536):
                pass
        times.append(time.perf_counter() - started)
    return round(median(times) * 1e6, 1)


def scrapes(load, ours, out, containers: int, repeats: int) -> dict:
    """A full /metrics with the collector on, against the exporter under test (off), interleaved."""
    load.grow_containers(containers)
    (out / "netstat-on").mkdir(exist_ok=True)
    on = procs.ours(out / "netstat-on", ("--collector.netstat",))
    on.name = "netstat-on"
    try:
        on.wait_ready()
        settle(ours)
        settle(on)
        figures = measure([ours, on], repeats)
    finally:
        on.stop()
    off_ms, on_ms = figures["dockernet-exporter_plain_ms"], figures["netstat-on_plain_ms"]
    return {
        "containers": len(load.containers),
        "veths": host_veths(),
        "off_ms": off_ms,
        "on_ms": on_ms,
    }


def run(client, load, ours, out, containers: int, repeats: int, tiny: bool) -> dict:
    sizes = [n for n in NAMESPACES if n <= containers] or [containers]
    per_ns = namespaces(client, load, sizes, repeats)
    held = sockets(client, load, [10, 200] if tiny else list(SOCKETS), repeats)
    scrape = scrapes(load, ours, out, containers, repeats)
    return {
        "namespaces": per_ns,
        "sockets": held,
        "scrape": scrape,
        "checks": checks(per_ns, held, scrape),
    }


def checks(per_ns: list, held: list, scrape: dict) -> list:
    largest = per_ns[-1]
    files = {name: largest[f"{name}_us"] for name in FILES}
    us, base = largest["all_fields_us"], largest["baseline_net_dev_us"]
    low, high = held[0], held[-1]
    ratio = high["collector_us"] / low["collector_us"]
    on, off = scrape["on_ms"], scrape["off_ms"]
    return [
        check(
            f"netstat per namespace, every field, {largest['namespaces']} namespaces",
            us,
            "µs",
            f"<= {PER_NAMESPACE_TARGET_US:g} µs",
            us <= PER_NAMESPACE_TARGET_US,
            f"/proc/<pid>/net/dev alone {base} µs: {us / base:.1f}x; by file "
            + ", ".join(f"{name} {v}" for name, v in files.items()),
        ),
        check(
            f"netstat at {high['sockets']} sockets against {low['sockets']}",
            round(ratio, 2),
            "x",
            f"<= {SOCKETS_RATIO_TARGET:g}x",
            ratio <= SOCKETS_RATIO_TARGET,
            f"/proc/<pid>/net/tcp: {low['proc_net_tcp_us']} µs at {low['sockets']}, "
            f"{high['proc_net_tcp_us']} µs at {high['sockets']}",
        ),
        check(
            f"scrape with netstat on, {scrape['veths']} veths, {scrape['containers']} containers",
            on,
            "ms",
            f"<= {SCRAPE_TARGET_MS:g} ms",
            on <= SCRAPE_TARGET_MS,
            f"off {off} ms: {on / off:.2f}x",
        ),
    ]
