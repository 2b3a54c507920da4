"""Scrape time on a Kubernetes-sized node: 110 pods (the kubelet's default pod limit per node)
through the CRI of the test containerd, plus synthetic veths up to 1,000 host veths, against
node_exporter's netdev scrape on the same host. Its veths and pods are removed afterwards, so
that the scrape curve that follows starts from the host as it was."""

from __future__ import annotations

import concurrent.futures
import time
from typing import TYPE_CHECKING

from .checks import check
from .cri_pods import CriPods
from .scrape_curve import host_veths, measure, settle

if TYPE_CHECKING:
    from .load import Load
    from .procs import Exporter

TARGET_MS = 20.0
NAMESPACE = "dnxb"
TAG = "q"
WORKERS = 4


def run(load: Load, ours: Exporter, node: Exporter, pods_n: int, veths: int, repeats: int) -> dict:
    pods, before = CriPods(), host_veths()
    try:
        names = [f"{load.prefix}-q{i}" for i in range(pods_n)]
        with concurrent.futures.ThreadPoolExecutor(WORKERS) as pool:
            list(pool.map(lambda n: pods.run(n, NAMESPACE, containers=()), names))
        load.add_veths(veths - host_veths(), TAG)
        settle(ours)
        text = ours.text()
        shown = sum(f'pod="{n}"' in text for n in names)
        row = {"veths": host_veths(), "pods": shown} | measure([ours, node], repeats)
    finally:
        load.delete_namespaces(TAG)
        pods.cleanup()
        wait_gone(before)
    print(
        f"  scrape at {row['veths']} veths with {shown} pods: ours "
        f"{row['dockernet-exporter_plain_ms']} ms, node_exporter {row['node_exporter_plain_ms']} ms",
        flush=True,
    )
    return row | {"checks": checks(row, pods_n)}


def wait_gone(veths: int, timeout: float = 60.0) -> None:
    """Until the host has no more veths than before (the kernel removes a deleted namespace's
    pairs asynchronously)."""
    deadline = time.monotonic() + timeout
    while host_veths() > veths and time.monotonic() < deadline:
        time.sleep(0.2)


def checks(row: dict, pods_n: int) -> list:
    out = []
    for mode in ("plain", "gzip"):
        ours, node = row[f"dockernet-exporter_{mode}_ms"], row[f"node_exporter_{mode}_ms"]
        out.append(
            check(
                f"scrape, {row['veths']} veths with {row['pods']} pods, {mode}",
                ours,
                "ms",
                f"<= {TARGET_MS:g} ms, every pod shown",
                ours <= TARGET_MS and row["pods"] == pods_n,
                f"node_exporter {node} ms: {ours / node:.3f}x",
            )
        )
    return out
