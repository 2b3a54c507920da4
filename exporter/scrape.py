"""One scrape: every enabled collector on the current snapshot, plus the
exporter's own health metrics. A failing collector reports success 0 and the
rest is still served. A collector that mostly waits for child processes
(``concurrent = True``: the NAT collector) runs beside the others.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import prometheus_client
import structlog

from . import __version__
from .daemon import Daemon
from .exposition import Family, labels, render

log = structlog.get_logger()


class Scraper:
    def __init__(self, daemon: Daemon, collectors: list) -> None:
        self.daemon = daemon
        self.collectors = collectors
        self._failing: set[str] = set()
        self._concurrent = [c for c in collectors if getattr(c, "concurrent", False)]
        self._beside = (
            ThreadPoolExecutor(thread_name_prefix="collector") if self._concurrent else None
        )

    def render(self) -> str:
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
        started = {c.name: self._beside.submit(self._run, c, snap) for c in self._concurrent}
        families: list[Family] = []
        for collector in self.collectors:
            found, seconds = (
                started[collector.name].result()
                if collector.name in started
                else self._run(collector, snap)
            )
            families += found or []
            success.add(labels(collector=collector.name), 0 if found is None else 1)
            duration.add(labels(collector=collector.name), round(seconds, 6))
        families += [success, duration] + self._own_metrics(snap)
        return render(families) + prometheus_client.generate_latest().decode()

    def _run(self, collector, snap) -> tuple[list | None, float]:
        """The collector's families (None when it failed) and how long it took."""
        started = time.perf_counter()
        try:
            found = collector.collect(snap)
        except Exception as exc:
            if collector.name not in self._failing:
                self._failing.add(collector.name)
                # An OSError is an outage of a source (a missing tool, no permission): one line, no traceback.
                log.error(
                    "collector_failed",
                    collector=collector.name,
                    error=str(exc),
                    exc_info=not isinstance(exc, OSError),
                )
            return None, time.perf_counter() - started
        if collector.name in self._failing:
            self._failing.discard(collector.name)
            log.info("collector_recovered", collector=collector.name)
        return found, time.perf_counter() - started

    def _own_metrics(self, snap) -> list:
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
            Family(
                "dockernet_docker_up",
                "gauge",
                "Whether the Docker API answered on the last attempt (1) or not (0).",
            ).add("", int(snap.docker_up)),
            Family(
                "dockernet_exporter_build_info",
                "gauge",
                "The exporter's version; value is always 1.",
            ).add(labels(version=__version__), 1),
            events,
            resyncs,
        ]
