"""The long-running half: follows the workload sources' events, netlink link
notifications and the exits of workloads' processes, keeps a HostState, and
publishes a fresh immutable Snapshot after each batch of changes. Scrapes read
``daemon.snapshot`` (one reference) and never lock against this loop.

Threads: per workload source an event follower and a health ping, one for link
notifications and one for process exits (they only enqueue typed items, see
exporter.state.changes), one state loop (the only writer of the state; it does the
follow-up I/O such as looking a started workload up), and while a resync runs,
one that reads everything afresh: at 200 containers that takes half a second,
which events do not wait for.
"""

from __future__ import annotations

import dataclasses
import gc
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence

from exporter import logs
from exporter.core import topology
from exporter.core.model import Container, HostState
from exporter.sources.kernel import exits
from exporter.sources.kernel.netlink import RCVBUF_BYTES, LinkMonitor, Netlink
from exporter.sources.kernel.procfs import Procfs
from exporter.sources.runtimes.follow import Follower
from exporter.sources.runtimes.workloads import Effect, SourceUnavailable, WorkloadSource
from exporter.state.changes import (
    REPLAYED,
    Change,
    LinkChanged,
    ProcessExited,
    Resynced,
    ResyncWanted,
    RuntimeEvent,
    RuntimeUp,
    Stop,
)
from exporter.state.loader import StateReader

log = logs.get_logger()

MAX_BATCH = 20000
QUIET, COALESCE_MAX = 0.002, 0.1  # seconds; see Daemon._coalesce
SUBSCRIBE_WAIT = 2.0


class Daemon:
    def __init__(
        self,
        sources: Sequence[WorkloadSource],
        procfs: Procfs,
        resync_interval: float = 300.0,
        netlink_rcvbuf: int = RCVBUF_BYTES,
    ) -> None:
        self.sources = {s.runtime: s for s in sources}
        self.procfs = procfs
        self.resync_interval = resync_interval
        self.snapshot = topology.empty()
        self.published = threading.Event()  # the kernel's side is published: scrapes may start
        self.started = threading.Event()  # the first full read is published
        self.events = Counter(
            {("netlink", a): 0 for a in ("add", "delete", "port")} | {("process", "exit"): 0}
        )
        self.events.update({(s.runtime, a): 0 for s in sources for a in s.event_actions})
        # Resync (source, reason) pairs, exported from the start at 0.
        self.resyncs = Counter(
            {("all", "start"): 0, ("all", "periodic"): 0, ("netlink", "overflow"): 0}
            | {(s.runtime, "reconnect"): 0 for s in sources}
        )
        self._queue: queue.Queue[Change] = queue.Queue()
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._state = HostState()
        self._netlink = Netlink()
        self._reader = StateReader(self._netlink, sources, procfs)
        self._followers = {s.runtime: Follower(s, self._queue.put) for s in sources}
        self._monitor = LinkMonitor(
            lambda action, link: self._queue.put(LinkChanged(action, link)),
            lambda: self._queue.put(ResyncWanted("netlink", "overflow")),
            netlink_rcvbuf,
        )
        self._exits = (
            exits.ExitWatcher(lambda wid, pid: self._queue.put(ProcessExited(wid, pid)))
            if exits.usable(procfs.root)
            else None
        )
        self._replay: list[Change] | None = (
            None  # while a resync reads: the items applied meanwhile
        )
        self._resync_wanted: ResyncWanted | None = None  # asked for while one was reading

    # -- lifecycle -------------------------------------------------------

    def start(self) -> None:
        """Follow every source; the state loop reads everything once, then follows changes.
        Returns at once: a source that does not answer delays nothing but its own part."""
        self._spawn("netlink-events", self._monitor.run)
        if self._exits is not None:
            self._spawn("process-exits", self._exits.run)
        for runtime, follower in self._followers.items():
            self._spawn(f"{runtime}-events", follower.run_events)
            self._spawn(f"{runtime}-health", follower.run_health)
        self._spawn("state", self._run_state)

    def stop(self, timeout: float = 1.5) -> None:
        self._stopping.set()
        self._monitor.stop()
        if self._exits is not None:
            self._exits.stop()
        for follower in self._followers.values():
            follower.stop()
        self._queue.put(Stop())
        deadline = time.monotonic() + timeout
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
        if not any(t.is_alive() for t in self._threads):
            self._netlink.close()
        for source in self.sources.values():
            source.close()

    def _spawn(self, name: str, target: Callable[[], None]) -> None:
        t = threading.Thread(target=target, name=name, daemon=True)
        t.start()
        self._threads.append(t)

    # -- the state loop ----------------------------------------------------

    def _run_state(self) -> None:
        started = time.monotonic()
        # The kernel's side first: served at once, whatever the runtimes take to answer.
        self._state = self._reader.full(runtimes=False)
        self._publish()
        # Subscribe before the first read of the runtimes so that nothing between the two is
        # missed; a subscription still pending after a while resyncs once it succeeds.
        for follower in self._followers.values():
            if not follower.attempted.wait(SUBSCRIBE_WAIT):
                follower.missed()
        first = self._reader.full(self._state)
        self._install(Resynced(ResyncWanted("all", "start"), first, started))
        self.started.set()
        next_resync = time.monotonic() + self.resync_interval
        while True:
            try:
                timeout = max(0.0, next_resync - time.monotonic())
                batch: list[Change] = [self._queue.get(timeout=timeout)]
            except queue.Empty:
                batch = [ResyncWanted("all", "periodic")]
            self._coalesce(batch)
            if any(isinstance(item, Stop) for item in batch):
                return
            try:
                resync, changed = self._apply(batch)
                if changed:
                    self._publish()
                if resync:
                    self._resync(resync)
                    next_resync = time.monotonic() + self.resync_interval
            except Exception:  # keep following events; the next resync repairs the state
                log.exception("state_update_failed")
                self._queue.put(ResyncWanted("all", "periodic"))

    def _coalesce(self, batch: list[Change]) -> None:
        """Add what is queued behind the first item; once a link event is in the batch, also what
        follows until the queue stays quiet for QUIET seconds, at most COALESCE_MAX after the start.
        Each batch ends in one snapshot, and a burst of link events arrives in pieces: taken one
        piece at a time, 1,000 new veths cost thousands of rebuilds. Runtime events come one at a
        time and wait for nothing."""
        until = time.monotonic() + COALESCE_MAX
        bursty = isinstance(batch[0], LinkChanged)
        while len(batch) < MAX_BATCH:
            wait = min(QUIET, until - time.monotonic()) if bursty else 0
            try:
                batch.append(
                    self._queue.get(timeout=wait) if wait > 0 else self._queue.get_nowait()
                )
            except queue.Empty:
                return
            bursty = bursty or isinstance(batch[-1], LinkChanged)

    def _apply(
        self, batch: list[Change], replaying: bool = False
    ) -> tuple[ResyncWanted | None, bool]:
        """Apply a batch in order. Returns the resync it asks for, if any, and whether the state may
        have changed: events that change nothing (a container's create, the destroy after its die)
        cost no rebuild. While a resync reads, the changes are also kept to be applied again on its
        result."""
        resync, changed = None, False
        for item in batch:
            if isinstance(item, REPLAYED) and self._replay is not None and not replaying:
                self._replay.append(item)
            match item:
                case LinkChanged(action, link):
                    self._count("netlink", action, replaying)
                    self._reader.apply_link(self._state, action, link)
                    changed = True
                case RuntimeEvent(runtime, event):
                    self._count(runtime, event.action, replaying)
                    changed = self._apply_event(item) or changed
                case ProcessExited(workload_id, pid):
                    self._count("process", "exit", replaying)
                    changed = self._process_exited(workload_id, pid) or changed
                case RuntimeUp(runtime, up):
                    changed = self._set_runtime_up(runtime, up) or changed
                case ResyncWanted():
                    resync = resync or item
                case Resynced():
                    self._install(item)
        return resync, changed

    def _count(self, source: str, action: str, replaying: bool) -> None:
        # Only the pre-created keys: the scrape thread copies this Counter and must never see it grow.
        if (source, action) in self.events and not replaying:
            self.events[(source, action)] += 1

    def _apply_event(self, item: RuntimeEvent) -> bool:
        """Follow one lifecycle event; whether the state may have changed."""
        source, event = self.sources[item.runtime], item.event
        try:
            match event.effect:
                case Effect.GONE:
                    return self._reader.remove_container(self._state, event.workload_id)
                case Effect.CHANGED:
                    return self._refresh(source, event.workload_id)
                case Effect.CHANGED_IF_KNOWN if event.workload_id in self._state.containers:
                    return self._refresh(source, event.workload_id)
                case Effect.NETWORKS:
                    return self._reload_networks(source)
        except SourceUnavailable as exc:
            # What this event told is lost until the runtime is read again: say it is down, so that
            # no namespace of its counts as unowned meanwhile, and resync once it answers.
            self._followers[item.runtime].unreachable(str(exc))
        return False

    def _refresh(self, source: WorkloadSource, workload_id: str) -> bool:
        if not workload_id:
            return False
        found = source.workload(workload_id)
        if found is None:
            return self._reader.remove_container(self._state, workload_id)
        self._reader.add_container(self._state, found)
        if not self._knows_networks(found):  # a runtime that tells no network's creation (Podman)
            self._reload_networks(source)
        return True

    def _knows_networks(self, c: Container) -> bool:
        networks = self._state.networks.values()
        known = {n.id for n in networks} | {n.name for n in networks}
        return all(ep.network_id in known or ep.network in known for ep in c.endpoints)

    def _reload_networks(self, source: WorkloadSource) -> bool:
        networks = {n.id: n for n in source.networks()}
        others = {i: n for i, n in self._state.networks.items() if n.runtime != source.runtime}
        fresh = others | networks  # this runtime's removed networks go at once
        changed, self._state.networks = fresh != self._state.networks, fresh
        return changed

    def _process_exited(self, workload_id: str, pid: int) -> bool:
        """A workload's main process exited: it no longer runs, whatever its runtime says next. A
        pod sandbox's namespace is held by its file, not by the process: the sandbox stays, not
        ready, until its runtime stops it."""
        c = self._state.containers.get(workload_id)
        if c is None or c.pid != pid:
            return False
        if c.is_pod and c.netns_path:
            self._state.containers[c.id] = dataclasses.replace(c, pid=0, ready=False, members=())
            return True
        return self._reader.remove_container(self._state, workload_id)

    def _set_runtime_up(self, runtime: str, up: bool) -> bool:
        changed = self._state.runtimes_up.get(runtime) != up
        self._state.runtimes_up[runtime] = up
        return changed

    def _resync(self, wanted: ResyncWanted) -> None:
        """Read everything afresh in another thread (one read at a time; a resync asked for
        meanwhile follows it). The state loop goes on applying events, and applies them again on
        the result."""
        if self._replay is not None:
            self._resync_wanted = self._resync_wanted or wanted
            return
        self._replay = []
        # The read reuses what is known of links' ages and namespace files; it gets copies.
        known = HostState(
            first_seen=dict(self._state.first_seen), netns_files=dict(self._state.netns_files)
        )
        threading.Thread(
            target=self._read_all, args=(wanted, known), name="resync", daemon=True
        ).start()

    def _read_all(self, wanted: ResyncWanted, known: HostState) -> None:
        started, state = time.monotonic(), None
        try:
            with Netlink() as netlink:
                state = StateReader(netlink, list(self.sources.values()), self.procfs).full(known)
        except Exception:  # the state stays as it was; the next resync tries again
            log.exception("resync_failed", source=wanted.source, reason=wanted.reason)
        self._queue.put(Resynced(wanted, state, started))

    def _install(self, done: Resynced) -> None:
        """Make a full read the state, with the changes applied since it began applied again, and
        publish it."""
        replay, self._replay = self._replay or [], None
        state, wanted = done.state, done.wanted
        if state is not None:
            self._keep_live_workloads(state, self._state)
            self._state = state
            self._apply(replay, replaying=True)
            self._publish()
            _settle_heap()
            self.resyncs[(wanted.source, wanted.reason)] += 1
            log.info(
                "resync",
                source=wanted.source,
                reason=wanted.reason,
                containers=len(state.containers),
                links=len(state.links),
                runtimes_up=",".join(
                    f"{r}={int(up)}" for r, up in sorted(state.runtimes_up.items())
                ),
                replayed=len(replay),
                seconds=round(time.monotonic() - done.started, 3),
            )
        if self._resync_wanted is not None:
            again, self._resync_wanted = self._resync_wanted, None
            self._resync(again)

    def _keep_live_workloads(self, state: HostState, previous: HostState) -> None:
        """For a runtime that did not answer, keep its workloads whose process still holds the same
        namespace."""
        for c in previous.containers.values():
            if state.runtimes_up.get(c.runtime, True):
                continue
            if (
                c.pid
                and c.netns_inode is not None
                and self.procfs.netns_inode(c.pid) == c.netns_inode
            ):
                self._reader.add_container(state, c)

    def _publish(self) -> None:
        self.snapshot = topology.build(self._state, self.snapshot, time.monotonic())
        self.published.set()
        if self._exits is not None:
            self._exits.sync(
                {
                    c.id: (c.pid, c.netns_inode)
                    for c in self._state.containers.values()
                    if c.pid and c.netns_inode is not None
                }
            )


def _settle_heap() -> None:
    """Collect all garbage, then exempt what survived from later automatic collections (gc.freeze).
    At 2,000 veths a full collection walks some 50,000 objects and stalls every thread for 20-30 ms
    at a random moment, in the middle of a scrape or of an event's path; later collections walk only
    objects born since. Every full resync does this again, so garbage cycles among the frozen
    objects live at most one resync interval."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()
