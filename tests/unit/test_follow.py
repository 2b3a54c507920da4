"""Following one runtime (sources/follow.py) with a scripted source: the stream's backoff, a ping that
finds the runtime back, the worker's bounded queue, its listings and look-ups, and what each failure
tells the state loop. The backoff's waits are recorded, never slept."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

import pytest

from exporter.core.model import Network, Workload
from exporter.sources.runtimes.workloads import Effect, SourceUnavailable, WorkloadEvent
from exporter.state.changes import Change, RuntimeDown, RuntimeEvent, RuntimeListed
from exporter.state.follow import BACKOFF_MAX, BACKOFF_MIN, Follower

STARTED = WorkloadEvent("start", Effect.CHANGED, "c1")


class Scripted:
    """A source whose streams, listings and look-ups do what the test says."""

    runtime, address, timeout = "fake", "fake://", 1.0
    has_pods, events_mode, netns_dir = False, "stream", ""
    event_actions: tuple[str, ...] = ("start",)

    def __init__(
        self,
        streams: Iterable[tuple[list[WorkloadEvent], Exception | None]] = (),
        workloads: Sequence[Workload] | Exception = (),
        lookup: Workload | Exception | None = None,
    ) -> None:
        self.streams = list(streams)  # each: a list of events, then an exception or None
        self._workloads, self.lookup = workloads, lookup
        self.pinged = True

    def events(self, since: float | None = None) -> Iterator[WorkloadEvent]:
        items, error = self.streams.pop(0) if self.streams else ([], ValueError("garbage"))

        def stream() -> Iterator[WorkloadEvent]:
            yield from items
            if error is not None:
                raise error

        return stream()

    def workloads(self) -> list[Workload]:
        if isinstance(self._workloads, Exception):
            raise self._workloads
        return list(self._workloads)

    def workload(self, workload_id: str) -> Workload | None:
        if isinstance(self.lookup, Exception):
            raise self.lookup
        return self.lookup

    def networks(self) -> list[Network]:
        return []

    def close_events(self) -> None: ...

    def close(self) -> None: ...

    def ping(self) -> bool:
        return self.pinged


def follow(source: Scripted, retries: int) -> tuple[Follower, list, list[float]]:
    """Run the event stream for `retries` backoffs; (follower, what it emitted, the waits)."""
    emitted: list = []
    f = Follower(source, emitted.append)
    waits: list[float] = []

    def sleep(backoff: float) -> bool:
        waits.append(backoff)
        return len(waits) >= retries

    f._sleep = sleep  # type: ignore[method-assign]
    f.run_events()
    return f, emitted, waits


def test_a_stream_failing_before_its_first_item_doubles_the_backoff():
    _, emitted, waits = follow(Scripted(), retries=8)
    assert waits == [0.5, 1, 2, 4, 8, 16, BACKOFF_MAX, BACKOFF_MAX]
    downs = [e for e in emitted if isinstance(e, RuntimeDown)]
    assert len(downs) == 8 and downs[0].error == "ValueError: garbage"


def test_a_stream_that_delivered_an_item_retries_at_the_shortest_backoff():
    streams = [([STARTED], SourceUnavailable("gone"))] * 4
    f, _, waits = follow(Scripted(streams), retries=4)
    assert waits == [BACKOFF_MIN] * 4
    assert list(f._events) == [STARTED] * 4  # each for its look-up


def test_reopening_after_a_gap_asks_for_a_listing():
    streams: list[tuple[list[WorkloadEvent], Exception | None]] = [
        ([], SourceUnavailable("gone")),
        ([], SourceUnavailable("gone")),
    ]
    f, _, _ = follow(Scripted(streams), retries=2)
    assert f._listing == "reconnect"


def test_a_ping_after_a_failed_one_wakes_the_stream_at_once():
    f = Follower(Scripted(), list[Change]().append)
    f._ping_answered()
    assert not f._wake.is_set(), "a runtime that kept answering pings keeps its backoff"
    f._ping_failed = True
    f._ping_answered()
    assert f._wake.is_set()
    assert not f._listing  # not followed yet: the stream's reopening asks for the listing


def test_a_ping_back_while_the_stream_stayed_open_asks_for_a_listing():
    f = Follower(Scripted(), list[Change]().append)
    f._followed, f._ping_failed = True, True
    f._ping_answered()
    assert f._listing == "reconnect" and not f._wake.is_set()


def test_the_queue_overflows_into_one_listing():
    f = Follower(Scripted(), list[Change]().append, queue_max=3)
    for _ in range(3):
        f._enqueue(STARTED)
    assert len(f._events) == 3 and f._listing == ""
    f._enqueue(STARTED)
    assert not f._events and f._listing == "overflow"
    assert f._next() == "overflow"


def test_a_listing_is_up_only_while_followed():
    pod = Workload(id="c1", name="n")
    emitted: list = []
    f = Follower(Scripted(workloads=[pod]), emitted.append)
    f._list("start")
    f._followed = True
    f._list("reconnect")
    assert [(e.reason, e.followed, e.workloads) for e in emitted] == [
        ("start", False, (pod,)),
        ("reconnect", True, (pod,)),
    ]


@pytest.mark.parametrize("error", [ValueError("bad"), KeyError("Id"), RuntimeError("bug")])
def test_a_failed_listing_says_what_failed(error):
    emitted: list = []
    Follower(Scripted(workloads=error), emitted.append)._list("periodic")
    (listed,) = emitted
    assert isinstance(listed, RuntimeListed) and listed.error.startswith(type(error).__name__)


def test_a_failed_look_up_is_the_runtime_down_and_the_event_applied_as_nothing():
    emitted: list = []
    f = Follower(Scripted(lookup=SourceUnavailable("timed out")), emitted.append)
    f._look_up(STARTED)
    down, event = emitted
    assert down == RuntimeDown("fake", "timed out")
    assert isinstance(event, RuntimeEvent) and event.event.effect == Effect.NOTHING


def test_a_look_up_carries_the_workload():
    pod = Workload(id="c1", name="n")
    emitted: list = []
    Follower(Scripted(lookup=pod), emitted.append)._look_up(STARTED)
    assert emitted == [RuntimeEvent("fake", STARTED, pod, None)]
