"""The topology page under load: /metrics scraped every SCRAPE_INTERVAL alone, then as long while
VISITORS clients reload /topology as fast as they can (each request on a new connection, asking
for gzip as browsers do, the body read whole). The visitors run in a process of their own, so that
their threads never share an interpreter lock with the scrapes being timed. The host's load is
the curve's largest point (grown here when this scenario runs alone)."""

from __future__ import annotations

import http.client
import multiprocessing
import threading
import time
from typing import TYPE_CHECKING

from .checks import check
from .scrape_curve import grow, host_veths
from .stats import median, percentile
from .topology import scrapes

if TYPE_CHECKING:
    from multiprocessing.queues import Queue
    from multiprocessing.synchronize import Event

    from .load import Load
    from .procs import Exporter

VISITORS = 20
SLOWDOWN_TARGET = 3.0
START_TIMEOUT = 30.0


def reload_page(port: int, stopping: threading.Event, counts: list) -> None:
    """One visitor: GET /topology again as soon as the last one is in, until told to stop."""
    while not stopping.is_set():
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        try:
            conn.request("GET", "/topology", headers={"Accept-Encoding": "gzip"})
            response = conn.getresponse()
            body = response.read()
            counts[0 if response.status == 200 else 1] += 1
            counts[2] += len(body)
        except OSError:
            counts[1] += 1
        finally:
            conn.close()


def visitors(
    port: int, n: int, started: Event, stop: Event, results: Queue[tuple[int, ...]]
) -> None:
    """The visitors' process: n threads reloading until `stop` is set; then (pages, errors, bytes)."""
    stopping, threads = threading.Event(), []
    counts = [[0, 0, 0] for _ in range(n)]
    for c in counts:
        threads.append(threading.Thread(target=reload_page, args=(port, stopping, c), daemon=True))
        threads[-1].start()
    started.set()
    stop.wait()
    stopping.set()
    for t in threads:
        t.join(30)
    results.put(tuple(sum(c[k] for c in counts) for k in range(3)))


def under_load(ours: Exporter, n: int, seconds: float) -> tuple[list[float], tuple]:
    """Scrape times while n visitors reload the page, and what the visitors got."""
    ctx = multiprocessing.get_context("spawn")
    started, stop, results = ctx.Event(), ctx.Event(), ctx.Queue()
    proc = ctx.Process(target=visitors, args=(ours.port, n, started, stop, results), daemon=True)
    proc.start()
    try:
        if not started.wait(START_TIMEOUT):
            raise RuntimeError("the page's visitors did not start")
        began = time.monotonic()
        times = scrapes(ours, seconds)
        elapsed = time.monotonic() - began
        stop.set()
        pages, errors, received = results.get(timeout=60)
    finally:
        stop.set()
        proc.join(60)
        if proc.is_alive():
            proc.kill()
    return times, (pages, errors, received, elapsed)


def run(
    load: Load, ours: Exporter, veths: int, containers: int, seconds: float, n: int = VISITORS
) -> dict:
    grow(load, ours, veths, containers, host_veths() - len(load.veths) - len(load.containers))
    idle = scrapes(ours, seconds)
    loaded, (pages, errors, received, elapsed) = under_load(ours, n, seconds)
    idle_ms, loaded_ms = median(idle) * 1000, median(loaded) * 1000
    slowdown = loaded_ms / idle_ms
    print(
        f"  /metrics p50 idle {idle_ms:.2f} ms, with {n} visitors reloading /topology "
        f"{loaded_ms:.2f} ms ({slowdown:.2f}x); {pages / elapsed:.0f} pages/s served",
        flush=True,
    )
    return {
        "veths": host_veths(),
        "visitors": n,
        "seconds": seconds,
        "idle_ms": round(idle_ms, 2),
        "idle_p90_ms": round(percentile(idle, 90) * 1000, 2),
        "loaded_ms": round(loaded_ms, 2),
        "loaded_p90_ms": round(percentile(loaded, 90) * 1000, 2),
        "scrapes": len(idle) + len(loaded),
        "pages": pages,
        "page_errors": errors,
        "pages_per_second": round(pages / elapsed, 1),
        "page_bytes_mean": round(received / pages) if pages else 0,
        "checks": [
            check(
                f"/metrics p50 while {n} visitors reload /topology",
                round(slowdown, 2),
                "x",
                f"<= {SLOWDOWN_TARGET:g}x",
                slowdown <= SLOWDOWN_TARGET and errors == 0 and pages > 0,
                f"{loaded_ms:.2f} ms against {idle_ms:.2f} ms idle; {pages / elapsed:.0f} pages/s, "
                f"{errors} errors",
            )
        ],
    }
