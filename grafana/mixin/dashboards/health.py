"""Exporter health: up, Docker reachability, collectors, events and resyncs."""

from __future__ import annotations

from .. import config
from ..panels import (
    dashboard,
    mapping,
    problems,
    row,
    sel,
    stat,
    steps,
    summed,
    table,
    target,
    timeseries,
)

REACHABLE = mapping({"1": ("reachable", "green"), "0": ("unreachable", "red")})
PER_HOST = "{{instance}}"


def _summary() -> list:
    return [
        problems("Exporters down", "Exporter targets Prometheus cannot scrape.", f"up{sel()} == 0"),
        stat(
            "Docker API",
            "Whether every exporter reached the Docker API on its last attempt.",
            [target(f"min(dockernet_docker_up{sel()})")],
            mappings=REACHABLE,
            thresholds=steps((None, "red"), (1, "green")),
        ),
        problems(
            "Failing collectors",
            "Collectors that failed on their last scrape, on any host.",
            f"dockernet_scrape_collector_success{sel()} == 0",
        ),
        stat("Exporters", "Exporter targets Prometheus scrapes.", [target(f"count(up{sel()})")]),
    ]


def _scrapes() -> list:
    return [
        timeseries(
            "Up",
            "1 when Prometheus scraped the exporter.",
            [target(f"up{sel()}", PER_HOST)],
            "none",
        ),
        timeseries(
            "Docker API reachable",
            "1 when the Docker API answered the exporter's last attempt.",
            [target(f"dockernet_docker_up{sel()}", PER_HOST)],
            "none",
        ),
        timeseries(
            "Collector success",
            "1 when the collector succeeded on the scrape.",
            [target(f"dockernet_scrape_collector_success{sel()}", "{{instance}} {{collector}}")],
            "none",
        ),
        timeseries(
            "Collector duration",
            "Time each collector took on the scrape.",
            [
                target(
                    f"dockernet_scrape_collector_duration_seconds{sel()}",
                    "{{instance}} {{collector}}",
                )
            ],
            "s",
        ),
        timeseries(
            "Scrape duration",
            "Time Prometheus took to scrape the exporter.",
            [target(f"scrape_duration_seconds{sel()}", PER_HOST)],
            "s",
        ),
        timeseries(
            "Samples per scrape",
            "Samples the exporter served; it grows with containers and veths.",
            [target(f"scrape_samples_scraped{sel()}", PER_HOST)],
            "none",
        ),
    ]


def _events() -> list:
    return [
        summed(
            "Events",
            "Docker and netlink events received per second, by source and action.",
            f"rate(dockernet_events_total{sel()}[$__rate_interval])",
            "instance, source, action",
            "{{instance}} {{source}} {{action}}",
            "cps",
        ),
        summed(
            "Resyncs",
            "Full re-reads of a source: at start, periodic, after a Docker reconnect, "
            "after a netlink overflow.",
            f"increase(dockernet_resyncs_total{sel()}[$__rate_interval])",
            "instance, source, reason",
            "{{instance}} {{source}} {{reason}}",
            "none",
        ),
    ]


def _process() -> list:
    return [
        timeseries(
            "Memory",
            "Resident memory of the exporter process.",
            [target(f"process_resident_memory_bytes{sel()}", PER_HOST)],
            "bytes",
            w=8,
        ),
        timeseries(
            "CPU",
            "CPU time of the exporter process (1 = one core).",
            [target(f"rate(process_cpu_seconds_total{sel()}[$__rate_interval])", PER_HOST)],
            "percentunit",
            w=8,
        ),
        table(
            "Versions",
            "The exporter's version on each host.",
            f"dockernet_exporter_build_info{sel()}",
            {"instance": "Host", "version": "Version"},
            w=8,
        ),
    ]


def build() -> dict:
    panels = [
        *_summary(),
        row("Scrapes"),
        *_scrapes(),
        row("Events"),
        *_events(),
        row("Process"),
        *_process(),
    ]
    return dashboard(
        "exporter",
        "Docker / dockernet-exporter",
        f"Health of dockernet-exporter ({config.SELECTOR}): scrapes, Docker reachability, "
        "collectors, events and resyncs.",
        panels,
    )
