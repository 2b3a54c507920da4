"""A Swarm node's /metrics, overlay against bridge-only, on a dockerd of its own in a network
namespace of its own (tests/swarm_helpers.py): 200 containers on two bridge networks, then 200
containers on 20 attachable overlay networks (each also on docker_gwbridge); the median scrape of
each and the collectors' durations; then the time from an overlay container's `docker run` to its
eth0 series. Not part of `make bench` yet (it needs no load of its own but the node):

    .venv/bin/python -m bench.overlay

Everything it makes goes with the node, also after a failure.
"""

from __future__ import annotations

import concurrent.futures
import functools
import sys
import time
from pathlib import Path

from .stats import median

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from swarm_helpers import Cluster, Node, NodeExporter  # the tests' helpers, by path

from helpers import TEST_IMAGE, wait_for

CONTAINERS, NETWORKS, SCRAPES, STARTS = 200, 20, 30, 20
WORKERS = 4


def scrape_ms(exporter: NodeExporter) -> tuple[float, str]:
    times, text = [], ""
    for _ in range(SCRAPES):
        started = time.perf_counter()
        text = exporter.text()
        times.append((time.perf_counter() - started) * 1000)
    return median(times), text


def durations(text: str) -> dict[str, float]:
    prefix = 'dockernet_scrape_collector_duration_seconds{collector="'
    return {
        line[len(prefix) :].split('"')[0]: round(float(line.split()[-1]) * 1000, 2)
        for line in text.splitlines()
        if line.startswith(prefix)
    }


def serves_eth0(exporter: NodeExporter, name: str) -> bool:
    return f'container_name="{name}",interface="eth0"' in exporter.text()


def run_on(node: Node, network: str, names: list[str]) -> None:
    def run(name: str) -> None:
        node.docker("run", "-d", "--name", name, "--network", network, TEST_IMAGE, "sleep", "3600")

    with concurrent.futures.ThreadPoolExecutor(WORKERS) as pool:
        list(pool.map(run, names))


def served(exporter: NodeExporter, family: str, count: int) -> bool:
    return exporter.text().count(family + "{") >= count


def bridge_only(node: Node, exporter: NodeExporter) -> float:
    for i in range(2):
        node.docker("network", "create", "--subnet", f"198.19.{100 + i}.0/24", f"br{i}")
        run_on(node, f"br{i}", [f"b{i}-{j}" for j in range(CONTAINERS // 2)])
    wait_for(lambda: served(exporter, "dockernet_container_info", CONTAINERS), 120, interval=1)
    ms, text = scrape_ms(exporter)
    print(f"bridge-only, {CONTAINERS} containers: /metrics {ms:.1f} ms, {len(text)} bytes")
    print(f"  collectors (ms): {durations(text)}", flush=True)
    node.docker("rm", "-f", *node.docker("ps", "-aq").split())
    return ms


def overlays(node: Node, exporter: NodeExporter) -> float:
    for i in range(NETWORKS):
        node.docker(
            "network",
            "create",
            "-d",
            "overlay",
            "--attachable",
            "--subnet",
            f"198.19.{i}.0/24",
            f"ov{i}",
        )
        run_on(node, f"ov{i}", [f"o{i}-{j}" for j in range(CONTAINERS // NETWORKS)])
    wait_for(lambda: served(exporter, "dockernet_container_info", CONTAINERS), 180, interval=1)
    wait_for(lambda: served(exporter, "dockernet_overlay_network_info", NETWORKS), 60, interval=1)
    ms, text = scrape_ms(exporter)
    print(
        f"overlay, {CONTAINERS} containers on {NETWORKS} overlays: /metrics {ms:.1f} ms, "
        f"{len(text)} bytes"
    )
    print(f"  collectors (ms): {durations(text)}", flush=True)
    return ms


def freshness(node: Node, exporter: NodeExporter) -> list[float]:
    """ms from `docker run` returning to the new overlay container's eth0 series."""
    out = []
    for k in range(STARTS):
        name = f"fresh{k}"
        node.docker("run", "-d", "--name", name, "--network", "ov0", TEST_IMAGE, "sleep", "3600")
        started = time.perf_counter()
        wait_for(functools.partial(serves_eth0, exporter, name), 10)
        out.append((time.perf_counter() - started) * 1000)
    return sorted(out)


def main() -> None:
    cluster = Cluster("dnxb-ov")
    try:
        node = cluster.add()
        cluster.init()
        exporter = NodeExporter(node).wait_ready()
        try:
            bridge_ms = bridge_only(node, exporter)
            overlay_ms = overlays(node, exporter)
            print(f"overlay / bridge-only: {overlay_ms / bridge_ms:.2f}")
            starts = freshness(node, exporter)
            print(
                f"overlay container start to its series: median {median(starts):.0f} ms, "
                f"max {starts[-1]:.0f} ms of {STARTS}"
            )
        finally:
            exporter.stop()
    finally:
        cluster.close()


if __name__ == "__main__":
    main()
