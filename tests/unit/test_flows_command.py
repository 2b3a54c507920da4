"""The rows of `dockernet-exporter flows` (exporter.commands.flows), from a table of flows."""

from __future__ import annotations

from exporter.commands.flows import rows
from exporter.core.flow_peers import Attribution, Peer, packed
from exporter.core.flows import DESTROY, IPS_SEEN_REPLY, NEW, Entry, Flows

A, B = "198.18.0.2", "198.18.0.3"


def entry(ident: int, status: int = 0, counters: tuple[int, int, int, int] | None = None) -> Entry:
    a, b = packed(A), packed(B)
    return Entry(ident, 6, status, a, b, 40000, 80, b, a, 80, 40000, counters)


def test_rows_name_the_metrics_and_sum_what_the_open_connections_carried():
    attr = Attribution({packed(A): Peer("web", "shop"), packed(B): Peer("db", "")}, frozenset())
    table = Flows()
    table.start([entry(1, IPS_SEEN_REPLY, (3, 300, 2, 200)), entry(2)], 0.0, attr)
    table.event(NEW, entry(3), 1.0, attr)
    table.event(DESTROY, entry(3), 1.5, attr)
    (row,) = rows(table, accounting=True)
    assert row == {
        "source": "web",
        "source_namespace": "shop",
        "destination": "db",
        "destination_namespace": "",
        "protocol": "tcp",
        "port": "80",
        "connections": 2,
        "connections_waiting": 1,
        "connections_opened": 1,
        "connections_unanswered": 1,
        "sent_bytes": 300,
        "received_bytes": 200,
    }
    assert rows(table, accounting=False)[0]["sent_bytes"] is None
