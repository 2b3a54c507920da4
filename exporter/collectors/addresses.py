"""Every address of every container interface, as the kernel has it."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..exposition import Family, LabelCache, labels
from ..model import Address
from .base import Collector, Context

if TYPE_CHECKING:
    from ..topology import Interface, Snapshot


class AddressesCollector(Collector):
    name = "addresses"
    help = (
        "dockernet_container_address_info: each IPv4 and IPv6 address of each container interface"
    )

    def __init__(self, context: Context | None = None) -> None:
        self._labels = LabelCache(address_labels)

    def collect(self, snap: Snapshot) -> list[Family]:
        return [snap.memo("address_info", self.address_info)]

    def address_info(self, snap: Snapshot) -> Family:
        fam = Family(
            "dockernet_container_address_info",
            "gauge",
            "Each address of each container interface, read from the kernel in the container's "
            "namespace; value is always 1.",
            static=True,
        )
        keyed = (
            ((i.container.id, i.interface, a.address, a.prefix_length), (i, a))
            for i, a in container_addresses(snap)
        )
        fam.samples = [(ls, 1) for ls in self._labels.rendered(keyed)]
        return fam


def address_labels(_key: tuple, interface_and_address: tuple[Interface, Address]) -> str:
    i, a = interface_and_address
    return labels(
        container_id=i.container.id,
        container_name=i.container.name,
        interface=i.interface,
        network=i.network,
        family=a.family,
        address=a.address,
        prefix_length=a.prefix_length,
        mac=i.mac,
    )


def container_addresses(snap: Snapshot) -> list[tuple[Interface, Address]]:
    """(interface, address) pairs; the kernel's addresses of the interface's own namespace."""
    by_ifindex: dict[tuple[int, int], list[Address]] = {}
    for nsid, addresses in snap.addresses.items():
        for a in addresses:
            by_ifindex.setdefault((nsid, a.ifindex), []).append(a)
    return [
        (i, a)
        for i in snap.interfaces
        if i.container.nsid is not None
        for a in by_ifindex.get((i.container.nsid, i.ifindex), ())
    ]
