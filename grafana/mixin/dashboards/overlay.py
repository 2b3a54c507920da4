"""Overlay networks across every node Prometheus scrapes: per network its nodes, endpoints, VXLAN
traffic per node, peers, MTUs, address use and leaks. The fleet view comes from PromQL over each
node's own series."""

from __future__ import annotations

from .. import config, panels

NET = 'network=~"$network"'
USE_STEPS = panels.steps((None, "green"), (config.ADDRESS_USE_WARNING_RATIO, "orange"), (1, "red"))


def _summary() -> list:
    return [
        panels.stat(
            "Overlay networks",
            "Overlay networks with a namespace on at least one scraped node.",
            [
                panels.target(
                    f"count(count by (network) (dockernet_overlay_network_info{panels.sel(NET)}))"
                )
            ],
        ),
        panels.stat(
            "Nodes on them",
            "Scraped nodes holding at least one of the selected overlays.",
            [
                panels.target(
                    f"count(count by (instance) (dockernet_overlay_network_info{panels.sel(NET)}))"
                )
            ],
        ),
        panels.problems(
            "Nodes missing a peer",
            "Nodes whose VXLAN forwarding database names fewer nodes than the others on the network.",
            f"dockernet_overlay_peers{panels.sel(NET)}\n  < on (network) group_left () "
            f"(count by (network) (dockernet_overlay_peers{panels.sel(NET)}) - 1)",
        ),
        panels.problems(
            "Leaked namespaces and vx- devices",
            "Overlay namespaces of networks Docker no longer lists, and vx-* devices left in the "
            "host namespace.",
            f"dockernet_overlay_leaked_info{panels.sel()}",
        ),
    ]


def _per_network() -> list:
    return [
        panels.table(
            "Overlay networks per node",
            "Each overlay on each node: its VNI, subnet, local endpoints and peers.",
            f"dockernet_overlay_network_info{panels.sel(NET)}\n"
            f"* on (job, instance, network) group_left () dockernet_overlay_endpoints{panels.sel(NET)}",
            {
                "network": "Network",
                "instance": "Node",
                "vni": "VNI",
                "subnet": "Subnet",
                "encrypted": "Encrypted",
                "Value": "Local endpoints",
            },
            w=12,
        ),
        panels.table(
            "Peers seen by each node",
            "Each node's remote VTEPs per overlay (the other nodes' underlay addresses).",
            f"dockernet_overlay_peer_info{panels.sel(NET)}",
            {"network": "Network", "instance": "Node", "peer": "Peer"},
            w=12,
        ),
        panels.timeseries(
            "Endpoints per network",
            "Local endpoints summed over the nodes (each node's Swarm lb_ sandbox included).",
            [
                panels.target(
                    f"sum by (network) (dockernet_overlay_endpoints{panels.sel(NET)})",
                    "{{network}}",
                )
            ],
            "none",
        ),
        panels.timeseries(
            "Peers per node",
            "Remote VTEPs each node has for each overlay; every node of a network should see the "
            "same number.",
            [
                panels.target(
                    f"dockernet_overlay_peers{panels.sel(NET)}", "{{network}} on {{instance}}"
                )
            ],
            "none",
        ),
    ]


def _traffic() -> list:
    def rate(counter: str) -> str:
        return (
            f"rate(dockernet_overlay_vxlan_{counter}_total{panels.sel(NET)}[{config.RATE_WINDOW}])"
        )

    return [
        panels.timeseries(
            "VXLAN traffic per node",
            "Bytes each node's VXLAN device sends to and receives from the other nodes (receive "
            "drawn below zero).",
            [
                panels.target(rate("transmit_bytes"), "{{network}} on {{instance}} out"),
                panels.target("-" + rate("receive_bytes"), "{{network}} on {{instance}} in"),
            ],
            "Bps",
        ),
        panels.timeseries(
            "VXLAN errors and drops",
            "Errors and drops of each node's VXLAN device, per second.",
            [
                panels.target(rate(c), f"{{{{network}}}} on {{{{instance}}}} {c}")
                for c in (
                    "receive_errors",
                    "transmit_errors",
                    "receive_dropped",
                    "transmit_dropped",
                )
            ],
            "pps",
        ),
        panels.timeseries(
            "MTU: overlay and underlay",
            "The overlay's MTU and the underlay's towards each peer; the underlay needs "
            f"{config.VXLAN_OVERHEAD_BYTES} bytes more.",
            [
                panels.target(
                    f"dockernet_overlay_mtu_bytes{panels.sel(NET)}", "{{network}} on {{instance}}"
                ),
                panels.target(
                    f"dockernet_overlay_underlay_mtu_bytes{panels.sel(NET)}",
                    "underlay {{instance}} to {{peer}} ({{interface}})",
                ),
            ],
            "bytes",
        ),
    ]


def _addresses() -> list:
    return [
        panels.timeseries(
            "Address use per network and node",
            "Addresses in use against what the subnet can hand out, as each node sees them.",
            [
                panels.target(
                    f"dockernet_network_addresses_used{panels.sel()}\n"
                    f"  / dockernet_network_addresses_capacity{panels.sel()}",
                    "{{network}} {{subnet}} on {{instance}}",
                )
            ],
            "percentunit",
            thresholds=USE_STEPS,
        ),
        panels.table(
            "Address use",
            "Addresses in use and what each subnet can hand out, per node.",
            f"dockernet_network_addresses_used{panels.sel()}",
            {"network": "Network", "subnet": "Subnet", "instance": "Node", "Value": "Used"},
            w=12,
        ),
    ]


def build() -> dict:
    parts = [
        *_summary(),
        panels.row("Networks, nodes and peers"),
        *_per_network(),
        panels.row("VXLAN"),
        *_traffic(),
        panels.row("Addresses"),
        *_addresses(),
    ]
    network = panels.query_variable(
        "network", "Network", f"dockernet_overlay_network_info{{{config.SELECTOR}}}", "network"
    )
    return panels.dashboard(
        "overlay",
        "Docker / Overlay networks",
        "Overlay networks across the scraped nodes: endpoints, peers, VXLAN traffic, MTUs, "
        "address use and leaks.",
        parts,
        [network],
    )
