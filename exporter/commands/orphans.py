"""`orphans`: veths that no container owns, with the reason (see exporter/core/orphan_rules.py).

The kernel keeps no creation time for a link, so a one-shot command cannot
know how long a veth has looked orphaned: when it finds suspects it watches
them for --grace and lists those that stayed suspects (a veth being set up
right now does not).
"""

from __future__ import annotations

import argparse
import time
from typing import TYPE_CHECKING

from exporter.app.flags import duration
from exporter.commands.base import (
    OWNER_COLUMNS,
    Command,
    Report,
    Table,
    owner_fields,
    read_snapshot,
)
from exporter.core import orphan_rules

if TYPE_CHECKING:
    from exporter.core.model import Workload
    from exporter.core.topology import Snapshot

COLUMNS = [
    ("veth", "VETH"),
    ("bridge", "BRIDGE"),
    ("reason", "REASON"),
    ("age", "AGE"),
    *OWNER_COLUMNS,
]


class OrphansCommand(Command):
    name = "orphans"
    help = "list orphaned veths with their bridge, the reason and how long they were seen orphaned"

    def add_arguments(self, p: argparse.ArgumentParser) -> None:
        super().add_arguments(p)
        add_arguments(p)

    def report(self, args: argparse.Namespace) -> Report:
        found = rows(*read(args))
        return Report(found, [Table(COLUMNS, found)])


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_scope_flag(p)
    p.add_argument(
        "--grace",
        type=duration,
        default="2s",
        help="watch each suspect this long before listing it (0s: list what looks orphaned now)",
    )


def add_scope_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--scope",
        choices=orphan_rules.SCOPES,
        default="docker",
        help="docker: only veths Docker can be blamed for; all: also those of other tools",
    )


def read(args: argparse.Namespace) -> tuple[Snapshot, list[orphan_rules.Orphan]]:
    """The last snapshot read, and the orphans in it."""
    snap = read_snapshot(args)
    since = orphan_rules.track(snap.suspects, {}, time.monotonic())
    if args.grace > 0 and orphan_rules.flagged(
        snap.suspects, since, time.monotonic(), args.scope, grace=0
    ):
        time.sleep(args.grace)
        snap = read_snapshot(args, warn=False)
        since = orphan_rules.track(snap.suspects, since, time.monotonic())
    return snap, orphan_rules.flagged(
        snap.suspects, since, time.monotonic(), args.scope, args.grace
    )


def rows(snap: Snapshot, found: list[orphan_rules.Orphan]) -> list[dict]:
    """Each orphan, with the container or pod whose namespace holds its peer where one does (a
    port no endpoint explains)."""
    owners = {v.link.ifindex: v.container for v in snap.veths}
    return [
        {
            "veth": o.suspect.link.name,
            "ifindex": o.suspect.link.ifindex,
            "bridge": o.suspect.bridge,
            "reason": o.suspect.reason,
            "age": f"{o.age:.0f}s",
            "age_seconds": round(o.age, 3),
            **_owner(o.suspect, owners.get(o.suspect.link.ifindex)),
        }
        for o in found
    ]


def _owner(s: orphan_rules.Suspect, owner: Workload | None) -> dict:
    """The workload whose namespace holds the peer, or else the pod CNI's cache names for it."""
    fields = owner_fields(owner)
    if owner is None and s.pod is not None:
        fields.update(namespace=s.pod.namespace, pod=s.pod.name)
    return fields
