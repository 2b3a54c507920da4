"""Container network: traffic, errors and drops per container and interface, and the TCP, UDP and
conntrack health of each container namespace (the netstat collector). The pod network dashboard
is the same board for pods (`Board`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .. import config
from ..owners import CONTAINER, Owner
from ..panels import (
    bargauge,
    dashboard,
    host_table,
    query_variable,
    row,
    sel,
    stat,
    steps,
    target,
    timeseries,
)

S = config.SELECTOR
FILTER = ('container_name=~"$container"', 'compose_project=~"$project"')


@dataclass(frozen=True)
class Board:
    """What differs between the container and the pod dashboards."""

    owner: Owner
    filters: tuple[str, ...]  # matchers of the variables on the recorded series
    veth_filter: str  # ... on dockernet_veth_info
    veth_columns: dict  # the veth table's columns between "Veth" and "Host"
    per_namespace: Callable[[str], str]  # a netstat counter's rate per namespace, filtered
    top_by: str  # the labels that name one owner

    @property
    def noun(self) -> str:
        return self.owner.title.lower()

    @property
    def legend(self) -> str:
        return self.owner.legend + " {{interface}}"


def _traffic(b: Board, title: str, counter: str, unit: str, what: str) -> dict:
    return timeseries(
        title,
        f"{what} per second, per {b.noun} and interface, from the {b.noun}'s point of view "
        f"(averaged over {config.RATE_WINDOW}).",
        [target(b.owner.record(counter) + sel(*b.filters), b.legend)],
        unit,
    )


def _top_talkers(b: Board) -> dict:
    both = " + ".join(
        f"sum by (instance, {b.top_by}) ({b.owner.record(c)}{sel(*b.filters)})"
        for c in ("receive_bytes", "transmit_bytes")
    )
    return bargauge(
        "Top talkers",
        f"The {config.TOP_TALKERS} {b.noun}s that receive plus transmit the most bytes "
        "per second, all interfaces together.",
        [target(f"topk({config.TOP_TALKERS}, {both})", b.owner.legend + " on {{instance}}")],
        "Bps",
    )


def _veth_table(b: Board, network: str) -> dict:
    return host_table(
        f"veth -> {b.noun}",
        f"Each veth of the host namespace, the {b.noun} and interface it belongs to, "
        f"and its bridge and {network} network. An empty {b.noun} means no running "
        f"{b.noun} owns the veth.",
        "dockernet_veth_info" + sel(b.veth_filter),
        {"veth": "Veth", **b.veth_columns},
        w=12,
    )


def _per_container(counter: str) -> str:
    """A netstat counter's rate per container namespace, filtered by the variables (the compose
    project through dockernet_container_info)."""
    return (
        f"rate(dockernet_container_{counter}_total{sel(FILTER[0])}[{config.RATE_WINDOW}])\n"
        f"* on (job, instance, container_id) group_left (compose_project)\n"
        f"  dockernet_container_info{sel(FILTER[1])}"
    )


def _rates(b: Board, title: str, what: str, counters: dict, legend: str = "") -> dict:
    return timeseries(
        title,
        f"{what} per second per {b.noun} namespace (averaged over {config.RATE_WINDOW}); needs "
        "the netstat collector.",
        [
            target(b.per_namespace(c), f"{b.owner.legend}{legend} {name}")
            for c, name in counters.items()
        ],
        "pps",
    )


def health_row(b: Board) -> list:
    # Each side whole: the join a side may end in must not bind tighter than the division.
    retransmits = (
        f"(\n{b.per_namespace('tcp_retransmitted_segments')}\n)\n"
        f"/ (\n{b.per_namespace('tcp_segments_sent')}\n)"
    )
    conntrack = f"dockernet_conntrack_entries{sel()}\n/ dockernet_conntrack_entries_limit{sel()}"
    limit = config.CONNTRACK_WARNING_RATIO
    return [
        row("TCP and UDP health"),
        timeseries(
            "TCP retransmit ratio",
            f"Retransmitted TCP segments per segment sent, per {b.noun} namespace; the alert "
            f"{b.owner.alert_name('TcpRetransmits')} fires above {config.TCP_RETRANSMIT_RATIO:.0%}.",
            [target(retransmits, b.owner.legend)],
            "percentunit",
            thresholds=steps((None, "green"), (config.TCP_RETRANSMIT_RATIO, "red")),
        ),
        _rates(
            b,
            "TCP connection failures",
            "Failed connection attempts, established connections reset, and resets sent",
            {
                "tcp_attempt_fails": "attempt fails",
                "tcp_estab_resets": "established resets",
                "tcp_resets_sent": "resets sent",
            },
        ),
        _rates(
            b,
            "Listen queue overflows",
            "Connections dropped by a full accept queue (overflows) and every connection request "
            "a listener dropped (drops)",
            {"tcp_listen_overflows": "overflows", "tcp_listen_drops": "drops"},
        ),
        _rates(
            b,
            "UDP errors",
            "UDP datagrams to a port nobody listens on, and dropped by a full receive buffer",
            {"udp_no_ports": "no port", "udp_receive_buffer_errors": "receive buffer full"},
            " {{family}}",
        ),
        stat(
            "Host conntrack table",
            "Entries of the host's conntrack table against its limit (nf_conntrack_max); every "
            "connection through the host's NAT and bridges has one. The alert "
            f"DockernetConntrackTableNearLimit fires above {limit:.0%}.",
            [target(conntrack, "{{instance}}")],
            "percentunit",
            w=12,
            thresholds=steps((None, "green"), (limit, "red")),
        ),
    ]


def _firewall_drops() -> dict:
    return timeseries(
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
    )


def panels(b: Board, network: str) -> list:
    """Every panel of the board but those of one runtime only; `network` names whose networks the
    veths' are."""
    return [
        row("Traffic"),
        _traffic(b, "Receive bandwidth", "receive_bytes", "Bps", "Bytes received"),
        _traffic(b, "Transmit bandwidth", "transmit_bytes", "Bps", "Bytes transmitted"),
        _traffic(b, "Receive packets", "receive_packets", "pps", "Packets received"),
        _traffic(b, "Transmit packets", "transmit_packets", "pps", "Packets transmitted"),
        row("Errors and drops"),
        timeseries(
            "Errors and drops",
            "Receive and transmit errors and dropped packets per second, per "
            f"{b.noun}, interface and counter.",
            [target(b.owner.faults_record + sel(*b.filters), b.legend + " {{counter}}")],
            "pps",
            w=24,
        ),
        row("Who is talking"),
        _top_talkers(b),
        _veth_table(b, network),
        *health_row(b),
    ]


BOARD = Board(
    owner=CONTAINER,
    filters=FILTER,
    veth_filter=FILTER[0],
    veth_columns={
        "container_name": "Container",
        "interface": "Interface",
        "bridge": "Bridge",
        "network": "Network",
        "container_id": "Container ID",
    },
    per_namespace=_per_container,
    top_by="container_name",
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
    return dashboard(
        "container-network",
        "Docker / Container network",
        "Traffic, errors and drops of every container interface, from its host veth, and the "
        "TCP, UDP and conntrack health of each container namespace.",
        [*panels(BOARD, "Docker"), _firewall_drops()],
        [project, container],
    )
