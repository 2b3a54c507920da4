"""`flows`: connections between workloads in the host's conntrack table, by source, destination,
protocol and server port (docs/flows.md).

One read of the table shows the connections in it now, how many of them have had no reply yet,
and their bytes when accounting is on. With --watch the command follows the table's events that
long and also counts the connections opened, and those left unanswered, meanwhile.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import TYPE_CHECKING

from exporter.app.flags import duration
from exporter.commands.base import Command, CommandError, Report, Table, read_snapshot
from exporter.core import flows

if TYPE_CHECKING:
    from exporter.core.flows import Flows, Key
    from exporter.core.topology import Snapshot
    from exporter.metrics.collectors.flows import Follower

COLUMNS = [
    ("source", "SOURCE"),
    ("source_namespace", "SOURCE NS"),
    ("destination", "DESTINATION"),
    ("destination_namespace", "DESTINATION NS"),
    ("protocol", "PROTOCOL"),
    ("port", "PORT"),
    ("connections", "OPEN"),
    ("connections_waiting", "NO REPLY YET"),
    ("connections_opened", "OPENED"),
    ("connections_unanswered", "UNANSWERED"),
    ("sent_bytes", "SENT BYTES"),
    ("received_bytes", "RECEIVED BYTES"),
]
FOLLOW_TIMEOUT = 30.0


def rows(table: Flows, accounting: bool) -> list[dict]:
    """One row per flow, with the names of the metrics (without prefix and _total)."""
    waiting: dict[Key, int] = {}
    octets: dict[Key, list[int]] = {}
    for conn in table.conns.values():
        if not conn.answered:
            waiting[conn.key] = waiting.get(conn.key, 0) + 1
        if conn.counters is not None:
            sums = octets.setdefault(conn.key, [0, 0])
            sums[0] += conn.counters[1]
            sums[1] += conn.counters[3]
    out = []
    for key in sorted(table.series):
        source, destination, protocol, port = key
        series = table.series[key]
        sent, received = octets.get(key, [0, 0])
        out.append(
            {
                "source": source.name,
                "source_namespace": source.namespace,
                "destination": destination.name,
                "destination_namespace": destination.namespace,
                "protocol": protocol,
                "port": port,
                "connections": series[flows.OPEN],
                "connections_waiting": waiting.get(key, 0),
                "connections_opened": series[flows.OPENED],
                "connections_unanswered": series[flows.UNANSWERED],
                # What the open connections carried so far; None without accounting.
                "sent_bytes": sent if accounting else None,
                "received_bytes": received if accounting else None,
            }
        )
    return out


class FlowsCommand(Command):
    name = "flows"
    help = (
        "list the connections between workloads in the host's conntrack table by source, "
        "destination, protocol and server port"
    )

    def add_arguments(self, p: argparse.ArgumentParser) -> None:
        super().add_arguments(p)
        p.add_argument(
            "--watch",
            type=duration,
            default="0s",
            help="follow the table this long and count the connections opened and left "
            "unanswered meanwhile (default: 0s, the table as it is)",
        )
        p.add_argument(
            "--unanswered-after",
            type=duration,
            default="3s",
            help="with --watch, a connection without a reply this long is unanswered (default: 3s)",
        )

    def report(self, args: argparse.Namespace) -> Report:
        from exporter.metrics.collectors.flows import SYSCTL_ACCT, read_int

        table = read_table(read_snapshot(args), args.procfs, args.watch, args.unanswered_after)
        accounting = read_int(Path(args.procfs, SYSCTL_ACCT)) == 1
        found = rows(table, accounting)
        footer = "" if accounting else "bytes: nf_conntrack_acct is off (docs/flows.md)"
        return Report(found, [Table(COLUMNS, found)], footer=footer)


def read_table(snap: Snapshot, procfs: str, watch: float, unanswered_after: float) -> Flows:
    """The conntrack table read once, then followed for `watch` seconds; CommandError when it
    cannot be read."""
    from exporter.metrics.collectors.flows import Follower
    from exporter.sources.kernel.conntrack import RCVBUF_BYTES

    table = flows.Flows(unanswered_after=unanswered_after)
    follower = Follower(
        table, lambda: snap, procfs, RCVBUF_BYTES, 1.0, workloads_read=lambda _s: True
    )
    follower.start()
    try:
        _follow(follower, watch)
    finally:
        follower.stop()
    return table


def _follow(follower: Follower, seconds: float) -> None:
    """Wait for the first read of the table, then follow it for `seconds`."""
    deadline = time.monotonic() + FOLLOW_TIMEOUT
    while follower.reading:
        if not follower.thread.is_alive() or time.monotonic() > deadline:
            raise CommandError(f"cannot read the conntrack table: {follower.error}")
        time.sleep(0.01)
    if follower.error is not None:
        raise CommandError(f"cannot read the conntrack table: {follower.error}")
    time.sleep(seconds)
    if seconds > 0:
        follower.tick()
