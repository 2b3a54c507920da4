"""Target 3: CPU and memory at the largest load, scraped like Prometheus would (gzip, every 15 s)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from .checks import check

if TYPE_CHECKING:
    from .procs import Exporter


def run(ours: Exporter, node: Exporter, seconds: float, interval: float = 15.0) -> dict:
    exporters = (ours, node)
    cpu0 = {e.name: e.cpu_seconds() for e in exporters}
    started = time.monotonic()
    peak = ours.rss_bytes()
    scrapes = 0
    while True:
        for e in exporters:
            e.scrape(gzip=True)
        scrapes += 1
        peak = max(peak, ours.rss_bytes())
        left = seconds - (time.monotonic() - started)
        if left <= 0:
            break
        time.sleep(min(interval, left))
    elapsed = time.monotonic() - started
    cpu = {
        name: (e.cpu_seconds() - cpu0[name]) / elapsed * 100
        for name, e in ((e.name, e) for e in exporters)
    }
    ours_cpu, node_cpu = round(cpu[ours.name], 3), round(cpu[node.name], 3)
    rss, node_rss = peak / 2**20, node.rss_bytes() / 2**20
    return {
        "seconds": round(elapsed, 1),
        "scrapes": scrapes,
        "interval": interval,
        "cpu_percent": ours_cpu,
        "node_exporter_cpu_percent": node_cpu,
        "rss_mb": round(rss, 1),
        "node_exporter_rss_mb": round(node_rss, 1),
        "checks": [
            check(
                f"steady CPU, {elapsed:.0f} s",
                ours_cpu,
                "% of a core",
                "<= 1%",
                ours_cpu <= 1,
                f"node_exporter netdev {node_cpu:.2f}%",
            ),
            check(
                "steady RSS (peak)",
                round(rss, 1),
                "MB",
                "<= 80 MB",
                rss <= 80,
                f"node_exporter {node_rss:.1f} MB",
            ),
        ],
    }
