"""Flows: the cost of following the host's conntrack table (docs/flows.md#cost); scenario
`flows` of `python -m bench`, or alone:

    .venv/bin/python -m bench.flows                 # every figure, full size
    .venv/bin/python -m bench.flows --entries 1000 --rate 100 --seconds 5 --idle-seconds 5
    .venv/bin/python -m bench.flows --only dump     # one figure

Two exporters of its own, with the flows collector and without (the same flags otherwise).

1. dump: ``conntrack.dump(keep)`` as the collector reads the table at start and after lost
   events, over a table holding --entries more entries (written with ctnetlink,
   IPCTNL_MSG_CT_NEW, between addresses of 198.19.250.0/23 that no workload holds, removed
   after), median of --repeats, against ``conntrack -L > /dev/null`` median of --repeats in the
   same run; twice: entries of no workload (turned down from their sources) and entries in a
   workload network (all decoded, kept); target at most 1.5x each.
2. scrape: the flows collector's ``collect`` plus the text of its families with 1,000 series,
   in process (its cost follows the series, not the table); and the collector's own duration on
   the exporter's ``/metrics`` with the table as it is and with --entries more; target at most
   2 ms each.
3. rate: two containers on a network of their own, the client opening --rate connections a
   second to the server for --seconds; the exporter's count against the generator's, its CPU
   (utime + stime over the window) and RSS growth; targets exact, at most 15% of one core, at
   most 20 MB.
4. idle: both exporters' CPU over --idle-seconds with no traffic of the benchmark's; target no
   CPU added by the collector (at most 0.1% of a core: a clock tick is 0.017% over a minute).
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from exporter.core import flow_peers
from exporter.sources.kernel import conntrack as ct

from . import procs, report
from .checks import check
from .flow_load import count_table, delete_entries, flow_value, rate_figure, until, write_entries
from .scrape_curve import collector_ms

if TYPE_CHECKING:
    from docker import DockerClient

    from .procs import Exporter

LOCK_PATH = "/run/dockernet-tests.lock"


def median_seconds(run: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _attribution(*subnets: str) -> flow_peers.Attribution:
    return flow_peers.Attribution(
        {}, frozenset(), tuple(filter(None, map(flow_peers.subnet, subnets)))
    )


# The benchmark's entries are of no workload where the workload networks are the test dockerd's
# (198.18.0.0/24, 198.19.0.0/24), and all may be where 198.19.250.0/23 is one.
NONE_KEPT = ("198.18.0.0/24", "198.19.0.0/24")
ALL_KEPT = ("198.19.250.0/23",)


def dump_figure(entries: int, repeats: int, meanwhile: Callable[[], float]) -> dict:
    """The dump, both ways, against `conntrack -L`; `meanwhile()` measured with the entries in."""
    before = count_table()
    write_entries(entries)
    try:
        size = count_table()

        def theirs() -> None:
            with open(os.devnull, "w") as null:
                subprocess.run(["conntrack", "-L"], stdout=null, stderr=null, check=True)

        def ours(attr: flow_peers.Attribution, kept: Callable[[int], bool]) -> Callable[[], None]:
            def read() -> None:
                assert kept(len(list(ct.dump(attr.keep))))

            return read

        theirs_s = median_seconds(theirs, repeats)
        none_s = median_seconds(ours(_attribution(*NONE_KEPT), lambda n: n < entries), repeats)
        all_s = median_seconds(ours(_attribution(*ALL_KEPT), lambda n: n >= entries), repeats)
        during = meanwhile()
    finally:
        delete_entries(entries)
    return {
        "table_entries": size,
        "table_before": before,
        "conntrack_list_seconds": round(theirs_s, 4),
        "none_kept_seconds": round(none_s, 4),
        "all_kept_seconds": round(all_s, 4),
        "none_kept_ratio": round(none_s / theirs_s, 2),
        "all_kept_ratio": round(all_s / theirs_s, 2),
        "meanwhile": during,
    }


def collect_ms(series: int, repeats: int) -> float:
    """collect() and the text of its families, with `series` flows, in process."""
    from exporter.core import topology
    from exporter.metrics.collectors.base import Context
    from exporter.metrics.collectors.flows import SHOWN, FlowsCollector, Follower
    from exporter.metrics.exposition import render
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
    render(collector.collect(snap))
    return round(median_seconds(lambda: render(collector.collect(snap)), repeats) * 1000, 3)


def collector_cost_ms(exporter: Exporter, repeats: int) -> float:
    """The flows collector's own duration, median over `repeats` scrapes of /metrics."""
    return statistics.median(collector_ms(exporter.text())["flows"] for _ in range(repeats))


def idle_figure(on: Exporter, off: Exporter, seconds: float) -> dict:
    """Both exporters' CPU over the same window, with no traffic of the benchmark's."""
    before = on.cpu_seconds(), off.cpu_seconds()
    time.sleep(seconds)
    after = on.cpu_seconds(), off.cpu_seconds()
    on_pct, off_pct = ((a - b) / seconds * 100 for a, b in zip(after, before, strict=True))
    return {"seconds": seconds, "on_percent": round(on_pct, 3), "off_percent": round(off_pct, 3)}


FIGURES = ("idle", "scrape", "dump", "rate")
DUMP_RATIO, SCRAPE_MS, CPU_SHARE, RSS_MB, IDLE_ADDED_PERCENT = 1.5, 2.0, 0.15, 20.0, 0.1


def _exporter(name: str, out: Path, flags: tuple) -> Exporter:
    port = procs.free_port()
    argv = [sys.executable, "-m", "exporter", f"--web.listen-address=127.0.0.1:{port}"]
    return procs.Exporter(name, [*argv, "--log.level=warn", *flags], out / f"{name}.log", port)


def run(
    client: DockerClient | None,
    image: str,
    out: Path,
    entries: int,
    rate: int,
    seconds: float,
    idle_seconds: float,
    repeats: int,
    only: tuple = FIGURES,
    flags: tuple = (),
) -> dict:
    """The figures asked for, and their checks."""
    on = _exporter("dockernet-exporter-flows", out, ("--collector.flows", *flags)).wait_ready()
    off = (
        _exporter("dockernet-exporter-noflows", out, flags).wait_ready() if "idle" in only else None
    )
    results: dict = {"entries": entries}
    try:
        until(
            lambda: flow_value(on, "dockernet_scrape_collector_success", collector="flows") == 1,
            60,
        )
        if off is not None:
            time.sleep(2)  # past both start-ups
            results["idle"] = idle_figure(on, off, idle_seconds)
        if "scrape" in only:
            results["scrape"] = {
                "collect_1000_series_ms": collect_ms(1000, max(repeats, 21)),
                "collector_ms": collector_cost_ms(on, max(repeats, 11)),
            }
        if "dump" in only:
            results["dump"] = dump_figure(
                entries, repeats, lambda: collector_cost_ms(on, max(repeats, 11))
            )
        if "rate" in only and client is not None:
            results["rate"] = rate_figure(client, image, on, rate, seconds)
    finally:
        for e in (on, off):
            if e is not None:
                e.stop()
    results["checks"] = checks(results)
    return results


def checks(r: dict) -> list:
    out = []
    if "idle" in r:
        idle = r["idle"]
        added = round(idle["on_percent"] - idle["off_percent"], 3)
        out.append(
            check(
                f"flows: idle CPU added, {idle['seconds']:.0f} s",
                added,
                "% of a core",
                f"<= {IDLE_ADDED_PERCENT}% (none)",
                added <= IDLE_ADDED_PERCENT,
                f"flows on {idle['on_percent']}%, off {idle['off_percent']}%",
            )
        )
    if "scrape" in r:
        ms = r["scrape"]["collect_1000_series_ms"]
        out.append(
            check(
                "flows: collect(), 1,000 series", ms, "ms", f"<= {SCRAPE_MS:g} ms", ms <= SCRAPE_MS
            )
        )
    if "dump" in r:
        d = r["dump"]
        theirs = f"conntrack -L {d['conntrack_list_seconds']} s"
        for way, key in (("none kept", "none_kept"), ("all kept", "all_kept")):
            ratio = d[f"{key}_ratio"]
            met = d[f"{key}_seconds"] <= DUMP_RATIO * d["conntrack_list_seconds"]
            out.append(
                check(
                    f"flows: dump, {d['table_entries']} entries, {way} ({d[key + '_seconds']} s)",
                    ratio,
                    "x",
                    f"<= {DUMP_RATIO}x",
                    met,
                    theirs,
                )
            )
    if "scrape" in r:
        small, large = r["scrape"]["collector_ms"], r.get("dump", {}).get("meanwhile")
        for size, ms in (("as it is", small), (f"+{r['entries']} entries", large)):
            if ms is not None:
                out.append(
                    check(
                        f"flows: collector's scrape, table {size}",
                        ms,
                        "ms",
                        f"<= {SCRAPE_MS:g} ms",
                        ms <= SCRAPE_MS,
                    )
                )
    if "rate" in r:
        t = r["rate"]
        what = f"flows: {t['rate']} connections/s for {t['seconds']:g} s"
        out += [
            check(
                f"{what}, counted",
                t["counted"],
                "",
                "exact",
                t["counted"] == t["generated"],
                f"made {t['generated']}",
            ),
            check(
                f"{what}, CPU",
                round(t["cpu_share_of_a_core"] * 100, 2),
                "% of a core",
                f"<= {CPU_SHARE:.0%}",
                t["cpu_share_of_a_core"] <= CPU_SHARE,
            ),
            check(
                f"{what}, RSS growth",
                t["rss_growth_mb"],
                "MB",
                f"<= {RSS_MB:g} MB",
                t["rss_growth_mb"] <= RSS_MB,
            ),
        ]
    return out


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.flows", description=__doc__.split("\n\n")[0])
    p.add_argument("--entries", type=int, default=100_000)
    p.add_argument("--rate", type=int, default=2000)
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--idle-seconds", type=float, default=60.0)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--only", choices=FIGURES, action="append")
    p.add_argument("--image", default=os.environ.get("TEST_IMAGE", "dockernet-test:busybox"))
    p.add_argument("--out", type=Path, default=Path("bench/out"))
    args = p.parse_args()
    only = tuple(args.only or FIGURES)
    args.out.mkdir(parents=True, exist_ok=True)
    lock = os.open(LOCK_PATH, os.O_CREAT | os.O_RDWR, 0o644)
    fcntl.flock(lock, fcntl.LOCK_EX)
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    client = None
    if "rate" in only:
        import docker

        client = docker.from_env()
    r = run(
        client,
        args.image,
        args.out,
        args.entries,
        args.rate,
        args.seconds,
        args.idle_seconds,
        args.repeats,
        only,
    )
    print(json.dumps({"started": started, **r}, default=str))
    print(report.table(r["checks"]))


if __name__ == "__main__":
    main()
