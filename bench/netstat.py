"""The netstat collector's cost (docs/netstat.md): per namespace at 10, 100 and 200 container
namespaces, every field and each file alone, against reading one small procfs file per
namespace (``/proc/<pid>/net/dev``) and the kernel's own cost of each file (open, read, close,
no parsing) in the same run; the sampler's CPU time per pass and per namespace, with each
namespace's files kept open between passes (the default) and opened every pass; for one
namespace holding 10 and 10,000 TCP sockets, against reading its ``/proc/<pid>/net/tcp``
(cAdvisor's method); a full ``/metrics`` at 2,000 veths side by side: one exporter with the
collector off, one reading the namespaces during the scrape (interval 0) and one serving its
sampler's latest sample (the default); and how soon a new container's first sample is served."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from exporter.app.flags import duration
from exporter.core.model import Workload
from exporter.core.topology import Snapshot, WorkloadView
from exporter.metrics.collectors.base import Context
from exporter.metrics.collectors.netstat import DEFAULT_INTERVAL, NetstatCollector
from exporter.metrics.collectors.netstat_fields import BY_KEY
from exporter.sources.kernel.netstat import CONNTRACK, FILES, NamespaceReader, Sampler
from exporter.sources.kernel.procfs import Procfs

from . import procs
from .checks import check
from .scrape_curve import MODES, collector_ms, grow, host_veths, measure, settle
from .stats import median

if TYPE_CHECKING:
    from docker import DockerClient

    from .load import Load
    from .procs import Exporter

NAMESPACES = (10, 100, 200)
SCRAPE_VETHS = 2000
SOCKETS = (10, 10000)
SAMPLER_FLOOR_RATIO = 1.5  # the sampler's CPU per namespace against the kernel's own cost
SCRAPE_RATIO_TARGET = 1.25  # /metrics with the collector on (sampled) against off
SOCKETS_RATIO_TARGET = 1.5  # the cost at 10,000 sockets against 10: it must not move
FIRST_SAMPLE_TARGET_S = 1.0  # a new container's start to its first netstat series served
NEW_CONTAINERS = 10


def snapshot(client: DockerClient, ids: list) -> Snapshot:
    """A snapshot holding only what the collector reads: each container's id, name and pid."""
    views = []
    for container_id in ids:
        c = client.api.inspect_container(container_id)
        container = Workload(id=c["Id"], name=c["Name"][1:], pid=c["State"]["Pid"])
        views.append(WorkloadView(container, "bridge", container.id))
    return Snapshot(tuple(views), (), (), {}, {}, {"docker": True})


def read_now() -> NetstatCollector:
    """The collector with every field, reading during collect() (no sampler)."""
    return NetstatCollector(Context(Procfs()), fields=tuple(BY_KEY), interval=0)


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
    reader = NamespaceReader("/proc", {name: read_now().wanted[name]})
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        for v in snap.containers:
            reader.read(v.container.pid)
        times.append(time.perf_counter() - started)
    return round(median(times) / len(snap.containers) * 1e6, 1)


def floor_us(name: str, snap: Snapshot, repeats: int) -> float:
    """The kernel's own cost of one file of each namespace: open, one read, close; no parsing."""
    reader = NamespaceReader("/proc", {})
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        for v in snap.containers:
            reader.read_file(f"/proc/{v.container.pid}/net/{name}", name == CONNTRACK)
        times.append(time.perf_counter() - started)
    return round(median(times) / len(snap.containers) * 1e6, 1)


def sampler_passes(snap: Snapshot, repeats: int) -> dict:
    """The sampler's passes over every namespace of the snapshot, in this thread, with each
    namespace's files kept open between passes and opened every pass, in turns: median CPU time
    (the thread's) and wall time per pass, and per namespace."""
    collector = read_now()
    wanted = collector.namespaces(snap)
    samplers = {
        keep: Sampler(
            NamespaceReader("/proc", collector.wanted), lambda: wanted, 60.0, keep_open=keep
        )
        for keep in (True, False)
    }
    cpu: dict = {True: [], False: []}
    wall: dict = {True: [], False: []}
    try:
        for _ in range(repeats):
            for keep, sampler in samplers.items():
                sampler.sample(full=True)
                cpu[keep].append(sampler.latest.cpu_seconds)
                wall[keep].append(sampler.latest.seconds)
        held = len(samplers[True].open or ())
    finally:
        for sampler in samplers.values():
            sampler.close()
    n = len(wanted)
    return {
        "namespaces": n,
        "held_namespaces": held,
        "cpu_ms": round(median(cpu[True]) * 1e3, 2),
        "wall_ms": round(median(wall[True]) * 1e3, 2),
        "cpu_per_namespace_us": round(median(cpu[True]) / n * 1e6, 1),
        "wall_per_namespace_us": round(median(wall[True]) / n * 1e6, 1),
        "reopened_cpu_ms": round(median(cpu[False]) * 1e3, 2),
        "reopened_cpu_per_namespace_us": round(median(cpu[False]) / n * 1e6, 1),
        "reopened_wall_per_namespace_us": round(median(wall[False]) / n * 1e6, 1),
    }


def namespaces(client: DockerClient, load: Load, sizes: list, repeats: int) -> tuple[list, dict]:
    """The rows per size, and the sampler's passes at the largest."""
    every = read_now()
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
        row |= {f"{name}_floor_us": floor_us(name, snap, repeats) for name in FILES}
        row["floor_us"] = round(sum(row[f"{name}_floor_us"] for name in FILES), 1)
        rows.append(row)
        print(
            f"  netstat at {n} namespaces: {row['all_fields_us']} µs each "
            f"(/proc/<pid>/net/dev alone {row['baseline_net_dev_us']} µs, "
            f"the kernel's own cost of the six files {row['floor_us']} µs)",
            flush=True,
        )
    passes = sampler_passes(snap, repeats)
    print(
        f"  sampler at {passes['namespaces']} namespaces: {passes['cpu_ms']} ms CPU a pass, "
        f"{passes['cpu_per_namespace_us']} µs per namespace (wall {passes['wall_ms']} ms); "
        f"its files opened every pass {passes['reopened_cpu_per_namespace_us']} µs",
        flush=True,
    )
    return rows, passes


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


def sockets(client: DockerClient, load: Load, counts: list, repeats: int) -> list:
    """One namespace per number of TCP sockets, each held by this Python inside it; measured in
    turns, so that the host's load weighs on every count alike."""
    ids = [load.run_container(f"{load.prefix}-tcp{n}") for n in counts]
    snaps = [snapshot(client, [container_id]) for container_id in ids]
    holders = [
        hold(snap.containers[0].container.pid, n) for snap, n in zip(snaps, counts, strict=True)
    ]
    collector = read_now()
    try:
        held = [int(first_line(h)) for h in holders]
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


def hold(pid: int, n: int) -> subprocess.Popen[str]:
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


def first_line(proc: subprocess.Popen[str]) -> str:
    assert proc.stdout is not None  # made with stdout=PIPE
    return proc.stdout.readline()


def tcp_read_us(pid: int, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        with open(f"/proc/{pid}/net/tcp", "rb") as f:
            while f.read(65536):
                pass
        times.append(time.perf_counter() - started)
    return round(median(times) * 1e6, 1)


SAMPLE_GAUGES = {
    "dockernet_netstat_sample_cpu_seconds": "cpu_seconds",
    "dockernet_netstat_sample_duration_seconds": "seconds",
    "dockernet_netstat_sample_namespaces": "namespaces",
}


def sample_gauges(text: str) -> dict:
    """The sampler's own figures of its latest pass, as the exporter serves them."""
    out = {}
    for line in text.splitlines():
        name, _, v = line.partition(" ")
        if name in SAMPLE_GAUGES:
            out[SAMPLE_GAUGES[name]] = float(v)
    return out


def served(text: str, ids: list) -> bool:
    """Whether a /metrics shows the netstat series of every one of these containers."""
    return all(
        f'dockernet_container_tcp_attempt_fails_total{{container_id="{i}"' in text for i in ids
    )


EXPORTERS = {
    "netstat-off": ("--no-collector.netstat",),
    "netstat-now": ("--collector.netstat", "--collector.netstat.interval=0s"),
    "netstat-sampled": ("--collector.netstat",),  # the default, said explicitly
    "netstat-all": ("--collector.netstat", "--collector.netstat.fields=all"),
}


def scrapes(
    load: Load, ours: Exporter, out: Path, veths: int, containers: int, repeats: int
) -> dict:
    """A full /metrics at `veths` host veths: one exporter with the collector off, one reading the
    namespaces during the scrape (interval 0) and one serving its sampler's latest sample (the
    default interval), interleaved; the sampler's own figures of a pass over every namespace;
    then how soon a new container's first sample is served."""
    load.grow_containers(containers)
    grow(load, ours, veths, containers, host_veths() - len(load.containers) - len(load.veths))
    started = []
    try:
        for name, extra in EXPORTERS.items():
            (out / name).mkdir(exist_ok=True)
            e = procs.ours(out / name, extra)
            e.name = name
            started.append(e)
        for e in started:
            e.wait_ready()
            settle(e)
        sampled = started[2]
        n = len(load.containers)
        wait(
            lambda: served(sampled.text(), load.containers),
            "the sampled exporter serving every container",
        )
        cpu = [e.cpu_seconds() for e in started]
        figures = measure(started, repeats)
        scraped = 2 + repeats * len(MODES)  # measure()'s warm-up and rounds, the same for each
        cpu_ms = {
            e.name: round((e.cpu_seconds() - before) / scraped * 1e3, 2)
            for e, before in zip(started, cpu, strict=True)
        }
        # The first pass ran at the start, before the containers were known: wait for a later one.
        wait(
            lambda: sample_gauges(sampled.text()).get("namespaces", 0) >= n,
            "a pass of the sampler over every container",
            duration(DEFAULT_INTERVAL) + 30,
        )
        daemon_pass = sample_gauges(sampled.text())
        netstat_ms = collector_ms(sampled.text()).get("netstat")
        first = first_samples(load, sampled, NEW_CONTAINERS if repeats > 3 else 2)
    finally:
        for e in started:
            e.stop()
    return {
        "containers": n,
        "veths": host_veths(),
        "off_ms": figures["netstat-off_plain_ms"],
        "now_ms": figures["netstat-now_plain_ms"],
        "sampled_ms": figures["netstat-sampled_plain_ms"],
        "sampled_bytes": figures["netstat-sampled_plain_bytes"],
        "off_bytes": figures["netstat-off_plain_bytes"],
        "all_fields_ms": figures["netstat-all_plain_ms"],
        "all_fields_bytes": figures["netstat-all_plain_bytes"],
        "collector_ms": netstat_ms,
        "cpu_per_scrape_ms": cpu_ms,  # the process's CPU time over the scrapes, per scrape
        "interval_seconds": duration(DEFAULT_INTERVAL),
        "first_sample_seconds": first,
        "daemon_pass": {
            "namespaces": int(daemon_pass["namespaces"]),
            "cpu_ms": round(daemon_pass["cpu_seconds"] * 1e3, 2),
            "wall_ms": round(daemon_pass["seconds"] * 1e3, 2),
            "cpu_per_namespace_us": round(
                daemon_pass["cpu_seconds"] / daemon_pass["namespaces"] * 1e6, 1
            ),
        },
    }


def first_samples(load: Load, sampled: Exporter, count: int) -> list:
    """Containers started one at a time while the sampler waits for its next pass: seconds from
    the start call's return to the first response showing the container's netstat series (an
    upper bound by one scrape)."""
    return [first_sample(load, sampled, f"{load.prefix}-first{i}") for i in range(count)]


def first_sample(load: Load, sampled: Exporter, name: str) -> float:
    container_id = load.create_container(name)
    load.start_container(container_id)
    begun = time.monotonic()
    wait(
        lambda: served(sampled.text(), [container_id]),
        "the new container's first sample",
        10,
    )
    seconds = round(time.monotonic() - begun, 3)
    load.remove_container(container_id)
    return seconds


def wait(predicate: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"no {what} within {timeout:.0f}s")
        time.sleep(0.02)


def run(
    client: DockerClient,
    load: Load,
    ours: Exporter,
    out: Path,
    containers: int,
    repeats: int,
    tiny: bool,
) -> dict:
    sizes = [n for n in NAMESPACES if n <= containers] or [containers]
    per_ns, passes = namespaces(client, load, sizes, repeats)
    held = sockets(client, load, [10, 200] if tiny else list(SOCKETS), repeats)
    veths = containers + 20 if tiny else SCRAPE_VETHS
    scrape = scrapes(load, ours, out, veths, containers, repeats)
    print(
        f"  /metrics at {scrape['veths']} veths, {scrape['containers']} containers: "
        f"off {scrape['off_ms']} ms, interval 0 {scrape['now_ms']} ms, "
        f"sampled {scrape['sampled_ms']} ms",
        flush=True,
    )
    return {
        "namespaces": per_ns,
        "sampler": passes,
        "sockets": held,
        "scrape": scrape,
        "checks": checks(per_ns, passes, held, scrape),
    }


def checks(per_ns: list, passes: dict, held: list, scrape: dict) -> list:
    largest = per_ns[-1]
    files = {name: largest[f"{name}_us"] for name in FILES}
    floors = {name: largest[f"{name}_floor_us"] for name in FILES}
    us, base, floor = largest["all_fields_us"], largest["baseline_net_dev_us"], largest["floor_us"]
    cpu, reopened = passes["cpu_per_namespace_us"], passes["reopened_cpu_per_namespace_us"]
    low, high = held[0], held[-1]
    ratio = high["collector_us"] / low["collector_us"]
    off, now, sampled = scrape["off_ms"], scrape["now_ms"], scrape["sampled_ms"]
    daemon = scrape["daemon_pass"]
    interval = scrape["interval_seconds"]
    first = max(scrape["first_sample_seconds"])
    scrape_cpu = scrape["cpu_per_scrape_ms"]
    return [
        check(
            f"netstat sampler CPU per namespace, every field, {passes['namespaces']} namespaces, "
            "against the kernel's own cost of the six files",
            round(cpu / floor, 2),
            "x",
            f"<= {SAMPLER_FLOOR_RATIO:g}x",
            cpu / floor <= SAMPLER_FLOOR_RATIO,
            f"{cpu} µs against {floor} µs ("
            + ", ".join(f"{name} {v}" for name, v in floors.items())
            + f"); files opened every pass {reopened} µs ({reopened / floor:.2f}x); "
            f"{passes['cpu_ms']} ms CPU a pass; in the exporter "
            f"{daemon['cpu_per_namespace_us']} µs ({daemon['cpu_ms']} ms a pass of "
            f"{daemon['namespaces']}), {daemon['cpu_ms'] / interval / 10:.2f}% of a core at "
            f"{interval:g} s; read during the scrape {us} µs (/proc/<pid>/net/dev alone {base} "
            "µs; by file " + ", ".join(f"{name} {v}" for name, v in files.items()) + ")",
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
            f"scrape with netstat sampled every {interval:g} s against off, {scrape['veths']} "
            f"veths, {scrape['containers']} containers",
            round(sampled / off, 2),
            "x",
            f"<= {SCRAPE_RATIO_TARGET:g}x",
            sampled / off <= SCRAPE_RATIO_TARGET,
            f"{sampled} ms against off {off} ms ({scrape['sampled_bytes']} against "
            f"{scrape['off_bytes']} bytes; the collector {scrape['collector_ms']} ms of it; CPU "
            f"per scrape {scrape_cpu['netstat-sampled']} against {scrape_cpu['netstat-off']} ms); "
            f"every family (fields=all) {scrape['all_fields_ms']} ms "
            f"({scrape['all_fields_ms'] / off:.2f}x, {scrape['all_fields_bytes']} bytes, CPU "
            f"{scrape_cpu['netstat-all']} ms); "
            f"read during the scrape (interval 0) {now} ms",
        ),
        check(
            f"netstat: a new container's start to its first sample served, worst of "
            f"{len(scrape['first_sample_seconds'])}",
            first,
            "s",
            f"<= {FIRST_SAMPLE_TARGET_S:g} s",
            first <= FIRST_SAMPLE_TARGET_S,
            "each: " + ", ".join(f"{v:g}" for v in scrape["first_sample_seconds"]),
        ),
    ]
