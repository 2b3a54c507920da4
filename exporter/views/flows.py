"""The flows between workloads, for /topology.json and the page (docs/topology.md, docs/flows.md):
the flows collector's series as edges, each with its rate of connections opened. Pure: the caller
passes the series it read and the time.

``flows`` in the document is null when the flows collector is off: no edge then says nothing
about the traffic. When it is on, ``following`` says whether the conntrack table is followed
(``error`` says why not), and ``edges`` holds every series."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from exporter.core.flows import OPEN, OPENED, UNANSWERED, Key

Rows = Sequence[tuple[Key, Sequence[int]]]


@dataclass(frozen=True)
class Reading:
    """The series as read for one document, their opened rates, or why they could not be read."""

    rows: Rows = ()
    rates: dict[Key, float] = field(default_factory=dict)
    error: str | None = None


def opened(rows: Rows) -> dict[Key, int]:
    """Connections opened so far, per series: what opened rates are computed between."""
    return {key: values[OPENED] for key, values in rows}


def opened_rates(before: dict[Key, int], after: dict[Key, int], seconds: float) -> dict[Key, float]:
    """Connections opened per second of each series present in both readings (a count that went
    back, its series dropped and made again: no rate)."""
    return {
        key: (n - before[key]) / seconds
        for key, n in after.items()
        if key in before and n >= before[key]
    }


def section(reading: Reading | None) -> dict[str, Any] | None:
    """The document's ``flows``: None when the collector is off."""
    if reading is None:
        return None
    return {
        "following": reading.error is None,
        "error": reading.error,
        "edges": [
            edge(key, values, reading.rates.get(key))
            for key, values in sorted(reading.rows, key=lambda row: row[0])
        ],
    }


def edge(key: Key, values: Sequence[int], rate: float | None) -> dict[str, Any]:
    source, destination, protocol, port = key
    return {
        "source": source.name,
        "source_namespace": source.namespace,
        "source_kind": source.kind,
        "destination": destination.name,
        "destination_namespace": destination.namespace,
        "destination_kind": destination.kind,
        "protocol": protocol,
        "port": port,
        "open": values[OPEN],
        "opened_total": values[OPENED],
        "opened_per_second": None if rate is None else round(rate, 2),
        "unanswered_total": values[UNANSWERED],
    }


def revision_part(reading: Reading | None) -> object:
    """What of the flows changes the drawing (the edges and which are red), not their figures."""
    if reading is None:
        return None
    if reading.error is not None:
        return reading.error
    return sorted((key, values[UNANSWERED] > 0) for key, values in reading.rows)


def tree_lines(section: dict[str, Any] | None) -> list[str]:
    """The `topology` tree's lines of the flows: one per edge, `!!` where connections went
    unanswered; nothing when they were not asked for."""
    if section is None:
        return []
    if not section["following"]:
        return [f"flows: not read: {section['error']}"]
    lines = ["flows (connections in the conntrack table now)"]
    for e in section["edges"]:
        line = f"{_peer(e, 'source')} -> {_peer(e, 'destination')} {e['protocol']}/{e['port']}:"
        line += f" open {e['open']}"
        if e["unanswered_total"]:
            line = f"!! {line}, unanswered {e['unanswered_total']}"
        lines.append("  " + line)
    if not section["edges"]:
        lines.append("  none")
    return lines


def _peer(e: dict[str, Any], side: str) -> str:
    namespace = e[f"{side}_namespace"]
    return f"{namespace}/{e[side]}" if namespace else e[side]
