"""One-shot commands: read the sources once, join, print, exit.

Each command module has NAME, HELP, COLUMNS and rows(snapshot) -> list of
dicts keyed by column; the table and JSON output are shared here.
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
from . import nat, veths

log = structlog.get_logger()


class TableCommand:
    def __init__(self, module) -> None:
        self.module = module

    def add_parser(self, sub) -> None:
        p = sub.add_parser(self.module.NAME, help=self.module.HELP, description=self.module.HELP)
        p.add_argument("--output", "-o", choices=("table", "json"), default="table", help="output format")
        p.set_defaults(run=self.run)

    def run(self, args: argparse.Namespace) -> int:
        snap = read_snapshot(args)
        rows = self.module.rows(snap)
        if args.output == "json":
            json.dump(rows, sys.stdout, indent=2, ensure_ascii=False)
            sys.stdout.write("\n")
        else:
            sys.stdout.write(format_table(self.module.COLUMNS, rows))
        return 0


def read_snapshot(args: argparse.Namespace) -> topology.Snapshot:
    docker = DockerSource(args.docker_host, args.docker_timeout)
    with Netlink() as netlink:
        state = StateReader(netlink, docker, Procfs(args.procfs)).full()
    if not state.docker_up:
        sys.stderr.write(f"warning: Docker is unreachable at {docker.host}; "
                         f"showing what the kernel knows, without container names\n")
    docker.reset()
    return topology.build(state)


def format_table(columns: list[tuple[str, str]], rows: list[dict]) -> str:
    """docker-CLI style: upper-case headers, columns padded with three spaces."""
    cells = [[title for _, title in columns]] + [[str(r.get(key, "")) for key, _ in columns] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    return "".join("   ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() + "\n" for row in cells)


COMMANDS = [TableCommand(veths), nat.NatCommand()]
