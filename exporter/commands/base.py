"""What every one-shot command shares: its parser (``--output`` and the
source flags, declared once in exporter.app.flags), one snapshot read, and the
table and JSON writers.

A command builds a Report: the JSON document, and the tables that show it
(a table flattens what JSON nests, and shows 12-digit container ids, as the
docker CLI does).
"""

from __future__ import annotations

import argparse
import json
import sys
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from exporter.app import flags
from exporter.core.names import terminal_text
from exporter.core.queries import owner_columns

if TYPE_CHECKING:
    from exporter.core.model import Workload
    from exporter.core.topology import Snapshot

Columns = list[tuple[str, str]]  # (key, title)
OWNER_COLUMNS: Columns = [
    ("container_id", "CONTAINER ID"),
    ("container_name", "NAME"),
    ("namespace", "NAMESPACE"),
    ("pod", "POD"),
]


class CommandError(Exception):
    """What the user must know in one line; the command exits 1."""


@dataclass(frozen=True)
class Table:
    columns: Columns
    rows: list[dict]


@dataclass(frozen=True)
class Report:
    data: Any  # the JSON output
    tables: list[Table]
    footer: str = ""


class Command(ABC):
    name: ClassVar[str]
    help: ClassVar[str]

    def add_parser(self, sub: Any) -> argparse.ArgumentParser:
        p = sub.add_parser(self.name, help=self.help, description=self.help)
        self.add_arguments(p)
        p.set_defaults(run=self.run)
        return p

    def add_arguments(self, p: argparse.ArgumentParser) -> None:
        flags.add_output_flag(p)
        flags.add_source_flags(p, after_command=True)

    def run(self, args: argparse.Namespace) -> int:
        write(self.report(args), args.output)
        return 0

    @abstractmethod
    def report(self, args: argparse.Namespace) -> Report: ...


class SnapshotCommand(Command):
    """A command that lists rows of one snapshot: JSON is the rows, the table shows them."""

    columns: ClassVar[Columns]

    @abstractmethod
    def rows(self, snap: Snapshot) -> list[dict]: ...

    def table_rows(self, rows: list[dict]) -> list[dict]:
        return rows

    def report(self, args: argparse.Namespace) -> Report:
        found = self.rows(read_snapshot(args))
        return Report(found, [Table(self.columns, self.table_rows(found))])


def read_snapshot(args: argparse.Namespace, warn: bool = True) -> Snapshot:
    """Every source read once and joined."""
    # Loaded here, not at import: `--help` and the commands that read no snapshot never pay.
    from exporter.app import runtimes
    from exporter.core import topology
    from exporter.sources.kernel.netlink import Netlink
    from exporter.sources.kernel.procfs import Procfs
    from exporter.state.loader import StateLoader

    try:
        sources = runtimes.from_args(args)
    except runtimes.SourceConfigError as exc:
        raise CommandError(str(exc)) from None
    with Netlink() as netlink:
        state = StateLoader(netlink, sources, Procfs(args.procfs)).full()
    for source in sources:
        source.close()
        if warn and not state.runtimes_up.get(source.runtime):
            sys.stderr.write(
                f"warning: {source.runtime.capitalize()} is unreachable at {source.address}; "
                f"showing what the kernel knows, without container names\n"
            )
    return topology.build(state)


def owner_fields(c: Workload | None) -> dict:
    """Who a row belongs to (queries.owner_columns), and a pod's sandbox id for JSON."""
    fields = owner_columns(c)
    if c is not None and c.is_pod:
        fields["sandbox_id"] = c.id
    return fields


def write(report: Report, output: str) -> None:
    if output == "json":
        json.dump(report.data, sys.stdout, indent=2, ensure_ascii=False)
        sys.stdout.write("\n")
        return
    tables = [format_table(t.columns, [_short_id(r) for r in t.rows]) for t in report.tables]
    footer = f"\n{terminal_text(report.footer)}\n" if report.footer else ""
    sys.stdout.write("\n".join(tables) + footer)


def format_table(columns: Columns, rows: list[dict]) -> str:
    """docker-CLI style: upper-case headers, columns padded with three spaces. A cell's control and
    bidirectional characters are shown escaped (names.terminal_text): one line per row, whatever
    a tenant named its objects."""
    cells = [[title for _, title in columns]]
    cells += [
        ["" if r.get(key) is None else terminal_text(str(r[key])) for key, _ in columns]
        for r in rows
    ]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    return "".join(
        "   ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() + "\n"
        for row in cells
    )


def _short_id(row: dict) -> dict:
    return dict(row, container_id=row["container_id"][:12]) if row.get("container_id") else row
