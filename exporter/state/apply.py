"""How each change updates the HostState: a runtime's event with what its runtime answered, a
runtime's listing, a workload's process exit. The state loop (daemon.py) applies them in order,
one batch at a time, and is the only caller.

A runtime's answer is taken in its own thread and applied when it arrives: one taken before a
process exited may arrive after the exit was applied. `Exited` keeps which processes exited, so
that such an answer never brings back what the exit took away."""

from __future__ import annotations

import dataclasses
from collections import OrderedDict

from exporter.core.model import HostState, Workload
from exporter.sources.kernel.procfs import Procfs
from exporter.sources.runtimes.workloads import Effect
from exporter.state.changes import RuntimeEvent, RuntimeListed
from exporter.state.loader import StateLoader

EXITS_KEPT = 4096  # exits remembered: an answer that more exits overtook is not recognised


class Exited:
    """The process whose exit was applied, per workload (the latest EXITS_KEPT)."""

    def __init__(self, kept: int = EXITS_KEPT) -> None:
        self.kept = kept
        self._pids: OrderedDict[str, int] = OrderedDict()

    def record(self, workload_id: str, pid: int) -> None:
        self._pids[workload_id] = pid
        self._pids.move_to_end(workload_id)
        if len(self._pids) > self.kept:
            self._pids.popitem(last=False)

    def now(self, c: Workload) -> Workload | None:
        """A workload as a runtime reported it, as it is now: a process that exited since runs no
        more (a pod's sandbox is not ready; another workload does not run)."""
        return _without_process(c) if c.pid and self._pids.get(c.id) == c.pid else c


def runtime_event(
    state: HostState, reader: StateLoader, exited: Exited, item: RuntimeEvent
) -> bool:
    """Follow one lifecycle event, with what its runtime answered about it; whether the state
    may have changed."""
    event = item.event
    found = exited.now(item.workload) if item.workload is not None else None
    changed = item.networks is not None and set_networks(state, item.runtime, item.networks)
    if found is not None and event.effect in (Effect.CHANGED, Effect.CHANGED_IF_KNOWN):
        reader.add_container(state, found)
        return True
    if event.effect in (Effect.GONE, Effect.CHANGED):
        return reader.remove_container(state, event.workload_id) or changed
    return changed


def set_networks(state: HostState, runtime: str, networks: tuple) -> bool:
    """Replace one runtime's networks (its removed networks go at once)."""
    others = {i: n for i, n in state.networks.items() if n.runtime != runtime}
    fresh = others | {n.id: n for n in networks}
    changed, state.networks = fresh != state.networks, fresh
    return changed


def install_listing(
    state: HostState, reader: StateLoader, procfs: Procfs, exited: Exited, item: RuntimeListed
) -> None:
    """One runtime's listing replaces its part of the state. A failed one keeps, of its
    workloads, those whose process still holds the same namespace (a runtime that does not
    answer tells nothing of them; the others are gone or cannot be told apart from leaks)."""
    mine = [c for c in state.containers.values() if c.runtime == item.runtime]
    if item.error:
        for c in mine:
            if not _still_live(procfs, c):
                reader.remove_container(state, c.id)
        return
    listed = {c.id: c for c in map(exited.now, item.workloads) if c is not None}
    for c in mine:
        if c.id not in listed:
            reader.remove_container(state, c.id)
    for c in listed.values():
        if not _same(state.containers.get(c.id), c):
            reader.add_container(state, c)
    set_networks(state, item.runtime, item.networks)


def process_exited(
    state: HostState, reader: StateLoader, exited: Exited, workload_id: str, pid: int
) -> bool:
    """A workload's main process exited: it no longer runs, whatever its runtime says next (an
    answer taken before the exit included)."""
    exited.record(workload_id, pid)
    c = state.containers.get(workload_id)
    if c is None or c.pid != pid:
        return False
    after = _without_process(c)
    if after is None:
        return reader.remove_container(state, workload_id)
    state.containers[c.id] = after
    return True


def _without_process(c: Workload) -> Workload | None:
    """A workload once its main process exited. A pod sandbox's namespace is held by its file, not
    by the process: the sandbox stays, not ready, until its runtime stops it."""
    if c.is_pod and c.netns_path:
        return dataclasses.replace(c, pid=0, ready=False, members=())
    return None


def _still_live(procfs: Procfs, c: Workload) -> bool:
    return bool(c.pid and c.netns_inode is not None and procfs.netns_inode(c.pid) == c.netns_inode)


def _same(known: Workload | None, listed: Workload) -> bool:
    """Whether a listed workload is the one known (whose namespace identity is already resolved)."""
    return known is not None and (dataclasses.replace(known, netns_inode=None, nsid=None) == listed)
