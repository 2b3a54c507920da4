"""Alerts on Docker's overlay networks and on every network's address use (the overlay collector)."""

from __future__ import annotations

from . import config
from .rules import ON, SEVERITY_CRITICAL, SEVERITY_WARNING, alert

S = config.SELECTOR
W = config.RATE_WINDOW
NETWORK = "network {{ $labels.network }}"
KEY = "(job, instance, network)"


def overlay_alerts() -> list:
    return [
        alert(
            "DockernetNetworkAddressesNearExhaustion",
            f"dockernet_network_addresses_used{{{S}}}\n  / dockernet_network_addresses_capacity{{{S}}}"
            f" > {config.ADDRESS_USE_WARNING_RATIO}",
            SEVERITY_WARNING,
            f"{NETWORK} ({{{{ $labels.subnet }}}}) {ON} uses {{{{ $value | humanizePercentage }}}} of "
            "its addresses",
            "Subnet {{ $labels.subnet }} of network {{ $labels.network }} has "
            "{{ $value | humanizePercentage }} of its addresses in use as {{ $labels.instance }} sees "
            "them; when none is left, containers cannot join it and service tasks stay in New.",
        ),
        alert(
            "DockernetOverlayVxlanTransmitWithoutReceive",
            f"rate(dockernet_overlay_vxlan_transmit_packets_total{{{S}}}[{W}]) > 0\n"
            f"and on {KEY} rate(dockernet_overlay_vxlan_receive_packets_total{{{S}}}[{W}]) == 0\n"
            f"and on {KEY} dockernet_overlay_peers{{{S}}} > 0",
            SEVERITY_CRITICAL,
            f"Overlay {NETWORK} {ON} sends VXLAN but receives none",
            "The VXLAN device of overlay {{ $labels.network }} on {{ $labels.instance }} transmits to "
            "its peers but has received nothing for "
            + config.FOR["DockernetOverlayVxlanTransmitWithoutReceive"]
            + ": UDP 4789 from the other nodes does not arrive (a firewall, a security group, "
            "a NAT between the nodes, or checksum offload dropping the packets).",
        ),
        alert(
            "DockernetOverlayPeerMissing",
            f"dockernet_overlay_peers{{{S}}}\n"
            f"  < on (network) group_left () (count by (network) (dockernet_overlay_peers{{{S}}}) - 1)",
            SEVERITY_WARNING,
            f"Overlay {NETWORK} {ON} sees {{{{ $value }}}} peers, fewer than the other nodes on it",
            "The VXLAN forwarding database of overlay {{ $labels.network }} on {{ $labels.instance }} "
            "has {{ $value }} remote nodes while more nodes with that network are scraped: this node "
            "does not send to some of them (gossip on port 7946 between the nodes broken, or a node "
            "that left without being removed).",
        ),
        alert(
            "DockernetOverlayMtuMismatch",
            f"dockernet_overlay_underlay_mtu_bytes{{{S}}} - {config.VXLAN_OVERHEAD_BYTES}\n"
            f"  < on {KEY} group_left () dockernet_overlay_mtu_bytes{{{S}}}",
            SEVERITY_WARNING,
            f"Overlay {NETWORK} {ON}: MTU too large for the underlay towards {{{{ $labels.peer }}}}",
            "Overlay {{ $labels.network }} on {{ $labels.instance }} carries packets bigger than the "
            "underlay towards {{ $labels.peer }} (interface {{ $labels.interface }}) can take once "
            "VXLAN adds its 50 bytes: large packets between containers on different nodes are lost "
            "while pings pass.",
        ),
        alert(
            "DockernetOverlayLeaked",
            f"dockernet_overlay_leaked_info{{{S}}} == 1",
            SEVERITY_WARNING,
            "Leaked overlay {{ $labels.kind }} {{ $labels.name }} " + ON,
            "{{ $labels.name }} ({{ $labels.kind }}) on {{ $labels.instance }} belongs to no overlay "
            "network Docker lists: a leaked VXLAN device blocks the creation of the network with "
            'that VNI ("file exists"), and a leaked namespace holds its devices.',
        ),
    ]
