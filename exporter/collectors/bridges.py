"""Linux bridges of the host namespace: Docker network, state, ports and port states."""
from __future__ import annotations

from ..exposition import Family, labels
from ..model import Link
from ..topology import Snapshot

# IFLA_BRPORT_STATE values (BR_STATE_*).
PORT_STATES = ("disabled", "listening", "learning", "forwarding", "blocking")


class BridgesCollector:
    name = "bridges"
    help = "dockernet_bridge_*: each Linux bridge with its Docker network, state, ports and port states"
    default = True

    def __init__(self, **_options) -> None:
        pass

    def collect(self, snap: Snapshot) -> list:
        return snap.memo("bridges", render)


def bridges(snap: Snapshot) -> list[Link]:
    return sorted((l for l in snap.links.values() if l.kind == "bridge"), key=lambda l: l.name)


def ports_by_bridge(snap: Snapshot) -> dict[int, list[Link]]:
    """Bridge ifindex -> its ports, by name."""
    out: dict[int, list[Link]] = {}
    for l in sorted(snap.links.values(), key=lambda l: l.name):
        if l.master:
            out.setdefault(l.master, []).append(l)
    return out


def port_state(link: Link) -> str:
    if link.port_state is None or link.port_state >= len(PORT_STATES):
        return "unknown"
    return PORT_STATES[link.port_state]


def render(snap: Snapshot) -> list[Family]:
    info = Family("dockernet_bridge_info", "gauge",
                  "Each Linux bridge of the host namespace, one series per subnet of its Docker network "
                  "(network is empty for bridges Docker does not manage); value is always 1.")
    up = Family("dockernet_bridge_up", "gauge", "Whether the bridge's operational state is up (1) or not (0).")
    count = Family("dockernet_bridge_ports", "gauge",
                   "Number of ports of the bridge (a Linux bridge holds at most 1,024).")
    states = Family("dockernet_bridge_port_state", "gauge",
                    "STP state of each bridge port (disabled, listening, learning, forwarding, blocking); "
                    "value is always 1.")
    by_bridge = {n.bridge: n for n in snap.networks.values() if n.bridge}
    ports = ports_by_bridge(snap)
    for br in bridges(snap):
        net = by_bridge.get(br.name)
        for subnet, gateway in (net.subnets if net and net.subnets else (("", ""),)):
            info.add(labels(bridge=br.name, network=net.name if net else "", driver=net.driver if net else "",
                            subnet=subnet, gateway=gateway), 1)
        up.add(labels(bridge=br.name), int(br.operstate == "up"))
        members = ports.get(br.ifindex, [])
        count.add(labels(bridge=br.name), len(members))
        for port in members:
            states.add(labels(bridge=br.name, veth=port.name, state=port_state(port)), 1)
    return [info, up, count, states]
