"""One-shot commands: read the sources once, join, print, exit.

Each command module has NAME, HELP, COLUMNS and rows(snapshot) -> list of
dicts keyed by column; the table and JSON output are shared here. Optional:
add_arguments(parser), read(args) (instead of read_snapshot; rows() then gets
what it returns) and table_rows(rows) (when the table flattens nested JSON).
"""

from __future__ import annotations

import argparse
import json
import sys

import structlog

from .. import topology
from ..sources.docker import DockerSource
from ..sources.netlink import Netlink
from ..sources.procfs import Procfs
from ..state import StateReader
from . import bridges, ips, nat, netns, orphans, veths

log = structlog.get_logger()


class TableCommand:
    def __init__(self, module) -> None:
        self.module = module

    def add_parser(self, sub) -> None:
        p = sub.add_parser(self.module.NAME, help=self.module.HELP, description=self.module.HELP)
        p.add_argument(
            "--output", "-o", choices=("table", "json"), default="table", help="output format"
        )
        if hasattr(self.module, "add_arguments"):
            self.module.add_arguments(p)
        p.set_defaults(run=self.run)

    def run(self, args: argparse.Namespace) -> int:
        rows = self.module.rows(getattr(self.module, "read", read_snapshot)(args))
        if args.output == "json":
            json.dump(rows, sys.stdout, indent=2, ensure_ascii=False)
            sys.stdout.write("\n")
        else:
            table_rows = getattr(self.module, "table_rows", None)
            rows = [short_id(r) for r in (table_rows(rows) if table_rows else rows)]
            sys.stdout.write(format_table(self.module.COLUMNS, rows))
        return 0


def short_id(row: dict) -> dict:
    """Tables show 12-digit container ids, as the docker CLI does; JSON keeps the full id."""
    return dict(row, container_id=row["container_id"][:12]) if row.get("container_id") else row


def add_source_flags(p: argparse.ArgumentParser) -> None:
    """The global source flags, accepted after a command's name too (SUPPRESS: the global value stays)."""
    p.add_argument(
        "--docker.host",
        dest="docker_host",
        default=argparse.SUPPRESS,
        help="Docker Engine API address (as the global flag)",
    )
    p.add_argument(
        "--docker.timeout",
        dest="docker_timeout",
        type=_duration,
        default=argparse.SUPPRESS,
        help="timeout of each Docker API call (as the global flag)",
    )
    p.add_argument(
        "--path.procfs",
        dest="procfs",
        type=_procfs_path,
        default=argparse.SUPPRESS,
        help="procfs mount point (as the global flag)",
    )


def _duration(text: str) -> float:
    from ..cli import duration  # cli imports this package first

    return duration(text)


def _procfs_path(text: str) -> str:
    from ..cli import procfs_path

    return procfs_path(text)


def read_snapshot(args: argparse.Namespace, warn: bool = True) -> topology.Snapshot:
    docker = DockerSource(args.docker_host, args.docker_timeout)
    with Netlink() as netlink:
        state = StateReader(netlink, docker, Procfs(args.procfs)).full()
    if not state.docker_up and warn:
        sys.stderr.write(
            f"warning: Docker is unreachable at {docker.host}; "
            f"showing what the kernel knows, without container names\n"
        )
    docker.reset()
    return topology.build(state)


def format_table(columns: list[tuple[str, str]], rows: list[dict]) -> str:
    """docker-CLI style: upper-case headers, columns padded with three spaces."""
    cells = [[title for _, title in columns]] + [
        [str(r.get(key, "")) for key, _ in columns] for r in rows
    ]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    return "".join(
        "   ".join(c.ljust(w) for c, w in zip(row, widths, strict=False)).rstrip() + "\n" for row in cells
    )


COMMANDS = [
    TableCommand(veths),
    nat.NatCommand(),
    TableCommand(ips),
    TableCommand(bridges),
    TableCommand(orphans),
    netns.NetnsCommand(),
]
