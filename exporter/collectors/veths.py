"""Every veth of the host namespace and the container it belongs to."""
from __future__ import annotations

from ..exposition import Family, labels
from ..topology import Snapshot


class VethsCollector:
    name = "veths"
    help = "dockernet_veth_info: each host veth with its container, interface, bridge and network"
    default = True

    def __init__(self, **_options) -> None:
        pass

    def collect(self, snap: Snapshot) -> list:
        return [snap.memo("veth_info", veth_info)]


def veth_info(snap: Snapshot) -> Family:
    fam = Family("dockernet_veth_info", "gauge",
                 "Each veth in the host namespace; container_id is empty when it maps to no running container.",
                 static=True)
    for v in snap.veths:
        c = v.container
        fam.add(labels(veth=v.link.name, ifindex=v.link.ifindex, container_id=c.id if c else "",
                       container_name=c.name if c else "", interface=v.interface,
                       bridge=v.bridge, network=v.network), 1)
    return fam
