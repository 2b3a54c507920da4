"""Bridges and veths: ports against the bridge limit, port states, orphans, addresses."""

from __future__ import annotations

from .. import config
from ..panels import (
    bargauge,
    dashboard,
    host_table,
    problems,
    row,
    sel,
    stat,
    steps,
    summed,
    target,
    timeseries,
)
from ..rules import ORPHAN_FIRST_SEEN

LIMIT = config.BRIDGE_PORT_LIMIT
NOT_FORWARDING = 'state!="forwarding"'
PORT_STEPS = steps(
    (None, "green"), (config.BRIDGE_PORT_WARNING_RATIO * LIMIT, "orange"), (LIMIT, "red")
)


def _summary() -> list:
    return [
        problems(
            "Orphaned veths",
            "Veths that belong to no running container, all reasons together.",
            f"dockernet_veth_orphaned{sel()}",
        ),
        stat(
            "Fullest bridge",
            f"The most ports any one bridge has; a Linux bridge holds at most {LIMIT:,}.",
            [target(f"max(dockernet_bridge_ports{sel()})")],
            thresholds=PORT_STEPS,
        ),
        problems(
            "Bridges down",
            "Bridges whose operational state is not up.",
            f"dockernet_bridge_up{sel()} == 0",
        ),
        stat(
            "Bridges",
            "Linux bridges in the host namespace, Docker's and others'.",
            [target(f"count(dockernet_bridge_up{sel()})")],
        ),
    ]


def _ports() -> list:
    return [
        bargauge(
            "Ports per bridge",
            f"Ports of each bridge against the limit of {LIMIT:,}.",
            [target(f"dockernet_bridge_ports{sel()}", "{{bridge}} on {{instance}}")],
            "none",
            max_value=LIMIT,
            thresholds=PORT_STEPS,
        ),
        timeseries(
            "Ports per bridge over time",
            "Ports of each bridge; the lines mark "
            f"{config.BRIDGE_PORT_WARNING_RATIO:.0%} of the limit and the limit.",
            [target(f"dockernet_bridge_ports{sel()}", "{{bridge}} on {{instance}}")],
            "none",
            thresholds=PORT_STEPS,
        ),
        summed(
            "Port states",
            "Ports of each bridge by STP state; without STP every port that is up forwards.",
            f"dockernet_bridge_port_state{sel()}",
            "instance, bridge, state",
            "{{bridge}} {{state}}",
            "none",
            stack=True,
        ),
        host_table(
            "Ports not forwarding",
            "Bridge ports in any state but forwarding, with the container that "
            "owns the veth (empty for an orphan).",
            f"dockernet_bridge_port_state{sel(NOT_FORWARDING)}\n"
            f"* on (job, instance, veth) group_left (container_name, interface) dockernet_veth_info{sel()}",
            {
                "bridge": "Bridge",
                "veth": "Veth",
                "state": "State",
                "container_name": "Container",
                "interface": "Interface",
            },
            w=12,
        ),
        host_table(
            "Bridges and their networks",
            "Every bridge with its Docker network, driver, subnet and gateway (IPv4 and IPv6 "
            "subnets in separate rows); other bridges have no network.",
            f"dockernet_bridge_info{sel()}",
            {
                "bridge": "Bridge",
                "network": "Network",
                "driver": "Driver",
                "subnet": "Subnet",
                "gateway": "Gateway",
            },
        ),
    ]


def _orphans() -> list:
    return [
        summed(
            "Orphaned veths by reason",
            "Orphaned veths per reason: peer_in_host, netns_without_container, no_endpoint.",
            f"dockernet_orphaned_veths{sel()}",
            "instance, reason",
            "{{reason}} on {{instance}}",
            "none",
            stack=True,
        ),
        host_table(
            "Orphaned veths with reason and age",
            "Each orphaned veth with its bridge, reason and age (since Prometheus "
            "first saw it orphaned).",
            f"time() - {ORPHAN_FIRST_SEEN}{sel()}",
            {"veth": "Veth", "bridge": "Bridge", "reason": "Reason"},
            value="Age",
            w=12,
            unit="s",
        ),
    ]


def _addresses() -> dict:
    return host_table(
        "Container addresses",
        "Every address of every container interface, IPv4 and IPv6.",
        f"dockernet_container_address_info{sel()}",
        {
            "container_name": "Container",
            "interface": "Interface",
            "network": "Network",
            "family": "Family",
            "address": "Address",
            "prefix_length": "Prefix",
            "mac": "MAC",
        },
        h=10,
    )


def build() -> dict:
    panels = [
        *_summary(),
        row("Bridge ports"),
        *_ports(),
        row("Orphaned veths"),
        *_orphans(),
        row("Container addresses"),
        _addresses(),
    ]
    return dashboard(
        "bridges",
        "Docker / Bridges and veths",
        f"Bridge ports against the {LIMIT:,} limit, port states, orphaned veths and container addresses.",
        panels,
    )
