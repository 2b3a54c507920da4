"""Following one workload source: its event stream, reconnected with backoff,
and its health, pinged with a bound (a hung runtime answers nothing and ends
no stream). Any gap (a reconnect, a runtime that stopped answering and answers
again) asks for a resync of the whole state: events may have been missed."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from exporter import logs
from exporter.sources.runtimes.workloads import SourceUnavailable, WorkloadSource
from exporter.state.changes import Change, ResyncWanted, RuntimeEvent, RuntimeUp

log = logs.get_logger()

BACKOFF_MIN, BACKOFF_MAX = 0.5, 30.0
HEALTH_INTERVAL = 5.0


class Follower:
    def __init__(
        self,
        source: WorkloadSource,
        emit: Callable[[Change], None],
        health_interval: float = HEALTH_INTERVAL,
    ) -> None:
        self.source = source
        self.emit = emit
        self.health_interval = health_interval
        self.attempted = threading.Event()  # the first subscription was tried
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._up: bool | None = None
        self._missed = False  # something may have happened unseen: resync at the next success

    @property
    def runtime(self) -> str:
        return self.source.runtime

    def stop(self) -> None:
        self._stopping.set()
        self.source.close_events()

    def run_events(self) -> None:
        backoff, since = BACKOFF_MIN, None
        while not self._stopping.is_set():
            try:
                try:
                    stream = self.source.events(since=since)
                finally:
                    self.attempted.set()
                self.reachable(since is not None)
                since = since or time.time()
                backoff = BACKOFF_MIN
                for event in stream:
                    since = event.time or since
                    self.emit(RuntimeEvent(self.runtime, event))
                if not self._stopping.is_set():
                    log.warning(f"{self.runtime}_events_ended", detail="reconnecting")
            except SourceUnavailable as exc:
                self.unreachable(str(exc))
            if self._stopping.wait(backoff):
                return
            self.source.close()
            backoff = min(backoff * 2, BACKOFF_MAX)

    def run_health(self) -> None:
        """A bounded ping: a runtime that stops answering is down, and up again when it answers
        (the event stream of a hung runtime neither ends nor errs)."""
        while not self._stopping.wait(self.health_interval):
            if self.source.ping():
                self.reachable(False)
            else:
                self.unreachable(f"no answer to a ping within {self.source.timeout:g}s")

    def missed(self) -> None:
        """Events may have gone unseen: resync at the next success."""
        with self._lock:
            self._missed = True

    def reachable(self, after_gap: bool) -> None:
        with self._lock:
            was, self._up = self._up, True
            missed, self._missed = self._missed or after_gap, False
        if was is not True:
            self.emit(RuntimeUp(self.runtime, True))
        if was is False:
            log.info(f"{self.runtime}_reachable", address=self.source.address)
        if missed or was is False:
            self.emit(ResyncWanted(self.runtime, "reconnect"))

    def unreachable(self, error: str) -> None:
        """Called on a failed stream or ping, and by the daemon when a follow-up call failed."""
        with self._lock:
            was, self._up, self._missed = self._up, False, True
        if was is not False and not self._stopping.is_set():
            log.warning(
                f"{self.runtime}_unreachable",
                address=self.source.address,
                error=error,
                detail="retrying with backoff; veths are served without workload names",
            )
            self.emit(RuntimeUp(self.runtime, False))
