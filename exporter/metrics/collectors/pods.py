"""Kubernetes pods: their interface counters and metadata, labelled with the join keys of
kube-state-metrics (``namespace``, ``pod``). A pod is its sandbox, which holds the namespace; its
containers are listed in ``dockernet_pod_container_info``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from exporter.core.memo import MemoKey
from exporter.core.model import Workload
from exporter.metrics.collectors.base import Context
from exporter.metrics.collectors.containers import ContainersCollector, LinkStats
from exporter.metrics.exposition import Family, LabelCache, labels

if TYPE_CHECKING:
    from exporter.core.topology import Snapshot, WorkloadView

POD_INFO: MemoKey[tuple[Family, Family]] = MemoKey("pod info")


class PodsCollector(ContainersCollector):
    name = "pods"
    help = "per-pod interface counters, dockernet_pod_info and dockernet_pod_container_info"
    prefix = "dockernet_pod"
    counter_help = "pod"

    def __init__(
        self,
        context: Context,
        *,
        link_stats: LinkStats | None = None,
    ) -> None:
        super().__init__(context, link_stats=link_stats)
        self._pod_labels = LabelCache(pod_labels)
        self._member_labels = LabelCache(member_labels)

    @staticmethod
    def selects(c: Workload) -> bool:
        return c.is_pod

    def collect(self, snap: Snapshot) -> list[Family]:
        """Nothing on a host that follows no pod runtime: its /metrics stays as it was."""
        if not snap.pod_runtimes:
            return []
        return super().collect(snap)

    def info(self, snap: Snapshot) -> list[Family]:
        found = snap.memo(POD_INFO, self.pod_info)
        return list(found)

    def pod_info(self, snap: Snapshot) -> tuple[Family, Family]:
        ready = [v for v in snap.containers if v.container.is_pod and v.container.ready]
        pods = Family(
            "dockernet_pod_info",
            "gauge",
            "Each ready pod sandbox; value is always 1.",
            static=True,
        )
        pods.samples = [
            (ls, 1) for ls in self._pod_labels.rendered((v.container.id, v) for v in ready)
        ]
        members = Family(
            "dockernet_pod_container_info",
            "gauge",
            "Each running container of a ready pod; value is always 1.",
            static=True,
        )
        keyed = ((m.id, (v.container, m)) for v in ready for m in v.container.members)
        members.samples = [(ls, 1) for ls in self._member_labels.rendered(keyed)]
        return pods, members


def pod_labels(_sandbox_id: str, view: WorkloadView) -> str:
    c = view.container
    return labels(
        namespace=c.pod_namespace,
        pod=c.pod_name,
        uid=c.pod_uid,
        sandbox_id=c.id,
        runtime=c.runtime,
        host_network=str(view.network_mode == "host").lower(),
    )


def member_labels(_container_id: str, pair: tuple) -> str:
    pod, member = pair
    return labels(
        namespace=pod.pod_namespace,
        pod=pod.pod_name,
        container=member.name,
        container_id=member.id,
        image=member.image,
    )
