"""`netns visible` / `netns invisible`: make each running container's network
namespace visible to `ip netns` (docker-netns.sh visible / invisible).

A link is a symlink /var/run/netns/<name> -> /proc/<pid>/ns/net (as the
script makes them; a bind mount would keep the namespace alive after the
container is gone). The links made are recorded in RECORD, and only those
are ever removed: a name already taken by something else is left alone (the
short id is tried instead). `visible` is idempotent and first removes the
recorded links whose container is gone or restarted (a new pid).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass
from typing import Any

from exporter.commands.base import Command, CommandError, Report, Table
from exporter.core.model import Workload
from exporter.sources.runtimes.workloads import SourceUnavailable

NETNS_DIR = "/var/run/netns"
RECORD = "/run/dockernet-exporter/netns-links.json"
COLUMNS = [
    ("name", "NAME"),
    ("container_id", "CONTAINER ID"),
    ("container_name", "CONTAINER"),
    ("path", "PATH"),
    ("status", "STATUS"),
]


@dataclass(frozen=True)
class Entry:
    name: str
    container_id: str
    container_name: str
    target: str  # /proc/<pid>/ns/net


def target_of(c: Workload) -> str:
    return f"/proc/{c.pid}/ns/net"


def plan(
    record: list[Entry],
    running: list[Workload],
    on_disk: dict[str, str | None],
    selected: set[str] | None = None,
) -> tuple[list[Entry], list[Entry], list[Entry], list[Workload]]:
    """Pure: (links to remove, links to keep, links to create, containers skipped).

    ``on_disk`` maps each name in the netns directory to its symlink target
    (None when it is not a symlink: a namespace of `ip netns add`). Only the
    ``selected`` containers (ids; None: all) are linked anew; a recorded link
    is removed once its container no longer runs with the same pid.
    """
    wanted = {(c.id, target_of(c)) for c in running}
    ours = [e for e in record if on_disk.get(e.name, "") == e.target]  # others changed what we made
    remove = [e for e in ours if (e.container_id, e.target) not in wanted]
    keep = [e for e in ours if (e.container_id, e.target) in wanted]
    taken = set(on_disk) - {e.name for e in remove}
    linked = {e.container_id for e in keep}
    create: list[Entry] = []
    skipped: list[Workload] = []
    for c in running:
        if c.id in linked or (selected is not None and c.id not in selected):
            continue
        name = next((n for n in (c.name, c.id[:12]) if n and n not in taken), None)
        if name is None:
            skipped.append(c)
            continue
        taken.add(name)
        create.append(Entry(name, c.id, c.name, target_of(c)))
    return remove, keep, create, skipped


def _running(args: argparse.Namespace) -> list[Workload]:
    """Every runtime's running workloads; a runtime that does not answer is an error here: the
    links of its containers would be judged gone."""
    from exporter.app import runtimes  # loaded when run: `--help` never pays for the sources

    try:
        sources = runtimes.from_args(args)
    except runtimes.SourceConfigError as exc:
        raise CommandError(str(exc)) from None
    out = []
    for source in sources:
        try:
            out += source.workloads()
        except SourceUnavailable as exc:
            raise CommandError(
                f"{exc}; cannot tell which namespace belongs to which container"
            ) from None
        finally:
            source.close()
    return out


def matches(container_id: str, name: str, wanted: list[str]) -> bool:
    """Whether the container is one of those named (by name, or by id or an id prefix of 4+ digits)."""
    return any(w == name or (len(w) >= 4 and container_id.startswith(w)) for w in wanted)


class NetnsCommand(Command):
    name = "netns"
    help = (
        "link each running container's network namespace into /var/run/netns for `ip netns`, "
        "or remove the links"
    )
    actions = {
        "visible": "link the namespace of each running container, or of those named (idempotent; "
        "removes the links of containers gone meanwhile)",
        "invisible": "remove the links that `netns visible` made (all, or those of the containers "
        "named)",
    }

    def __init__(self, netns_dir: str = NETNS_DIR, record: str = RECORD) -> None:
        self.netns_dir = netns_dir
        self.record_path = record

    def add_parser(self, sub: Any) -> argparse.ArgumentParser:
        p = sub.add_parser(self.name, help=self.help, description=self.help)
        actions = p.add_subparsers(
            dest="netns_action", metavar="ACTION", required=True, parser_class=type(p)
        )
        for action, text in self.actions.items():
            a = actions.add_parser(action, help=text, description=text)
            a.add_argument(
                "containers", nargs="*", metavar="CONTAINER", help="container name or id (prefix)"
            )
            self.add_arguments(a)
        p.set_defaults(run=self.run)
        return p

    def report(self, args: argparse.Namespace) -> Report:
        if args.netns_action == "visible":
            found = self.visible(args)
        else:
            found = self.invisible(args.containers)
        return Report(found, [Table(COLUMNS, found)])

    def visible(self, args: argparse.Namespace) -> list[dict]:
        running = [c for c in _running(args) if c.pid and c.network_mode != "host"]
        selected = None
        if args.containers:
            selected = {c.id for c in running if matches(c.id, c.name, args.containers)}
            for wanted in args.containers:
                if not any(matches(c.id, c.name, [wanted]) for c in running):
                    sys.stderr.write(
                        f"warning: no running container {wanted!r} with its own namespace\n"
                    )
        os.makedirs(self.netns_dir, mode=0o755, exist_ok=True)
        remove, keep, create, skipped = plan(self._load(), running, self._on_disk(), selected)
        for e in remove:
            self._unlink(e)
        for e in create:
            os.symlink(e.target, self._path(e.name))
        self._save(keep + create)
        for c in skipped:
            sys.stderr.write(
                f"warning: {self.netns_dir}/{c.name} and /{c.id[:12]} are taken by something "
                f"else; container {c.name} not linked\n"
            )
        return (
            [self._row(e, "removed (container gone)") for e in remove]
            + [self._row(e, "kept") for e in keep]
            + [self._row(e, "created") for e in create]
        )

    def invisible(self, containers: list[str]) -> list[dict]:
        record = self._load()
        chosen = [
            e
            for e in record
            if not containers or matches(e.container_id, e.container_name, containers)
        ]
        on_disk = self._on_disk()
        removed = [e for e in chosen if on_disk.get(e.name, "") == e.target]
        for e in removed:
            self._unlink(e)
        self._save([e for e in record if e not in chosen])
        return [self._row(e, "removed") for e in removed]

    def _row(self, e: Entry, status: str) -> dict:
        return {
            "name": e.name,
            "container_id": e.container_id,
            "container_name": e.container_name,
            "path": self._path(e.name),
            "target": e.target,
            "status": status,
        }

    def _path(self, name: str) -> str:
        return os.path.join(self.netns_dir, name)

    def _unlink(self, e: Entry) -> None:
        try:
            os.unlink(self._path(e.name))
        except FileNotFoundError:
            pass

    def _on_disk(self) -> dict[str, str | None]:
        try:
            names = os.listdir(self.netns_dir)
        except FileNotFoundError:
            return {}
        path = self._path
        return {n: os.readlink(path(n)) if os.path.islink(path(n)) else None for n in names}

    def _load(self) -> list[Entry]:
        try:
            with open(self.record_path) as f:
                return [Entry(**e) for e in json.load(f)]
        except FileNotFoundError:
            return []

    def _save(self, entries: list[Entry]) -> None:
        os.makedirs(os.path.dirname(self.record_path), exist_ok=True)
        tmp = self.record_path + ".tmp"
        with open(tmp, "w") as f:
            json.dump([e.__dict__ for e in entries], f, indent=1)
        os.replace(tmp, self.record_path)
