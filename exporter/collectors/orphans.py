"""Orphaned veths, evaluated at scrape time: a veth becomes an orphan once it
has been a suspect for the grace period, without waiting for any event."""

from __future__ import annotations

import time
from collections.abc import Callable

from .. import orphans
from ..exposition import Family, labels
from ..topology import Snapshot


class OrphansCollector:
    name = "orphans"
    help = "dockernet_veth_orphaned and dockernet_orphaned_veths: leaked veths and why"
    default = True

    def __init__(
        self,
        orphans_scope: str = "docker",
        orphans_grace: float = orphans.DEFAULT_GRACE,
        clock: Callable[[], float] = time.monotonic,
        **_options,
    ) -> None:
        self.scope = orphans_scope
        self.grace = orphans_grace
        self.clock = clock

    def collect(self, snap: Snapshot) -> list:
        in_scope = snap.memo(
            f"suspects in scope {self.scope}",
            lambda s: [x for x in s.suspects if self.scope == "all" or x.docker],
        )
        found = orphans.orphans(in_scope, snap.suspect_since, self.clock(), self.scope, self.grace)
        each = Family(
            "dockernet_veth_orphaned",
            "gauge",
            "Each orphaned veth of the host namespace with the first reason that applies; "
            "value is always 1.",
        )
        total = Family("dockernet_orphaned_veths", "gauge", "Number of orphaned veths, by reason.")
        counts = dict.fromkeys(orphans.REASONS, 0)
        for o in found:
            s = o.suspect
            each.add(labels(veth=s.link.name, bridge=s.bridge, reason=s.reason), 1)
            counts[s.reason] += 1
        for reason, n in counts.items():
            total.add(labels(reason=reason), n)
        return [each, total]
