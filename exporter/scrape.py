"""One scrape: every enabled collector on the current snapshot, plus the
exporter's own health metrics. A failing collector reports success 0 and the
rest is still served.
"""
from __future__ import annotations

import time

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

    def render(self) -> str:
        snap = self.daemon.snapshot
        families: list[Family] = []
        success = Family("dockernet_scrape_collector_success", "gauge",
                         "Whether the collector succeeded on the last scrape (1) or failed (0).")
        duration = Family("dockernet_scrape_collector_duration_seconds", "gauge",
                          "How long the collector took on the last scrape.")
        for collector in self.collectors:
            started = time.perf_counter()
            ok = self._run(collector, snap, families)
            success.add(labels(collector=collector.name), 1 if ok else 0)
            duration.add(labels(collector=collector.name), round(time.perf_counter() - started, 6))
        families += [success, duration] + self._own_metrics(snap)
        return render(families) + prometheus_client.generate_latest().decode()

    def _run(self, collector, snap, families: list) -> bool:
        try:
            families.extend(collector.collect(snap))
        except Exception as exc:
            if collector.name not in self._failing:
                self._failing.add(collector.name)
                # An OSError is an outage of a source (a missing tool, no permission): one line, no traceback.
                log.error("collector_failed", collector=collector.name, error=str(exc),
                          exc_info=not isinstance(exc, OSError))
            return False
        if collector.name in self._failing:
            self._failing.discard(collector.name)
            log.info("collector_recovered", collector=collector.name)
        return True

    def _own_metrics(self, snap) -> list:
        events = Family("dockernet_events_total", "counter", "Events received, by source and action.")
        for (source, action), n in sorted(self.daemon.events.copy().items()):
            events.add(labels(source=source, action=action), n)
        resyncs = Family("dockernet_resyncs_total", "counter",
                         "Full re-reads of the sources, by source and reason.")
        for (source, reason), n in sorted(self.daemon.resyncs.copy().items()):
            resyncs.add(labels(source=source, reason=reason), n)
        return [
            Family("dockernet_docker_up", "gauge",
                   "Whether the Docker API answered on the last attempt (1) or not (0).").add("", int(snap.docker_up)),
            Family("dockernet_exporter_build_info", "gauge",
                   "The exporter's version; value is always 1.").add(labels(version=__version__), 1),
            events,
            resyncs,
        ]
