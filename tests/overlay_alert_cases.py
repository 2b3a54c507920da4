"""promtool cases of the overlay alerts, in tests/integration/test_rules_promtool.py's shape:
alert -> (input series [(series, healthy, faulty)], minutes from the fault's start until the
expression is true, labels of the alert beyond the host's, its summary, its description)."""

from __future__ import annotations

from collections.abc import Callable

OV = {"network": "ov"}
PEER = {**OV, "peer": "198.18.250.2", "interface": "eth0"}
LEAK = {"kind": "vxlan_device", "name": "vx-001001-abcde"}


def other_host(series: Callable[[str, dict], str], name: str, labels: dict, host: str) -> str:
    return series(name, labels).replace('instance="host1:9917"', f'instance="{host}"')


MTU_SUMMARY = (
    "Overlay network ov on host1:9917: MTU too large for the underlay towards 198.18.250.2"
)
MTU_DESCRIPTION = (
    "Overlay ov on host1:9917 carries packets bigger than the underlay towards 198.18.250.2 "
    "(interface eth0) can take once VXLAN adds its 50 bytes: large packets between containers on "
    "different nodes are lost while pings pass."
)


def at_once(labels: dict, inputs: list, summary: str, description: str) -> tuple:
    """A case whose expression is true as soon as the fault starts."""
    return inputs, 0, labels, summary, description


def overlay_cases(series: Callable[[str, dict], str]) -> dict:
    subnet = {"network": "ov", "subnet": "198.18.232.0/24"}
    peers = "dockernet_overlay_peers"
    mtu = [  # the underlay's 1500 - 50 holds an overlay MTU of 1450; its 1450 does not
        (series("dockernet_overlay_underlay_mtu_bytes", PEER), "1500", "1450"),
        (series("dockernet_overlay_mtu_bytes", OV), "1450", "1450"),
    ]
    return {
        # 228 of 254 is 89.8%, 229 is 90.2%.
        "DockernetNetworkAddressesNearExhaustion": at_once(
            subnet,
            [
                (series("dockernet_network_addresses_used", subnet), "228", "229"),
                (series("dockernet_network_addresses_capacity", subnet), "254", "254"),
            ],
            "network ov (198.18.232.0/24) on host1:9917 uses 90.16% of its addresses",
            "Subnet 198.18.232.0/24 of network ov has 90.16% of its addresses in use as host1:9917 "
            "sees them; when none is left, containers cannot join it and service tasks stay in New.",
        ),
        # Transmit keeps rising, receive stops at 300 (its last rise at 5m): true once the 5m
        # window holds no rise, at 10m.
        "DockernetOverlayVxlanTransmitWithoutReceive": (
            [
                (series("dockernet_overlay_vxlan_transmit_packets_total", OV), "0+60", "360+60"),
                (series("dockernet_overlay_vxlan_receive_packets_total", OV), "0+60", "300"),
                (series(peers, OV), "1", "1"),
            ],
            4,
            OV,
            "Overlay network ov on host1:9917 sends VXLAN but receives none",
            "The VXLAN device of overlay ov on host1:9917 transmits to its peers but has received "
            "nothing for 10m: UDP 4789 from the other nodes does not arrive (a firewall, a security "
            "group, a NAT between the nodes, or checksum offload dropping the packets).",
        ),
        # Three nodes on `ov`: each sees two peers, until host1 loses one.
        "DockernetOverlayPeerMissing": (
            [
                (series(peers, OV), "2", "1"),
                (other_host(series, peers, OV, "host2:9917"), "2", "2"),
                (other_host(series, peers, OV, "host3:9917"), "2", "2"),
            ],
            0,
            OV,
            "Overlay network ov on host1:9917 sees 1 peers, fewer than the other nodes on it",
            "The VXLAN forwarding database of overlay ov on host1:9917 has 1 remote nodes while "
            "more nodes with that network are scraped: this node does not send to some of them "
            "(gossip on port 7946 between the nodes broken, or a node that left without being "
            "removed).",
        ),
        "DockernetOverlayMtuMismatch": at_once(PEER, mtu, MTU_SUMMARY, MTU_DESCRIPTION),
        "DockernetOverlayLeaked": (
            [(series("dockernet_overlay_leaked_info", LEAK), "_", "1")],
            0,
            LEAK,
            "Leaked overlay vxlan_device vx-001001-abcde on host1:9917",
            "vx-001001-abcde (vxlan_device) on host1:9917 belongs to no overlay network Docker "
            'lists: a leaked VXLAN device blocks the creation of the network with that VNI ("file '
            'exists"), and a leaked namespace holds its devices.',
        ),
    }
