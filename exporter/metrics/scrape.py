"""One scrape: every enabled collector on the current snapshot, plus the
exporter's own health metrics. A failing collector reports success 0 and the
rest is still served. A collector that mostly waits for child processes
(``concurrent``: the NAT collector) runs beside the others.
"""

from __future__ import annotations

import contextvars
import threading
import time
from collections.abc import Callable

import prometheus_client

from exporter import __version__, logs
from exporter.core.topology import Snapshot
from exporter.metrics import per_scrape
from exporter.metrics.collectors import Collector
from exporter.metrics.exposition import Family, labels, render
from exporter.state.daemon import Daemon

log = logs.get_logger()


class Scraper:
    def __init__(self, daemon: Daemon, collectors: list[Collector]) -> None:
        self.daemon = daemon
        self.collectors = collectors
        self._failing: set[str] = set()
        self._failing_lock = threading.Lock()
        self._concurrent = [c for c in collectors if c.concurrent]

    def render(self) -> str:
        # The server listens at once: a scrape before the first read of the kernel and of every
        # runtime waits for it (bounded: --web.first-scrape-wait) rather than reporting a host
        # whose workloads all vanish and come back at each restart.
        self.daemon.wait_first_read()
        snap = self.daemon.snapshot
        success = Family(
            "dockernet_scrape_collector_success",
            "gauge",
            "Whether the collector succeeded on the last scrape (1) or failed (0).",
        )
        duration = Family(
            "dockernet_scrape_collector_duration_seconds",
            "gauge",
            "How long the collector took on the last scrape.",
        )
        families: list[Family] = []
        with per_scrape.scrape():  # what collectors read fresh, read once for all of them
            # A thread of its own per scrape, not a pool: however many scrapes arrive, none waits
            # for a worker while another scrape's collector waits for its child processes.
            beside = {c.name: _Beside(self._run, c, snap) for c in self._concurrent}
            for collector in self.collectors:
                found, seconds = (
                    beside[collector.name].result()
                    if collector.name in beside
                    else self._run(collector, snap)
                )
                families += found or []
                success.add(labels(collector=collector.name), 0 if found is None else 1)
                duration.add(labels(collector=collector.name), round(seconds, 6))
        families += [success, duration] + self._own_metrics(snap)
        return render(families, prometheus_client.generate_latest().decode())

    def _run(self, collector: Collector, snap: Snapshot) -> tuple[list[Family] | None, float]:
        """The collector's families (None when it failed) and how long it took."""
        started = time.perf_counter()
        try:
            found = collector.collect(snap)
        except Exception as exc:
            if self._set_failing(collector.name, True):
                # An OSError is an outage of a source (a missing tool, no permission): one line,
                # no traceback.
                log.error(
                    "collector_failed",
                    collector=collector.name,
                    error=str(exc),
                    exc_info=not isinstance(exc, OSError),
                )
            return None, time.perf_counter() - started
        if self._set_failing(collector.name, False):
            log.info("collector_recovered", collector=collector.name)
        return found, time.perf_counter() - started

    def _set_failing(self, name: str, failing: bool) -> bool:
        """Record whether the collector fails; whether that changed (log it once, not per scrape)."""
        with self._failing_lock:
            if (name in self._failing) == failing:
                return False
            if failing:
                self._failing.add(name)
            else:
                self._failing.discard(name)
            return True

    def _own_metrics(self, snap: Snapshot) -> list[Family]:
        events = Family(
            "dockernet_events_total", "counter", "Events received, by source and action."
        )
        for (source, action), n in sorted(self.daemon.events.copy().items()):
            events.add(labels(source=source, action=action), n)
        resyncs = Family(
            "dockernet_resyncs_total",
            "counter",
            "Full re-reads of the sources, by source and reason.",
        )
        for (source, reason), n in sorted(self.daemon.resyncs.copy().items()):
            resyncs.add(labels(source=source, reason=reason), n)
        return [
            *self._docker_up(),
            self._runtimes_up(),
            *self._runtime_events(),
            Family(
                "dockernet_exporter_build_info",
                "gauge",
                "The exporter's version; value is always 1.",
            ).add(labels(version=__version__), 1),
            events,
            resyncs,
        ]

    def _docker_up(self) -> list[Family]:
        """Only where Docker is followed (a node without it, --docker.host='', has nothing down),
        and once it answered or failed (before, nothing is known: no false 0 at each start)."""
        up_now = self.daemon.runtimes_up
        if "docker" not in up_now:
            return []
        up = Family(
            "dockernet_docker_up",
            "gauge",
            "Whether Docker is up: its last listing succeeded while its events were followed (1), "
            "or a call, its event stream or a ping failed since (0).",
        )
        return [up.add("", int(up_now["docker"]))]

    def _runtimes_up(self) -> Family:
        fam = Family(
            "dockernet_runtime_up",
            "gauge",
            "Whether each runtime is up: its last listing succeeded while its events were followed "
            "(1), or a call, its event stream or a ping failed since (0); absent before its first "
            "answer.",
        )
        for runtime, up in self.daemon.runtimes_up.items():
            fam.add(labels(runtime=runtime), int(up))
        return fam

    def _runtime_events(self) -> list[Family]:
        """None on a host without such a runtime."""
        fam = Family(
            "dockernet_runtime_events_info",
            "gauge",
            "How a runtime's lifecycle events are followed, where it may be done more than one way "
            "(the CRI's: containerd, cri or poll), once chosen; value is always 1.",
        )
        for runtime, source in sorted(self.daemon.sources.items()):
            if mode := source.events_mode:
                fam.add(labels(runtime=runtime, mode=mode), 1)
        return [fam] if fam.samples else []


class _Beside(threading.Thread):
    """One collector run in a thread beside the scrape's others."""

    def __init__(
        self,
        run: Callable[[Collector, Snapshot], tuple[list[Family] | None, float]],
        collector: Collector,
        snap: Snapshot,
    ) -> None:
        super().__init__(name=f"collector-{collector.name}", daemon=True)
        context = contextvars.copy_context()  # the scrape's, with its shared reads
        self._call = lambda: context.run(run, collector, snap)
        self._result: tuple[list[Family] | None, float] = (None, 0.0)
        self.start()

    def run(self) -> None:
        self._result = self._call()

    def result(self) -> tuple[list[Family] | None, float]:
        self.join()
        return self._result
