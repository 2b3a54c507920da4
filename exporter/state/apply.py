"""How each change updates the HostState: a runtime's event with what its runtime answered, a
runtime's listing, a workload's process exit. The state loop (daemon.py) applies them in order,
one batch at a time, and is the only caller."""

from __future__ import annotations

import dataclasses

from exporter.core.model import HostState, Workload
from exporter.sources.kernel.procfs import Procfs
from exporter.sources.runtimes.workloads import Effect
from exporter.state.changes import RuntimeEvent, RuntimeListed
from exporter.state.loader import StateLoader


def runtime_event(state: HostState, reader: StateLoader, item: RuntimeEvent) -> bool:
    """Follow one lifecycle event, with what its runtime answered about it; whether the state
    may have changed."""
    event, found = item.event, item.workload
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
    state: HostState, reader: StateLoader, procfs: Procfs, item: RuntimeListed
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
    listed = {c.id: c for c in item.workloads}
    for c in mine:
        if c.id not in listed:
            reader.remove_container(state, c.id)
    for c in item.workloads:
        if not _same(state.containers.get(c.id), c):
            reader.add_container(state, c)
    set_networks(state, item.runtime, item.networks)


def process_exited(state: HostState, reader: StateLoader, workload_id: str, pid: int) -> bool:
    """A workload's main process exited: it no longer runs, whatever its runtime says next. A
    pod sandbox's namespace is held by its file, not by the process: the sandbox stays, not
    ready, until its runtime stops it."""
    c = state.containers.get(workload_id)
    if c is None or c.pid != pid:
        return False
    if c.is_pod and c.netns_path:
        state.containers[c.id] = dataclasses.replace(c, pid=0, ready=False, members=())
        return True
    return reader.remove_container(state, workload_id)


def _still_live(procfs: Procfs, c: Workload) -> bool:
    return bool(c.pid and c.netns_inode is not None and procfs.netns_inode(c.pid) == c.netns_inode)


def _same(known: Workload | None, listed: Workload) -> bool:
    """Whether a listed workload is the one known (whose namespace identity is already resolved)."""
    return known is not None and (dataclasses.replace(known, netns_inode=None, nsid=None) == listed)
