"""What collectors read fresh is shared within one scrape (the overlay namespaces' link dumps serve
the containers and the overlay collector), a collector run beside the others included, and read
again by the next scrape: the snapshot outlives scrapes, counters must not."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from types import SimpleNamespace

from exporter.core import topology
from exporter.core.memo import MemoKey
from exporter.metrics import per_scrape
from exporter.metrics.collectors.base import Collector
from exporter.metrics.exposition import Family
from exporter.metrics.scrape import Scraper

KEY: MemoKey[int] = MemoKey("test reads")


class Reading(Collector):
    """Reports the value read for KEY in its scrape."""

    name = "first"
    help = "test"

    def __init__(self, read: Callable[[], int]) -> None:
        self.read = read
        self.seen: list[int] = []

    def collect(self, snap: topology.Snapshot) -> list[Family]:
        self.seen.append(per_scrape.once(KEY, self.read))
        return []


class Beside(Reading):
    name = "beside"
    concurrent = True


class Last(Reading):
    name = "last"


def fake_daemon() -> SimpleNamespace:
    return SimpleNamespace(
        wait_first_read=lambda: None,
        snapshot=topology.empty(),
        events=Counter(),
        resyncs=Counter(),
        runtimes_up={},
        sources={},
    )


def test_one_read_per_scrape_shared_by_every_collector_and_none_kept_across():
    reads: list[int] = []
    lock = threading.Lock()

    def read() -> int:
        with lock:
            reads.append(len(reads) + 1)
            return reads[-1]

    first, beside, last = Reading(read), Beside(read), Last(read)
    scraper = Scraper(fake_daemon(), [first, beside, last])  # type: ignore[arg-type]
    scraper.render()
    scraper.render()
    assert reads == [1, 2]
    assert first.seen == beside.seen == last.seen == [1, 2]


def test_outside_a_scrape_every_call_reads():
    calls: list[int] = []

    def read() -> int:
        calls.append(1)
        return len(calls)

    assert (per_scrape.once(KEY, read), per_scrape.once(KEY, read)) == (1, 2)
