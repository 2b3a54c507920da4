"""NAT and published ports: DNAT per published port, MASQUERADE per bridge."""

from __future__ import annotations

from ..panels import (
    dashboard,
    host_table,
    mapping,
    problems,
    row,
    sel,
    stat,
    summed,
    target,
    timeseries,
)

PRESENT = mapping({"1": ("present", "green"), "0": ("missing", "red")})
PORT_LABELS = "instance, container_name, protocol, host_ip, host_port, container_port"
PORT_COLUMNS = {
    "container_name": "Container",
    "protocol": "Protocol",
    "host_ip": "Host IP",
    "host_port": "Host port",
    "container_port": "Container port",
}


def _summary() -> list:
    return [
        stat(
            "Published ports",
            "Port bindings Docker reports (port ranges expanded).",
            [target(f"count(dockernet_published_port_info{sel()}) or vector(0)")],
        ),
        problems(
            "Ports without DNAT rule",
            "Published ports whose DNAT rule is missing from the nat table.",
            f"dockernet_published_port_rule_present{sel()} == 0",
        ),
        problems(
            "Bridges without MASQUERADE",
            "Docker bridge networks that should masquerade and have no rule.",
            f"dockernet_masquerade_rule_present{sel()} == 0",
        ),
        stat(
            "Firewall backend",
            "Where Docker's rules live: iptables-nft, iptables-legacy or nftables.",
            [target(f"dockernet_netfilter_info{sel()}", "{{backend}}")],
            text_mode="name",
        ),
    ]


def _ports() -> list:
    return [
        summed(
            "Connections per published port",
            "New connections per second through each published port's DNAT rule (only a connection's "
            "first packet passes the nat table). Connections to 127.0.0.1 through docker-proxy and "
            "from containers on a Docker bridge do not pass it.",
            f"rate(dockernet_published_port_connections_total{sel()}[$__rate_interval])",
            PORT_LABELS,
            "{{container_name}} {{host_ip}}:{{host_port}}/{{protocol}}",
            "cps",
            w=24,
        ),
        host_table(
            "Bindings whose rule is missing",
            "Published ports that Docker reports and the nat table does "
            "not forward: these ports are unreachable from other hosts.",
            f"dockernet_published_port_rule_present{sel()} == 0",
            PORT_COLUMNS,
            w=12,
        ),
        host_table(
            "Published ports and their DNAT rule",
            "Every port binding with the state of its DNAT rule.",
            f"dockernet_published_port_rule_present{sel()}",
            PORT_COLUMNS,
            value="DNAT rule",
            w=12,
            mappings=PRESENT,
        ),
    ]


def _masquerade() -> list:
    return [
        summed(
            "Masqueraded connections per bridge",
            "New outbound connections per second masqueraded for each Docker bridge subnet.",
            f"rate(dockernet_masquerade_connections_total{sel()}[$__rate_interval])",
            "instance, bridge, subnet",
            "{{bridge}} {{subnet}}",
            "cps",
        ),
        host_table(
            "Masquerade rules",
            "Each Docker bridge network that should masquerade, with the state of its rule.",
            f"dockernet_masquerade_rule_present{sel()}",
            {"bridge": "Bridge", "subnet": "Subnet"},
            value="MASQUERADE rule",
            w=12,
            mappings=PRESENT,
        ),
    ]


def _firewall() -> list:
    return [
        timeseries(
            "Rules per chain",
            "Rules in each chain the exporter reads.",
            [target(f"dockernet_netfilter_rules{sel()}", "{{backend}} {{table}} {{chain}}")],
            "none",
        ),
        timeseries(
            "Unparsed rules",
            "Rules per second the exporter could not read; they are skipped.",
            [
                target(
                    f"rate(dockernet_netfilter_unparsed_rules_total{sel()}[$__rate_interval])",
                    "{{instance}}",
                )
            ],
            "cps",
        ),
    ]


def build() -> dict:
    panels = [
        *_summary(),
        row("Published ports"),
        *_ports(),
        row("Masquerade"),
        *_masquerade(),
        row("Firewall"),
        *_firewall(),
    ]
    return dashboard(
        "nat",
        "Docker / NAT and published ports",
        "Published ports and masquerade: what Docker promised against the rules that exist.",
        panels,
    )
