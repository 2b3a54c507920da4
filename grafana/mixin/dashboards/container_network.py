"""Container network: traffic, errors and drops per container and interface, and the TCP, UDP and
conntrack health of each container namespace (the netstat collector)."""

from __future__ import annotations

from .. import config
from ..panels import (
    bargauge,
    dashboard,
    query_variable,
    row,
    sel,
    stat,
    steps,
    table,
    target,
    timeseries,
)
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


NS_LEGEND = "{{container_name}}"


def _per_container(counter: str) -> str:
    """A netstat counter's rate per container namespace, filtered by the variables (the compose
    project through dockernet_container_info)."""
    return (
        f"rate(dockernet_container_{counter}_total{sel(FILTER[0])}[{config.RATE_WINDOW}])\n"
        f"* on (job, instance, container_id) group_left (compose_project)\n"
        f"  dockernet_container_info{sel(FILTER[1])}"
    )


def _rates(title: str, what: str, counters: dict, legend: str = NS_LEGEND) -> dict:
    return timeseries(
        title,
        f"{what} per second per container namespace (averaged over {config.RATE_WINDOW}); needs "
        "the netstat collector.",
        [target(_per_container(c), f"{legend} {name}") for c, name in counters.items()],
        "pps",
    )


def _health_row() -> list:
    retransmits = (
        f"{_per_container('tcp_retransmitted_segments')}\n/ {_per_container('tcp_segments_sent')}"
    )
    conntrack = f"dockernet_conntrack_entries{sel()}\n/ dockernet_conntrack_entries_limit{sel()}"
    limit = config.CONNTRACK_WARNING_RATIO
    return [
        row("TCP and UDP health"),
        timeseries(
            "TCP retransmit ratio",
            "Retransmitted TCP segments per segment sent, per container namespace; the alert "
            f"DockernetContainerTcpRetransmits fires above {config.TCP_RETRANSMIT_RATIO:.0%}.",
            [target(retransmits, NS_LEGEND)],
            "percentunit",
            thresholds=steps((None, "green"), (config.TCP_RETRANSMIT_RATIO, "red")),
        ),
        _rates(
            "TCP connection failures",
            "Failed connection attempts, established connections reset, and resets sent",
            {
                "tcp_attempt_fails": "attempt fails",
                "tcp_estab_resets": "established resets",
                "tcp_resets_sent": "resets sent",
            },
        ),
        _rates(
            "Listen queue overflows",
            "Connections dropped by a full accept queue (overflows) and every connection request "
            "a listener dropped (drops)",
            {"tcp_listen_overflows": "overflows", "tcp_listen_drops": "drops"},
        ),
        _rates(
            "UDP errors",
            "UDP datagrams to a port nobody listens on, and dropped by a full receive buffer",
            {"udp_no_ports": "no port", "udp_receive_buffer_errors": "receive buffer full"},
            NS_LEGEND + " {{family}}",
        ),
        stat(
            "Host conntrack table",
            "Entries of the host's conntrack table against its limit (nf_conntrack_max); every "
            "connection through Docker's NAT and bridges has one. The alert "
            f"DockernetConntrackTableNearLimit fires above {limit:.0%}.",
            [target(conntrack, "{{instance}}")],
            "percentunit",
            w=12,
            thresholds=steps((None, "green"), (limit, "red")),
        ),
        timeseries(
            "Firewall drops",
            "Packets per second dropped by Docker's own drop rules, per bridge and reason "
            "(isolation, unpublished_port, direct_access), from the rules' counters.",
            [
                target(
                    f"rate(dockernet_firewall_dropped_packets_total{sel()}[{config.RATE_WINDOW}])",
                    "{{bridge}} {{reason}}",
                )
            ],
            "pps",
        ),
    ]


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
        *_health_row(),
    ]
    return dashboard(
        "container-network",
        "Docker / Container network",
        "Traffic, errors and drops of every container interface, from its host veth, and the "
        "TCP, UDP and conntrack health of each container namespace.",
        panels,
        [project, container],
    )
