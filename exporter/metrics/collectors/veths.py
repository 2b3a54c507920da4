"""Every veth of the host namespace and the container it belongs to."""

from __future__ import annotations

from typing import TYPE_CHECKING

from exporter.core.memo import MemoKey
from exporter.core.queries import owner_columns
from exporter.metrics.collectors.base import Collector, Context
from exporter.metrics.exposition import Family, LabelCache, labels

if TYPE_CHECKING:
    from exporter.core.topology import Snapshot, Veth

VETH_INFO: MemoKey[Family] = MemoKey("veth info")


class VethsCollector(Collector):
    name = "veths"
    help = "dockernet_veth_info: each host veth with its container, interface, bridge and network"

    def __init__(self, context: Context | None = None) -> None:
        self._labels = LabelCache(veth_labels)

    def collect(self, snap: Snapshot) -> list[Family]:
        return [snap.memo(VETH_INFO, self.veth_info)]

    def veth_info(self, snap: Snapshot) -> Family:
        fam = Family(
            "dockernet_veth_info",
            "gauge",
            "Each veth in the host namespace; container_id (for a pod: namespace and pod) is empty"
            " when it maps to no running workload.",
            static=True,
        )
        fam.samples = [
            (ls, 1) for ls in self._labels.rendered((v.link.ifindex, v) for v in snap.veths)
        ]
        return fam


def veth_labels(_ifindex: int, v: Veth) -> str:
    return labels(
        veth=v.link.name,
        ifindex=v.link.ifindex,
        **owner_columns(v.container),
        interface=v.interface,
        bridge=v.bridge,
        network=v.network,
    )
