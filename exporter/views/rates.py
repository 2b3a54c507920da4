"""Rates between two readings of counters taken at least an interval apart, for the page's views:
a drawing asked for more often reuses the last rates rather than dividing by a sliver of time."""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class Readings(Generic[T, R]):
    """Reads again only once ``interval`` has passed since the kept reading, then hands the
    kept and the new one to ``between`` with the seconds between them. Before a second reading
    the rates are ``none``. Not thread-safe: the caller holds its lock."""

    def __init__(self, interval: float, between: Callable[[T, T, float], R], none: R) -> None:
        self.interval, self._between = interval, between
        self.rates = none
        self._kept: tuple[float, T] | None = None

    def update(self, now: float, read: Callable[[], T]) -> R:
        """The rates as of ``now``; an error of ``read`` propagates, and nothing is kept."""
        kept = self._kept
        if kept is not None and now - kept[0] < self.interval:
            return self.rates
        reading = read()
        if kept is not None:
            self.rates = self._between(kept[1], reading, now - kept[0])
        self._kept = (now, reading)
        return self.rates
