"""Flows between workloads: a map of who talks to whom (Node Graph), and the connections opened,
left unanswered and open, from the flows collector (docs/flows.md)."""

from __future__ import annotations

from ..panels import (
    dashboard,
    host_table,
    mapping,
    node_graph,
    problems,
    row,
    sel,
    stat,
    steps,
    summed,
    target,
)

PAIR = "source, source_namespace, destination, destination_namespace"
FLOW = f"instance, {PAIR}, protocol, port"
LEGEND = "{{source}} → {{destination}} {{protocol}}/{{port}}"
OPENED = "dockernet_flow_connections_opened_total"
UNANSWERED = "dockernet_flow_connections_unanswered_total"


def _named(expr: str, label: str, name: str, namespace: str) -> str:
    """expr with `label` set to "<namespace>/<name>": one node per workload, across hosts."""
    return f'label_join({expr}, "{label}", "/", "{namespace}", "{name}")'


def edges_query() -> str:
    """One row per pair: id, source, target (the Node Graph's edge fields), mainstat."""
    rate = f"sum by ({PAIR}) (rate({OPENED}{sel()}[$__rate_interval]))"
    joined = _named(
        _named(rate, "source", "source", "source_namespace"),
        "target",
        "destination",
        "destination_namespace",
    )
    return f'label_join({joined}, "id", " → ", "source", "target")'


def nodes_query() -> str:
    """One row per peer that opened or answered a connection: id and title (its name)."""
    rate = f"rate({OPENED}{sel()}[$__rate_interval])"
    sources = _named(
        f"sum by (source, source_namespace) ({rate})", "id", "source", "source_namespace"
    )
    destinations = _named(
        f"sum by (destination, destination_namespace) ({rate})",
        "id",
        "destination",
        "destination_namespace",
    )
    return f'label_join(sum by (id) ({sources} or {destinations}), "title", "", "id")'


def _map() -> dict:
    return node_graph(
        "Who talks to whom",
        "Each workload (namespace/name; host and external as /host and /external) is a node, each "
        "source and destination that exchanged connections in the range an edge with their rate "
        "of new connections per second. Drawn from Prometheus alone, over every host it scrapes.",
        edges_query(),
        nodes_query(),
    )


def _summary() -> list:
    return [
        problems(
            "Unanswered pairs",
            "Source and destination pairs with connections that got no reply in the last 15 minutes.",
            f"sum by ({PAIR}) (increase({UNANSWERED}{sel()}[15m])) > 0",
        ),
        stat(
            "Lost events",
            "Conntrack events the kernel dropped for want of room in the exporter's socket in the "
            "last hour; each loss was followed by a fresh read of the table.",
            [target(f"sum(increase(dockernet_flow_events_lost_total{sel()}[1h])) or vector(0)")],
            thresholds=steps((None, "green"), (1, "orange")),
        ),
        problems(
            "Bridges not seen",
            "Bridges whose container-to-container traffic does not reach the host's conntrack "
            "(br_netfilter off): their flows are missing from this dashboard.",
            f"dockernet_flow_visibility{sel()} == 0",
            color="orange",
        ),
        stat(
            "Byte accounting",
            "Whether the hosts' conntrack counts bytes (nf_conntrack_acct): the byte families exist "
            "only where it does.",
            [target(f"min(dockernet_flow_accounting_enabled{sel()})")],
            mappings=mapping({"1": ("on", "green"), "0": ("off", "text")}),
        ),
    ]


def _per_flow(title: str, description: str, series: str, unit: str) -> dict:
    """A graph of one series per flow (its host, pair, protocol and port)."""
    return summed(title, description, series, FLOW, LEGEND, unit)


def _connections() -> list:
    def rate(counter: str) -> str:
        return f"rate({counter}{sel()}[$__rate_interval])"

    return [
        _per_flow(
            "Connections opened",
            "New connections per second from each source to each destination and server port.",
            rate(OPENED),
            "cps",
        ),
        _per_flow(
            "Connections unanswered",
            "Connections per second that got no reply packet at all: SYNs dropped by a firewall, a "
            "dead peer, UDP to a closed port.",
            rate(UNANSWERED),
            "cps",
        ),
        _per_flow(
            "Open connections",
            "Connections in the host's conntrack table now (TCP's TIME_WAIT included).",
            f"dockernet_flow_connections{sel()}",
            "none",
        ),
        host_table(
            "Open flows",
            "Connections open now per source, destination and protocol, with their host (the "
            "namespaces and ports are in the map and the legends).",
            f"sum by (instance, source, destination, protocol) (dockernet_flow_connections{sel()})",
            {"source": "Source", "destination": "Destination", "protocol": "Protocol"},
            value="Open",
            w=12,
        ),
    ]


def build() -> dict:
    panels = [
        *_summary(),
        row("Map"),
        _map(),
        row("Connections"),
        *_connections(),
    ]
    return dashboard(
        "flows",
        "Docker / Flows between workloads",
        "Who talks to whom and which connections go unanswered, from the hosts' conntrack tables.",
        panels,
    )
