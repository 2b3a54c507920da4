"""Target 5: a burst of veth pairs: exact state on /metrics within 2 s of the last one, no crash."""

from __future__ import annotations

import re
import time
from typing import TYPE_CHECKING

from .checks import check

if TYPE_CHECKING:
    from .load import Load
    from .procs import Exporter

TIMEOUT = 30.0


def veth_bridges(text: str, tag: str) -> dict:
    """veth name -> bridge label, for the veths whose name starts with tag."""
    pattern = re.compile(
        r'^dockernet_veth_info\{veth="(' + re.escape(tag) + r'[^"]*)"[^}]*bridge="([^"]*)"', re.M
    )
    return dict(pattern.findall(text))


def settle(ours: Exporter, tag: str, expected: dict) -> float:
    """Seconds until /metrics shows exactly `expected` (name -> bridge) for veths named tag*."""
    started = time.perf_counter()
    while time.perf_counter() - started < TIMEOUT:
        if not ours.alive():
            raise RuntimeError("the exporter died during the storm")
        if veth_bridges(ours.text(), tag) == expected:
            return time.perf_counter() - started
        time.sleep(0.02)
    return float("inf")


def run(load: Load, ours: Exporter, pairs: int) -> dict:
    tag = f"{load.tag}t"
    started = time.perf_counter()
    created = load.add_veths(pairs, "t")
    burst = time.perf_counter() - started
    to_correct = settle(ours, tag, created)
    started = time.perf_counter()
    load.delete_namespaces("t")
    burst_del = time.perf_counter() - started
    to_gone = settle(ours, tag, {})
    alive = ours.alive()
    return {
        "pairs": pairs,
        "create_seconds": round(burst, 3),
        "settle_seconds": round(to_correct, 3),
        "delete_seconds": round(burst_del, 3),
        "gone_seconds": round(to_gone, 3),
        "alive": alive,
        "checks": [
            check(
                f"storm: {pairs} pairs -> exact state",
                round(to_correct, 3),
                "s",
                "<= 2 s",
                to_correct <= 2 and alive,
                f"namespaces, bridge and pairs made in {burst:.2f} s",
            ),
            check(
                f"storm: {pairs} deleted -> gone",
                round(to_gone, 3),
                "s",
                "<= 2 s",
                to_gone <= 2 and alive,
                f"their namespaces deleted in {burst_del:.2f} s",
            ),
        ],
    }
