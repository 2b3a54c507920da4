"""`orphans`: veths that no container owns, with the reason (see exporter/orphans.py).

The kernel keeps no creation time for a link, so a one-shot command cannot
know how long a veth has looked orphaned: when it finds suspects it watches
them for --grace and lists those that stayed suspects (a veth being set up
right now does not).
"""

from __future__ import annotations

import argparse
import time

from .. import orphans

NAME = "orphans"
HELP = "list orphaned veths with their bridge, the reason and how long they were seen orphaned"
COLUMNS = [("veth", "VETH"), ("bridge", "BRIDGE"), ("reason", "REASON"), ("age", "AGE")]


def add_arguments(p: argparse.ArgumentParser) -> None:
    from . import _duration

    p.add_argument(
        "--scope",
        choices=orphans.SCOPES,
        default="docker",
        help="docker: only veths Docker can be blamed for; all: also those of other tools",
    )
    p.add_argument(
        "--grace",
        type=_duration,
        default="2s",
        help="watch each suspect this long before listing it (0s: list what looks orphaned now)",
    )


def read(args: argparse.Namespace) -> list[orphans.Orphan]:
    from . import read_snapshot

    snap = read_snapshot(args)
    since = orphans.track(snap.suspects, {}, time.monotonic())
    if args.grace > 0 and orphans.orphans(
        snap.suspects, since, time.monotonic(), args.scope, grace=0
    ):
        time.sleep(args.grace)
        snap = read_snapshot(args, warn=False)
        since = orphans.track(snap.suspects, since, time.monotonic())
    return orphans.orphans(snap.suspects, since, time.monotonic(), args.scope, args.grace)


def rows(found: list[orphans.Orphan]) -> list[dict]:
    return [
        {
            "veth": o.suspect.link.name,
            "ifindex": o.suspect.link.ifindex,
            "bridge": o.suspect.bridge,
            "reason": o.suspect.reason,
            "age": f"{o.age:.0f}s",
            "age_seconds": round(o.age, 3),
        }
        for o in found
    ]
