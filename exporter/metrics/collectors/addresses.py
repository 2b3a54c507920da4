"""Every address of every workload interface, as the kernel has it: containers' in
``dockernet_container_address_info``, pods' (labelled ``namespace``, ``pod``) in
``dockernet_pod_address_info``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from exporter.core.memo import MemoKey
from exporter.core.model import Address
from exporter.core.queries import owner, workload_addresses
from exporter.metrics.collectors.base import Collector, Context
from exporter.metrics.exposition import Family, LabelCache, labels

if TYPE_CHECKING:
    from exporter.core.topology import Interface, Snapshot

ADDRESS_INFO: MemoKey[tuple[Family, ...]] = MemoKey("address info")

HELP = (
    "Each address of each {0} interface, read from the kernel in the {0}'s namespace; value is "
    "always 1."
)


class AddressesCollector(Collector):
    name = "addresses"
    help = (
        "dockernet_container_address_info and dockernet_pod_address_info: each IPv4 and IPv6 "
        "address of each container and pod interface"
    )

    def __init__(self, context: Context | None = None) -> None:
        self._labels = LabelCache(address_labels)
        self._pod_labels = LabelCache(address_labels)

    def collect(self, snap: Snapshot) -> list[Family]:
        found = snap.memo(ADDRESS_INFO, self.address_info)
        return list(found)

    def address_info(self, snap: Snapshot) -> tuple[Family, ...]:
        """The pod family only on a host that follows a pod runtime: elsewhere /metrics stays
        as it was."""
        pairs = workload_addresses(snap)
        containers = self._family("container", self._labels, pairs, pods=False)
        if not snap.pod_runtimes:
            return (containers,)
        return containers, self._family("pod", self._pod_labels, pairs, pods=True)

    @staticmethod
    def _family(kind: str, cache: LabelCache, pairs: list, pods: bool) -> Family:
        fam = Family(f"dockernet_{kind}_address_info", "gauge", HELP.format(kind), static=True)
        keyed = (
            ((i.container.id, i.interface, a.address, a.prefix_length), (i, a))
            for i, a in pairs
            if i.container.is_pod == pods
        )
        fam.samples = [(ls, 1) for ls in cache.rendered(keyed)]
        return fam


def address_labels(_key: tuple, interface_and_address: tuple[Interface, Address]) -> str:
    i, a = interface_and_address
    return labels(**owner(i.container), **_address_fields(i, a))


def _address_fields(i: Interface, a: Address) -> dict:
    return {
        "interface": i.interface,
        "network": i.network,
        "family": a.family,
        "address": a.address,
        "prefix_length": a.prefix_length,
        "mac": i.mac,
    }
