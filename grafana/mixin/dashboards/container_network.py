"""Container network: traffic, errors and drops per container and interface."""

from __future__ import annotations

from .. import config
from ..panels import bargauge, dashboard, query_variable, row, sel, table, target, timeseries
from ..rules import FAULTS_RECORD, traffic_record

S = config.SELECTOR
FILTER = ('container_name=~"$container"', 'compose_project=~"$project"')
LEGEND = "{{container_name}} {{interface}}"


def _traffic(title: str, counter: str, unit: str, what: str) -> dict:
    return timeseries(
        title,
        f"{what} per second, per container and interface, from the container's point of view "
        f"(averaged over {config.RATE_WINDOW}).",
        [target(traffic_record(counter) + sel(*FILTER), LEGEND)],
        unit,
    )


def _top_talkers() -> dict:
    both = " + ".join(
        f"sum by (instance, container_name) ({traffic_record(c)}{sel(*FILTER)})"
        for c in ("receive_bytes", "transmit_bytes")
    )
    return bargauge(
        "Top talkers",
        f"The {config.TOP_TALKERS} containers that receive plus transmit the most bytes "
        "per second, all interfaces together.",
        [target(f"topk({config.TOP_TALKERS}, {both})", "{{container_name}} on {{instance}}")],
        "Bps",
    )


def _veth_table() -> dict:
    return table(
        "veth -> container",
        "Each veth of the host namespace, the container and interface it belongs to, "
        "and its bridge and Docker network. An empty container means no running "
        "container owns the veth.",
        "dockernet_veth_info" + sel(FILTER[0]),
        {
            "veth": "Veth",
            "container_name": "Container",
            "interface": "Interface",
            "bridge": "Bridge",
            "network": "Network",
            "container_id": "Container ID",
            "instance": "Host",
        },
        w=12,
    )


def build() -> dict:
    project = query_variable(
        "project",
        "Compose project",
        f'dockernet_container_info{{{S}, instance=~"$instance"}}',
        "compose_project",
    )
    container = query_variable(
        "container",
        "Container",
        f'dockernet_container_info{{{S}, instance=~"$instance", compose_project=~"$project"}}',
        "container_name",
    )
    panels = [
        row("Traffic"),
        _traffic("Receive bandwidth", "receive_bytes", "Bps", "Bytes received"),
        _traffic("Transmit bandwidth", "transmit_bytes", "Bps", "Bytes transmitted"),
        _traffic("Receive packets", "receive_packets", "pps", "Packets received"),
        _traffic("Transmit packets", "transmit_packets", "pps", "Packets transmitted"),
        row("Errors and drops"),
        timeseries(
            "Errors and drops",
            "Receive and transmit errors and dropped packets per second, per "
            "container, interface and counter.",
            [target(FAULTS_RECORD + sel(*FILTER), LEGEND + " {{counter}}")],
            "pps",
            w=24,
        ),
        row("Who is talking"),
        _top_talkers(),
        _veth_table(),
    ]
    return dashboard(
        "container-network",
        "Docker / Container network",
        "Traffic, errors and drops of every container interface, from its host veth.",
        panels,
        [project, container],
    )
