"""The long-running half: follows the workload sources' events, netlink link
notifications and the exits of workloads' processes, keeps a HostState, and
publishes a fresh immutable Snapshot after each batch of changes. Scrapes read
``daemon.snapshot`` (one reference) and never lock against this loop.

Threads: per workload source an event follower, a health ping and a worker that
makes that runtime's calls (look-ups, listings: a hung runtime stalls nothing
but its own worker), one for link notifications and one for process exits (they
only enqueue typed items, see exporter.state.changes), one state loop (the only
writer of the state; its follow-up I/O is the kernel's: a new namespace's
links), and while a resync runs, one that reads the kernel's side afresh: at
200 containers that takes half a second, which events do not wait for.
"""

from __future__ import annotations

import gc
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence

from exporter import logs
from exporter.core import topology
from exporter.core.model import HostState
from exporter.sources.kernel import exits
from exporter.sources.kernel.link_monitor import LinkMonitor
from exporter.sources.kernel.netlink import RCVBUF_BYTES, Netlink
from exporter.sources.kernel.procfs import Procfs
from exporter.sources.runtimes import cni_cache
from exporter.sources.runtimes.workloads import WorkloadSource
from exporter.state import apply
from exporter.state.changes import (
    REPLAYED,
    Change,
    LinkChanged,
    ProcessExited,
    Resynced,
    ResyncWanted,
    RuntimeDown,
    RuntimeEvent,
    RuntimeListed,
    Stop,
)
from exporter.state.follow import Follower
from exporter.state.loader import StateLoader

log = logs.get_logger()

MAX_BATCH = 20000
QUIET, COALESCE_MAX = 0.002, 0.1  # seconds; see Daemon._coalesce


class Daemon:
    def __init__(
        self,
        sources: Sequence[WorkloadSource],
        procfs: Procfs,
        resync_interval: float = 300.0,
        netlink_rcvbuf: int = RCVBUF_BYTES,
        first_read_wait: float = 5.0,
    ) -> None:
        self.sources = {s.runtime: s for s in sources}
        self.procfs = procfs
        self.resync_interval = resync_interval
        # Scrapes wait for the first full read until this long after the start, not beyond.
        self.first_read_wait = first_read_wait
        self._first_read_deadline = time.monotonic() + first_read_wait
        self.snapshot = topology.empty()
        self.published = threading.Event()  # the kernel's side is published: scrapes may start
        # Every runtime answered its first listing (or failed it), or the daemon stops.
        self.started = threading.Event()
        self.failure = ""  # why the state loop died, if it ever does (/healthz says so)
        self.events = Counter(
            {("netlink", a): 0 for a in ("add", "delete", "port")} | {("process", "exit"): 0}
        )
        self.events.update({(s.runtime, a): 0 for s in sources for a in s.event_actions})
        # Resync (source, reason) pairs, exported from the start at 0.
        self.resyncs = Counter(
            {("all", "start"): 0, ("all", "periodic"): 0, ("netlink", "overflow"): 0}
            | {(s.runtime, r): 0 for s in sources for r in ("reconnect", "overflow")}
        )
        self._queue: queue.Queue[Change] = queue.Queue()
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._state = HostState()
        self._netlink = Netlink()
        self._reader = StateLoader(self._netlink, sources, procfs)
        self._followers = {s.runtime: Follower(s, self._queue.put) for s in sources}
        self._first_pending = set(self.sources)  # runtimes whose first listing is not in yet
        # Whether each runtime is up, as published with the snapshot: only the runtimes that
        # answered (or failed) at least once. Before, a runtime counts as down in the state (no
        # namespace is judged unowned) but has no runtime_up sample, rather than a false 0.
        self.runtimes_up: dict[str, bool] = {}
        self._answered: set[str] = set()
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
        self._exited = apply.Exited()  # for the runtimes' answers that an exit overtook

    # -- lifecycle -------------------------------------------------------

    def start(self) -> None:
        """Follow every source; the state loop reads the kernel once, then follows changes while
        each runtime's worker makes its first listing. Returns at once: a source that does not
        answer delays nothing but its own part."""
        self._first_read_deadline = time.monotonic() + self.first_read_wait
        self._spawn("netlink-events", self._monitor.run)
        if self._exits is not None:
            self._spawn("process-exits", self._exits.run)
        for runtime, follower in self._followers.items():
            self._spawn(f"{runtime}-events", follower.run_events)
            self._spawn(f"{runtime}-health", follower.run_health)
            self._spawn(f"{runtime}-calls", follower.run_lookups)
        self._spawn("state", self._run_state)

    def stop(self, timeout: float = 1.5) -> None:
        self._stopping.set()
        self.started.set()  # a scrape waiting for the first read answers now
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

    def wait_first_read(self) -> None:
        """For a scrape: wait until every runtime answered once, at most until first_read_wait
        after the start (a runtime that does not answer delays the first scrapes only)."""
        self.published.wait(max(0.0, self._first_read_deadline - time.monotonic()))
        self.started.wait(max(0.0, self._first_read_deadline - time.monotonic()))

    def _spawn(self, name: str, target: Callable[[], None]) -> None:
        t = threading.Thread(target=target, name=name, daemon=True)
        t.start()
        self._threads.append(t)

    # -- the state loop ----------------------------------------------------

    def _run_state(self) -> None:
        """The state loop; it does not end but on stop. Should it die anyway, the failure is
        logged and kept for /healthz."""
        try:
            self._follow_changes()
        except BaseException as exc:
            self.failure = f"{type(exc).__name__}: {exc}"
            log.error("state_loop_died", error=self.failure, exc_info=exc)
            self.started.set()

    def _follow_changes(self) -> None:
        # The kernel's side first: served at once, whatever the runtimes take to answer.
        self._state = self._reader.full(runtimes=False)
        self._state.runtimes_up = dict.fromkeys(self.sources, False)
        self._publish()
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
                    changed = (
                        apply.runtime_event(self._state, self._reader, self._exited, item)
                        or changed
                    )
                case RuntimeListed():
                    changed = self._install_listing(item, replaying) or changed
                case ProcessExited(workload_id, pid):
                    self._count("process", "exit", replaying)
                    changed = (
                        apply.process_exited(
                            self._state, self._reader, self._exited, workload_id, pid
                        )
                        or changed
                    )
                case RuntimeDown(runtime, error):
                    changed = self._set_up(runtime, False, error, replaying) or changed
                case ResyncWanted():
                    resync = resync or item
                case Resynced():
                    self._install(item)
        return resync, changed

    def _count(self, source: str, action: str, replaying: bool) -> None:
        # Only the pre-created keys: the scrape thread copies this Counter and must never see it grow.
        if (source, action) in self.events and not replaying:
            self.events[(source, action)] += 1

    def _install_listing(self, item: RuntimeListed, replaying: bool) -> bool:
        apply.install_listing(self._state, self._reader, self.procfs, self._exited, item)
        if item.reason == "reconnect" and self.sources[item.runtime].has_pods and not item.error:
            # What a restarted runtime lost, its CNI cache may still name (a leaked pod namespace).
            self._state.cni_pods = cni_cache.read()
        self._set_up(item.runtime, item.followed and not item.error, item.error, replaying)
        if not replaying:
            self._listed(item)
        return True

    def _listed(self, item: RuntimeListed) -> None:
        """Count and log a listing (a failed one at debug: its runtime's warning said it once)."""
        key = (item.runtime, item.reason)
        if key in self.resyncs and not item.error:
            self.resyncs[key] += 1
        (log.debug if item.error else log.info)(
            "runtime_listed",
            runtime=item.runtime,
            reason=item.reason,
            workloads=len(item.workloads),
            up=int(self._state.runtimes_up.get(item.runtime, False)),
        )
        self._first_pending.discard(item.runtime)  # `started` once its snapshot is published

    def _set_up(self, runtime: str, up: bool, error: str, replaying: bool) -> bool:
        """Record a runtime's health; log its changes (once each: a runtime failing the same way
        again and again says so once)."""
        was = self._state.runtimes_up.get(runtime) if runtime in self._answered else None
        self._state.runtimes_up[runtime] = up
        self._answered.add(runtime)
        if replaying or was == up:
            return was != up
        source = self.sources[runtime]
        if not up and error:
            log.warning(
                f"{runtime}_unreachable",
                address=source.address,
                error=error,
                detail="retrying with backoff; its veths are served without workload names",
            )
        elif up and was is False:
            log.info(f"{runtime}_reachable", address=source.address)
        return True

    def _resync(self, wanted: ResyncWanted) -> None:
        """Read the kernel's side afresh in another thread (one read at a time; a resync asked for
        meanwhile follows it) and, for `all`, every runtime in its worker. The state loop goes on
        applying events, and applies them again on the result."""
        if wanted.source == "all":
            for follower in self._followers.values():
                follower.resync(wanted.reason)
        if self._replay is not None:
            self._resync_wanted = self._resync_wanted or wanted
            return
        self._replay = []
        # The read reuses what is known of links' ages and namespace files; it gets copies.
        known = HostState(
            containers=dict(self._state.containers),
            networks=dict(self._state.networks),
            runtimes_up=dict(self._state.runtimes_up),
            first_seen=dict(self._state.first_seen),
            netns_files=dict(self._state.netns_files),
        )
        threading.Thread(
            target=self._read_all, args=(wanted, known), name="resync", daemon=True
        ).start()

    def _read_all(self, wanted: ResyncWanted, known: HostState) -> None:
        started, state = time.monotonic(), None
        try:
            with Netlink() as netlink:
                state = StateLoader(netlink, (), self.procfs).reread(known)
        except Exception:  # the state stays as it was; the next resync tries again
            log.exception("resync_failed", source=wanted.source, reason=wanted.reason)
        self._queue.put(Resynced(wanted, state, started))

    def _install(self, done: Resynced) -> None:
        """Make a full read of the kernel's side the state, with the changes applied since it began
        applied again, and publish it."""
        replay, self._replay = self._replay or [], None
        state, wanted = done.state, done.wanted
        if state is not None:
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

    def _publish(self) -> None:
        self.snapshot = topology.build(self._state, self.snapshot, time.monotonic())
        up = self._state.runtimes_up
        self.runtimes_up = {r: up[r] for r in sorted(self._answered) if r in up}
        self.published.set()
        if not self._first_pending and not self.started.is_set():
            self.resyncs[("all", "start")] += 1
            _settle_heap()
            self.started.set()
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
