"""`netns visible` / `netns invisible`: make each running container's network
namespace visible to `ip netns` (docker-netns.sh visible / invisible), and the
namespaces Docker keeps to itself under its exec root's netns/: each overlay
network's, and Swarm's routing mesh (ingress_sbox) and load balancers (lb_*).

A link is a symlink /var/run/netns/<name> -> /proc/<pid>/ns/net (as the
script makes them; a bind mount would keep the namespace alive after the
container is gone), or -> Docker's own file for Docker's namespaces (linked by
their file's name). The links made are recorded in RECORD, and only those
are ever removed: a name already taken by something else is left alone (a
container's short id is tried instead). `visible` is idempotent and first
removes the recorded links whose container is gone or restarted (a new pid),
or whose Docker namespace is gone.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from exporter.commands.base import Command, CommandError, Report, Table
from exporter.core import overlay
from exporter.core.model import Network, Workload
from exporter.sources.runtimes.workloads import SourceUnavailable, WorkloadSource

NETNS_DIR = "/var/run/netns"
RECORD = "/run/dockernet-exporter/netns-links.json"
COLUMNS = [
    ("name", "NAME"),
    ("kind", "KIND"),
    ("network", "NETWORK"),
    ("container_id", "CONTAINER ID"),
    ("container_name", "CONTAINER"),
    ("path", "PATH"),
    ("status", "STATUS"),
]
# What a namespace Docker keeps to itself is (docs/overlay.md).
OVERLAY, LOAD_BALANCER, ROUTING_MESH = "overlay", "load-balancer", "routing-mesh"


@dataclass(frozen=True)
class Entry:
    name: str
    container_id: str  # "" for a namespace of Docker's own
    container_name: str
    target: str  # /proc/<pid>/ns/net, or the file under Docker's exec root's netns/
    kind: str = "container"  # container | pod | overlay | load-balancer | routing-mesh
    network: str = ""  # the Docker network of a namespace of Docker's own

    @property
    def key(self) -> tuple[str, str]:
        return self.container_id, self.target


@dataclass(frozen=True)
class Candidate:
    """A namespace to link: a workload's, or one that Docker keeps under its exec root."""

    names: tuple[str, ...]  # the link's name: the first one free
    container_id: str
    container_name: str
    target: str
    kind: str
    network: str = ""

    @property
    def key(self) -> tuple[str, str]:
        return self.container_id, self.target

    def entry(self, name: str) -> Entry:
        return Entry(
            name, self.container_id, self.container_name, self.target, self.kind, self.network
        )


def target_of(c: Workload) -> str:
    return f"/proc/{c.pid}/ns/net"


def workload_candidate(c: Workload) -> Candidate:
    kind = "pod" if c.is_pod else "container"
    return Candidate((c.name, c.id[:12]), c.id, c.name, target_of(c), kind)


def docker_candidates(
    names: Iterable[str], directory: str, networks: Iterable[Network]
) -> list[Candidate]:
    """Docker's own namespaces among the files of its exec root's netns/, with what each is: an
    overlay network's (`<epoch>-<network id[:10]>`, core/overlay.py), Swarm's load balancer of a
    network (`lb_<network id[:9]>`) and its routing mesh (`ingress_sbox`). A container's
    (its sandbox's id) is linked by its container's name instead."""
    by_id = {n.id: n for n in networks}
    out = []
    for name in sorted(names):
        prefix = overlay.namespace_prefix(name)
        lb = overlay.LB_SANDBOX.fullmatch(name)
        if prefix:
            kind, network = OVERLAY, overlay.network_of(prefix, by_id)
        elif lb:
            kind, network = LOAD_BALANCER, _network_by_prefix(lb.group(1), by_id)
        elif name == overlay.INGRESS_SANDBOX:
            kind = ROUTING_MESH
            network = next((n for n in by_id.values() if n.name == overlay.INGRESS_NETWORK), None)
        else:
            continue
        path = f"{directory.rstrip('/')}/{name}"
        out.append(Candidate((name,), "", "", path, kind, network.name if network else ""))
    return out


def _network_by_prefix(prefix: str, networks: dict[str, Network]) -> Network | None:
    return next((n for i, n in networks.items() if i.startswith(prefix)), None)


def plan(
    record: list[Entry],
    candidates: list[Candidate],
    on_disk: dict[str, str | None],
    selected: set[tuple[str, str]] | None = None,
) -> tuple[list[Entry], list[Entry], list[Entry], list[Candidate]]:
    """Pure: (links to remove, links to keep, links to create, candidates skipped).

    ``on_disk`` maps each name in the netns directory to its symlink target
    (None when it is not a symlink: a namespace of `ip netns add`). Only the
    ``selected`` candidates (keys; None: all) are linked anew; a recorded link
    is removed once its namespace is no candidate any more (a container that no
    longer runs with the same pid, a Docker namespace gone).
    """
    wanted = {c.key for c in candidates}
    ours = [e for e in record if on_disk.get(e.name, "") == e.target]  # others changed what we made
    remove = [e for e in ours if e.key not in wanted]
    keep = [e for e in ours if e.key in wanted]
    taken = set(on_disk) - {e.name for e in remove}
    linked = {e.key for e in keep}
    create: list[Entry] = []
    skipped: list[Candidate] = []
    for c in candidates:
        if c.key in linked or (selected is not None and c.key not in selected):
            continue
        name = next((n for n in c.names if n and n not in taken), None)
        if name is None:
            skipped.append(c)
            continue
        taken.add(name)
        create.append(c.entry(name))
    return remove, keep, create, skipped


def _candidates(args: argparse.Namespace) -> list[Candidate]:
    """Every runtime's running workloads with a namespace of their own, then Docker's own
    namespaces; a runtime that does not answer is an error here: the links of its containers
    would be judged gone."""
    from exporter.app import runtimes  # loaded when run: `--help` never pays for the sources

    try:
        sources = runtimes.from_args(args)
    except runtimes.SourceConfigError as exc:
        raise CommandError(str(exc)) from None
    workloads: list[Candidate] = []
    docker: list[Candidate] = []
    for source in sources:
        try:
            running = source.workloads()
            if source.netns_dir:
                docker += _hidden(source)
        except SourceUnavailable as exc:
            raise CommandError(
                f"{exc}; cannot tell which namespace belongs to which container"
            ) from None
        finally:
            source.close()
        workloads += [workload_candidate(c) for c in running if c.pid and c.network_mode != "host"]
    return workloads + docker


def _hidden(source: WorkloadSource) -> list[Candidate]:
    """The namespaces a runtime keeps under a directory of its own that are bound there now (a file
    left behind unmounted is no namespace)."""
    directory = source.netns_dir
    try:
        names = os.listdir(directory)
        device = os.stat(directory).st_dev
    except OSError:
        return []
    bound = []
    for name in names:
        try:
            if os.stat(os.path.join(directory, name)).st_dev != device:
                bound.append(name)
        except OSError:
            continue
    return docker_candidates(bound, directory, source.networks())


def matches(container_id: str, name: str, wanted: list[str]) -> bool:
    """Whether the container is one of those named (by name, or by id or an id prefix of 4+ digits)."""
    return any(w == name or (len(w) >= 4 and container_id.startswith(w)) for w in wanted)


def chosen(e: Entry | Candidate, wanted: list[str]) -> bool:
    """Whether the user named it: a container by name or id (prefix), a namespace of Docker's own by
    its file's name or its network's name."""
    if e.container_id:
        return matches(e.container_id, e.container_name, wanted)
    name = e.name if isinstance(e, Entry) else e.names[0]
    return any(w in (name, e.network) for w in wanted)


class NetnsCommand(Command):
    name = "netns"
    help = (
        "link each running container's network namespace, and those Docker keeps to itself "
        "(overlays', Swarm's), into /var/run/netns for `ip netns`, or remove the links"
    )
    actions = {
        "visible": "link the namespace of each running container and each of Docker's own "
        "(overlay networks, Swarm's load balancers and routing mesh), or of those named "
        "(idempotent; removes the links of those gone meanwhile)",
        "invisible": "remove the links that `netns visible` made (all, or those named)",
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
                "containers",
                nargs="*",
                metavar="NAME",
                help="container name or id (prefix), or a Docker namespace's file name or network",
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
        candidates = _candidates(args)
        selected = None
        if args.containers:
            selected = {c.key for c in candidates if chosen(c, args.containers)}
            for wanted in args.containers:
                if not any(chosen(c, [wanted]) for c in candidates):
                    sys.stderr.write(
                        f"warning: no running container {wanted!r} with its own namespace, "
                        "nor a Docker namespace of that name or network\n"
                    )
        os.makedirs(self.netns_dir, mode=0o755, exist_ok=True)
        remove, keep, create, skipped = plan(self._load(), candidates, self._on_disk(), selected)
        for e in remove:
            self._unlink(e)
        for e in create:
            os.symlink(e.target, self._path(e.name))
        self._save(keep + create)
        for c in skipped:
            taken = " and /".join(c.names)
            sys.stderr.write(
                f"warning: {self.netns_dir}/{taken} taken by something else; "
                f"{c.container_name or c.target} not linked\n"
            )
        return (
            [
                self._row(e, f"removed ({'container' if e.container_id else 'namespace'} gone)")
                for e in remove
            ]
            + [self._row(e, "kept") for e in keep]
            + [self._row(e, "created") for e in create]
        )

    def invisible(self, wanted: list[str]) -> list[dict]:
        record = self._load()
        picked = [e for e in record if not wanted or chosen(e, wanted)]
        on_disk = self._on_disk()
        removed = [e for e in picked if on_disk.get(e.name, "") == e.target]
        for e in removed:
            self._unlink(e)
        self._save([e for e in record if e not in picked])
        return [self._row(e, "removed") for e in removed]

    def _row(self, e: Entry, status: str) -> dict:
        return {
            "name": e.name,
            "kind": e.kind,
            "network": e.network,
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
