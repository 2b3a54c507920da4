"""Following one workload source, in three threads that only enqueue for the state loop:

- its event stream, reconnected with backoff (doubled after every stream that fails before its
  first item; a ping that finds the runtime back after a failed one retries at once);
- its health, pinged with a bound (a hung runtime answers nothing and ends no stream);
- its calls: a worker that looks each event's workload up and makes the runtime's listings, so
  that a slow or hung call of this runtime delays nothing of another's. Its queue is bounded: on
  overflow the queued events are dropped for one listing.

A runtime is up once a listing succeeds while its events are followed (RuntimeListed.followed);
any failure of its stream, ping or calls (an error of any kind, parse errors included) makes it
down (RuntimeDown) until then. Any gap asks for a listing: events may have been missed.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections import deque
from collections.abc import Callable

from exporter import logs
from exporter.core.model import Network, Workload
from exporter.sources.runtimes.workloads import (
    EXPECTED,
    Effect,
    WorkloadEvent,
    WorkloadSource,
    describe,
)
from exporter.state.changes import (
    Change,
    RuntimeDown,
    RuntimeEvent,
    RuntimeListed,
)

log = logs.get_logger()

BACKOFF_MIN, BACKOFF_MAX = 0.5, 30.0
STABLE = BACKOFF_MAX  # a stream open that long without an item also resets the backoff
HEALTH_INTERVAL = 5.0
SUBSCRIBE_WAIT = 2.0  # the first listing waits that long at most for the first subscription
QUEUE_MAX = 10_000  # events waiting for their look-up


class Follower:
    def __init__(
        self,
        source: WorkloadSource,
        emit: Callable[[Change], None],
        health_interval: float = HEALTH_INTERVAL,
        queue_max: int = QUEUE_MAX,
    ) -> None:
        self.source = source
        self.emit = emit
        self.health_interval = health_interval
        self.queue_max = queue_max
        self.attempted = threading.Event()  # the first subscription was tried
        self._stopping = threading.Event()
        self._wake = threading.Event()  # the runtime answers again: retry the stream now
        self._work = threading.Condition()
        self._events: deque[WorkloadEvent] = deque()  # waiting for their look-up
        self._listing = ""  # a listing is wanted, for that reason
        self._followed = False  # the event stream is open
        self._missed = False  # something may have happened unseen: list at the next success
        self._ping_failed = False
        self._running: set[str] = set()  # this runtime's workloads as last read
        self._networks: set[str] = set()  # ids and names of its networks as last read
        self._logged: set[tuple[str, str]] = set()  # unexpected errors logged with a traceback

    @property
    def runtime(self) -> str:
        return self.source.runtime

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()
        with self._work:
            self._work.notify_all()
        self.source.close_events()

    # -- the event stream ----------------------------------------------------------------------

    def run_events(self) -> None:
        backoff, since = BACKOFF_MIN, None
        while not self._stopping.is_set():
            opened, items = time.monotonic(), 0
            try:
                try:
                    stream = self.source.events(since=since)
                finally:
                    self.attempted.set()
                opened = time.monotonic()
                self._stream_opened(after_gap=since is not None)
                since = since or time.time()
                for event in stream:
                    items += 1
                    since = event.time or since
                    self._enqueue(event)
                error = "the event stream ended"
            except Exception as exc:
                error = self._failure(exc, "events")
            self._stream_closed(error)
            if items or time.monotonic() - opened >= STABLE:
                backoff = BACKOFF_MIN
            if self._sleep(backoff):
                return
            self.source.close()
            backoff = min(backoff * 2, BACKOFF_MAX)

    def _sleep(self, backoff: float) -> bool:
        """Wait out the backoff, or less if a ping finds the runtime back; whether to stop."""
        self._wake.wait(backoff)
        self._wake.clear()
        return self._stopping.is_set()

    def _stream_opened(self, after_gap: bool) -> None:
        with self._work:
            self._followed = True
            missed, self._missed = self._missed or after_gap, False
        if missed:
            self.resync("reconnect")

    def _stream_closed(self, error: str) -> None:
        with self._work:
            self._followed = False
        if not self._stopping.is_set():
            self.down(error)

    # -- health ----------------------------------------------------------------------------------

    def run_health(self) -> None:
        """A bounded ping: a runtime that stops answering is down; once it answers again, its stream
        is retried at once, or, if the stream stayed open (a hung runtime), it is listed again."""
        while not self._stopping.wait(self.health_interval):
            try:
                answered = self.source.ping()
            except Exception as exc:
                answered = False
                self._failure(exc, "ping")
            if answered:
                self._ping_answered()
            else:
                with self._work:
                    self._ping_failed = True
                self.down(f"no answer to a ping within {self.source.timeout:g}s")

    def _ping_answered(self) -> None:
        with self._work:
            back, self._ping_failed = self._ping_failed, False
            relist = self._followed and (back or self._missed)
            if relist:
                self._missed = False
        if relist:
            self.resync("reconnect")
        elif back:
            self._wake.set()

    # -- the worker: look-ups and listings ------------------------------------------------------

    def resync(self, reason: str) -> None:
        """Ask the worker for a listing (one, however often asked before it runs)."""
        with self._work:
            self._listing = self._listing or reason
            self._work.notify()

    def missed(self) -> None:
        """Events may have gone unseen: list again at the next success."""
        with self._work:
            self._missed = True

    def down(self, error: str) -> None:
        """The stream, a ping or a call failed: down until listed while followed."""
        self.missed()
        if not self._stopping.is_set():
            self.emit(RuntimeDown(self.runtime, error))

    def _enqueue(self, event: WorkloadEvent) -> None:
        with self._work:
            if len(self._events) < self.queue_max:
                self._events.append(event)
            else:
                dropped = len(self._events)
                self._events.clear()
                self._listing = "overflow"
                log.warning(
                    f"{self.runtime}_events_overflow",
                    dropped=dropped,
                    detail="the runtime's calls are slower than its events: read it whole",
                )
            self._work.notify()

    def run_lookups(self) -> None:
        """The first listing (once the first subscription was tried, so that nothing between the
        two is missed), then each event's look-up and each listing asked for, in order."""
        if not self.attempted.wait(SUBSCRIBE_WAIT):
            self.missed()  # a subscription still pending: list again once it succeeds
        self.resync("start")
        while (job := self._next()) is not None:
            if isinstance(job, str):
                self._list(job)
            else:
                self._look_up(job)

    def _next(self) -> str | WorkloadEvent | None:
        with self._work:
            while not self._stopping.is_set():
                if self._listing:
                    reason, self._listing = self._listing, ""
                    return reason
                if self._events:
                    return self._events.popleft()
                self._work.wait()
        return None

    def _list(self, reason: str) -> None:
        try:
            networks = tuple(self.source.networks())
            workloads = tuple(self.source.workloads())
        except Exception as exc:
            error = self._failure(exc, "listing")
            self.missed()
            self.emit(RuntimeListed(self.runtime, reason, error=error))
            return
        self._running = {c.id for c in workloads}
        self._networks = _names(networks)
        self.emit(RuntimeListed(self.runtime, reason, networks, workloads, self._followed))

    def _look_up(self, event: WorkloadEvent) -> None:
        try:
            item = self._answer(event)
        except Exception as exc:
            # What this event told is lost until the runtime is listed again: it is down meanwhile,
            # so that no namespace of its counts as unowned.
            self.down(self._failure(exc, "look-up"))
            item = RuntimeEvent(self.runtime, dataclasses.replace(event, effect=Effect.NOTHING))
        self.emit(item)

    def _answer(self, event: WorkloadEvent) -> RuntimeEvent:
        """The event with what the runtime says now of its workload (and of its networks)."""
        wanted = event.effect == Effect.CHANGED or (
            event.effect == Effect.CHANGED_IF_KNOWN and event.workload_id in self._running
        )
        found: Workload | None = None
        networks: tuple[Network, ...] | None = None
        if wanted and event.workload_id:
            found = self.source.workload(event.workload_id)
        if found is not None:
            self._running.add(found.id)
        elif event.effect != Effect.NETWORKS:
            self._running.discard(event.workload_id)
        # A runtime that tells no network's creation (Podman): read them when a workload uses one
        # not seen yet.
        if event.effect == Effect.NETWORKS or (found is not None and not self._knows(found)):
            networks = tuple(self.source.networks())
            self._networks = _names(networks)
        return RuntimeEvent(self.runtime, event, found, networks)

    def _knows(self, c: Workload) -> bool:
        return all(
            ep.network_id in self._networks or ep.network in self._networks for ep in c.endpoints
        )

    def _failure(self, exc: Exception, call: str) -> str:
        """What failed, in one line; an unexpected kind of error is also logged once with its
        traceback."""
        error = describe(exc)
        key = (call, type(exc).__name__)
        if not isinstance(exc, EXPECTED) and key not in self._logged:
            self._logged.add(key)
            log.error(f"{self.runtime}_{call}_failed", error=error, exc_info=exc)
        return error


def _names(networks: tuple[Network, ...]) -> set[str]:
    return {n.id for n in networks} | {n.name for n in networks}
