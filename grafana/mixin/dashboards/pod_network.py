"""Pod network: the container network board for Kubernetes pods (through the CRI), by namespace
and pod."""

from __future__ import annotations

from .. import config
from ..owners import POD
from ..panels import dashboard, query_variable, sel
from .container_network import Board, panels

S = config.SELECTOR
FILTER = ('namespace=~"$namespace"', 'pod=~"$pod"')
PODS = f'dockernet_pod_info{{{S}, instance=~"$instance"'


def _per_pod(counter: str) -> str:
    return POD.rate(counter, sel(*FILTER))


BOARD = Board(
    owner=POD,
    filters=FILTER,
    veth_filter=", ".join(FILTER),
    veth_columns={
        "namespace": "Namespace",
        "pod": "Pod",
        "interface": "Interface",
        "bridge": "Bridge",
        "network": "Network",
    },
    per_namespace=_per_pod,
    top_by="namespace, pod",
)


def build() -> dict:
    namespace = query_variable("namespace", "Namespace", PODS + "}", "namespace")
    # "All" pods is every non-empty pod label: the veth table then leaves out Docker's veths.
    pod = query_variable("pod", "Pod", PODS + ', namespace=~"$namespace"}', "pod", all_value=".+")
    return dashboard(
        "pod-network",
        "Kubernetes / Pod network",
        "Traffic, errors and drops of every pod interface, from its host veth, and the TCP, UDP "
        "and conntrack health of each pod's namespace.",
        panels(BOARD, "CNI"),
        [namespace, pod],
    )
