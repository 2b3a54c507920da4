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


class OpenedRates:
    """Connections opened per second of each series, between two readings at least
    ``interval`` apart (the first reading has none)."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._before: tuple[float, dict[Key, int]] | None = None
        self._rates: dict[Key, float] = {}

    def update(self, rows: Rows, now: float) -> dict[Key, float]:
        before = self._before
        if before is not None and now - before[0] < self.interval:
            return self._rates
        opened = {key: values[OPENED] for key, values in rows}
        if before is not None:
            seconds = now - before[0]
            self._rates = {
                key: (n - before[1][key]) / seconds
                for key, n in opened.items()
                if key in before[1] and n >= before[1][key]
            }
        self._before = (now, opened)
        return self._rates


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
