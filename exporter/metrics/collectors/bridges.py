"""Linux bridges of the host namespace: Docker network, state, ports and port states."""

from __future__ import annotations

from typing import TYPE_CHECKING

from exporter.core.memo import MemoKey
from exporter.core.model import Link
from exporter.core.queries import bridges, grouped_ports, port_state
from exporter.metrics.collectors.base import Collector, Context
from exporter.metrics.exposition import Family, LabelCache, labels

if TYPE_CHECKING:
    from exporter.core.topology import Snapshot

BRIDGES: MemoKey[list[Family]] = MemoKey("bridges")


class BridgesCollector(Collector):
    name = "bridges"
    help = "dockernet_bridge_*: each Linux bridge with its Docker network, state, ports and port states"

    def __init__(self, context: Context | None = None) -> None:
        # Per bridge, kept while its ports are the same objects in the same order (the snapshot's links
        # keep both while nothing changes).
        self._port_blocks = LabelCache(port_label_sets)

    def collect(self, snap: Snapshot) -> list[Family]:
        return snap.memo(BRIDGES, lambda s: render(s, self._port_blocks))


def port_label_sets(bridge: str, ports: tuple[Link, ...]) -> list[str]:
    """The label sets of a bridge's port states, by port name."""
    return [
        labels(bridge=bridge, veth=p.name, state=port_state(p))
        for p in sorted(ports, key=lambda p: p.name)
    ]


def render(snap: Snapshot, port_blocks: LabelCache) -> list[Family]:
    info = Family(
        "dockernet_bridge_info",
        "gauge",
        "Each Linux bridge of the host namespace, one series per subnet of its network (Docker, "
        "Podman or CNI; network is empty for bridges no followed runtime manages); value is "
        "always 1.",
        static=True,
    )
    up = Family(
        "dockernet_bridge_up",
        "gauge",
        "Whether the bridge's operational state is up (1) or not (0).",
        static=True,
    )
    count = Family(
        "dockernet_bridge_ports",
        "gauge",
        "Number of ports of the bridge (a Linux bridge holds at most 1,023).",
        static=True,
    )
    states = Family(
        "dockernet_bridge_port_state",
        "gauge",
        "STP state of each bridge port (disabled, listening, learning, forwarding, blocking); "
        "value is always 1.",
        static=True,
    )
    by_bridge = {n.bridge: n for n in snap.networks.values() if n.bridge}
    ports = grouped_ports(snap)
    members_of = [(br, ports.get(br.ifindex, ())) for br in bridges(snap)]
    blocks = port_blocks.rendered((br.name, members) for br, members in members_of)
    for (br, members), block in zip(members_of, blocks, strict=False):
        net = by_bridge.get(br.name)
        for subnet, gateway in net.subnets if net and net.subnets else (("", ""),):
            info.add(
                labels(
                    bridge=br.name,
                    network=net.name if net else "",
                    driver=net.driver if net else "",
                    subnet=subnet,
                    gateway=gateway,
                ),
                1,
            )
        up.add(labels(bridge=br.name), int(br.operstate == "up"))
        count.add(labels(bridge=br.name), len(members))
        states.samples.extend((ls, 1) for ls in block)
    return [info, up, count, states]
