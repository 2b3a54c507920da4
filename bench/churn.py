"""Target 4: container create/remove cycles while scraping: none missed, none stale, flat memory."""

from __future__ import annotations

import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from .checks import check

if TYPE_CHECKING:
    from .load import Load
    from .procs import Exporter

SEEN_TIMEOUT = 10.0  # a container not on /metrics this long after `docker run` returned is missed
STALE_AFTER = 1.0  # a removed container still on a scrape started this long after removal is stale
SCRAPE_SLEEP = 0.05
COUNTERS = re.compile(r'^dockernet_container_receive_bytes_total\{container_id="([0-9a-f]+)"', re.M)


class Watcher:
    """Scrapes in a loop and remembers when each container's counters were first and last seen."""

    def __init__(self, ours: Exporter) -> None:
        self.ours = ours
        self.first: dict = {}
        self.last: dict = {}
        self.scrapes = 0
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            ids = set(COUNTERS.findall(self.ours.text()))
            with self._cond:
                for cid in ids:
                    self.first.setdefault(cid, started)
                    self.last[cid] = started
                self.scrapes += 1
                self._cond.notify_all()
            time.sleep(SCRAPE_SLEEP)

    def wait_seen(self, cid: str) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: cid in self.first, SEEN_TIMEOUT)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def cycle(load: Load, watcher: Watcher, removed: dict[str, float], i: int) -> bool:
    cid = load.run_container(f"{load.prefix}-k{i}", load.extra_network())
    seen = watcher.wait_seen(cid)
    load.remove_container(cid)
    removed[cid] = time.monotonic()
    return seen


def run(load: Load, ours: Exporter, cycles: int, workers: int = 4) -> dict:
    watcher, removed = Watcher(ours), dict[str, float]()
    try:
        warmup = max(1, min(20, cycles // 20))
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(lambda i: cycle(load, watcher, removed, i), range(warmup)))
            rss_before, started = ours.rss_bytes(), time.monotonic()
            seen = list(
                pool.map(lambda i: cycle(load, watcher, removed, i), range(warmup, warmup + cycles))
            )
        elapsed = time.monotonic() - started
        time.sleep(STALE_AFTER + 1)
    finally:
        watcher.stop()
    final = set(COUNTERS.findall(ours.text()))
    stale = [
        c for c, t in removed.items() if c in final or watcher.last.get(c, 0) > t + STALE_AFTER
    ]
    missed = seen.count(False)
    growth = (ours.rss_bytes() - rss_before) / 2**20
    return {
        "cycles": cycles,
        "seconds": round(elapsed, 1),
        "cycles_per_second": round(cycles / elapsed, 2),
        "scrapes": watcher.scrapes,
        "missed": missed,
        "stale": len(stale),
        "rss_before_mb": round(rss_before / 2**20, 1),
        "rss_growth_mb": round(growth, 2),
        "checks": [
            check(
                "churn: containers missed",
                missed,
                "",
                "0",
                missed == 0,
                f"{cycles} cycles, {watcher.scrapes} scrapes",
            ),
            check(
                "churn: stale series",
                len(stale),
                "",
                "0",
                not stale,
                f"> {STALE_AFTER}s after removal",
            ),
            check(
                "churn: RSS growth",
                round(growth, 2),
                "MB",
                "<= 5 MB",
                growth <= 5,
                f"from {rss_before / 2**20:.1f} MB",
            ),
        ],
    }
