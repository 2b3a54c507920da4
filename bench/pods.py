"""Pod freshness: from RunPodSandbox returning to the pod's interface series on /metrics, and from
StopPodSandbox returning to none of its series left, through the CRI of the test containerd
(scripts/cri-env.sh), pods made as the kubelet makes them (bench/cri_pods.py). The series may show
before the call returns (the exporter follows containerd's /tasks/start, sent before the CRI
answers; a stop removes the veth before it returns): such a latency is negative."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from .cri_pods import CriPods
from .freshness import latency_report, while_polling

if TYPE_CHECKING:
    from .procs import Exporter

TARGET_MS = 150.0
NAMESPACE = "dnxb"


def counters_of(name: str) -> str:
    return f'dockernet_pod_receive_bytes_total{{namespace="{NAMESPACE}",pod="{name}"'


def timed_call(
    ours: Exporter, call: Callable[[], object], predicate: Callable[[str], bool], what: str
) -> float:
    """(first response where predicate holds) - (the call's return), in ms."""
    returned: list[int] = []
    seen = while_polling(ours, call, predicate, what, returned)
    return (seen - returned[0]) / 1e6


def one_cycle(pods: CriPods, ours: Exporter, prefix: str, i: int) -> tuple[float, float]:
    name = f"{prefix}-p{i}"
    made: list = []
    appear = timed_call(
        ours,
        lambda: made.append(pods.run(name, NAMESPACE, containers=())),
        lambda t: counters_of(name) in t,
        name,
    )
    vanish = timed_call(ours, lambda: pods.stop(made[0]), lambda t: f'pod="{name}"' not in t, name)
    pods.remove(made[0])
    return appear, vanish


def run(ours: Exporter, prefix: str, n: int) -> dict:
    pods = CriPods()
    try:
        cycles = [one_cycle(pods, ours, prefix, i) for i in range(n)]
    finally:
        pods.cleanup()
    return latency_report(
        cycles,
        ("pods: RunPodSandbox -> series, p99", "pods: StopPodSandbox -> gone, p99"),
        TARGET_MS,
        f"upper bound: first scrape showing it; {n} pods",
    ) | {"pods": n}
