"""Collectors: each renders one part of /metrics from a topology snapshot.

A collector is a class with a ``name``, a one-line ``help`` for its flag, a
``default`` (enabled or not) and ``collect(snapshot) -> list[Family]``. It
may read fresh data (counters) but never changes the snapshot.
"""

from __future__ import annotations

from .addresses import AddressesCollector
from .bridges import BridgesCollector
from .containers import ContainersCollector
from .nat import NatCollector
from .orphans import OrphansCollector
from .veths import VethsCollector

ALL = (
    ContainersCollector,
    VethsCollector,
    NatCollector,
    BridgesCollector,
    AddressesCollector,
    OrphansCollector,
)
