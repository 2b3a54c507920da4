"""Orphaned veths, evaluated at scrape time: a veth becomes an orphan once it
has been a suspect for the grace period, without waiting for any event."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from exporter.app.flags import duration
from exporter.core import orphan_rules
from exporter.core.memo import MemoKey
from exporter.metrics.collectors.base import Collector, Context, Option
from exporter.metrics.exposition import Family, labels

if TYPE_CHECKING:
    from exporter.core.topology import Snapshot

IN_SCOPE: dict[str, MemoKey[list[orphan_rules.Suspect]]] = {
    scope: MemoKey(f"suspects in scope {scope}") for scope in orphan_rules.SCOPES
}


class OrphansCollector(Collector):
    name = "orphans"
    help = "dockernet_veth_orphaned and dockernet_orphaned_veths: leaked veths and why"
    options = (
        Option(
            "scope",
            str,
            "docker",
            "docker: flag only veths Docker can be blamed for; all: also those of other tools "
            "(ports of other bridges, namespaces of `ip netns add`)",
            choices=orphan_rules.SCOPES,
        ),
        Option(
            "grace",
            duration,
            "30s",
            "how long a veth must have looked orphaned before it is flagged",
        ),
    )

    def __init__(
        self,
        context: Context | None = None,
        *,
        scope: str = "docker",
        grace: float = orphan_rules.DEFAULT_GRACE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.scope = scope
        self.grace = grace
        self.clock = clock

    def collect(self, snap: Snapshot) -> list[Family]:
        in_scope = snap.memo(
            IN_SCOPE[self.scope],
            lambda s: [x for x in s.suspects if self.scope == "all" or x.runtime_blamed],
        )
        found = orphan_rules.flagged(
            in_scope, snap.suspect_since, self.clock(), self.scope, self.grace
        )
        each = Family(
            "dockernet_veth_orphaned",
            "gauge",
            "Each orphaned veth of the host namespace with the first reason that applies; "
            "value is always 1.",
        )
        total = Family("dockernet_orphaned_veths", "gauge", "Number of orphaned veths, by reason.")
        counts = dict.fromkeys(orphan_rules.REASONS, 0)
        for o in found:
            s = o.suspect
            each.add(labels(veth=s.link.name, bridge=s.bridge, reason=s.reason, **pod_of(s)), 1)
            counts[s.reason] += 1
        for reason, n in counts.items():
            total.add(labels(reason=reason), n)
        return [each, total]


def pod_of(s: orphan_rules.Suspect) -> dict[str, str]:
    """The namespace and pod labels of a leaked namespace that CNI's cache still names (none
    otherwise: a veth_info of a pod carries the same two)."""
    return {"namespace": s.pod.namespace, "pod": s.pod.name} if s.pod is not None else {}
