"""The long-running half: follows Docker events, netlink link notifications and
the exits of containers' processes, keeps a HostState, and publishes a fresh
immutable Snapshot after each batch of changes. Scrapes read
``daemon.snapshot`` (one reference) and never lock against this loop.

Threads: one per event source (they only enqueue), one state loop (the only
writer of the state; it does the follow-up I/O such as ``docker inspect``), and
while a resync runs, one that reads everything afresh: at 200 containers that
takes half a second, which events do not wait for.
"""

from __future__ import annotations

import gc
import queue
import threading
import time
from collections import Counter

import structlog

from . import orphans, topology
from .model import HostState
from .sources import exits
from .sources.docker import UNREACHABLE, WATCHED_EVENTS, DockerSource
from .sources.netlink import RCVBUF_BYTES, LinkMonitor, Netlink
from .sources.procfs import Procfs
from .state import StateReader

log = structlog.get_logger()

BACKOFF_MIN, BACKOFF_MAX = 0.5, 30.0
MAX_BATCH = 20000
QUIET, COALESCE_MAX = 0.002, 0.1  # seconds; see Daemon._coalesce
_STOP = ("stop",)
REPLAYED = (
    "link",
    "docker",
    "exited",
    "docker_up",
)  # what a resync's result gets again; see Daemon._resync

# Resync (source, reason) pairs, exported from the start at 0.
RESYNC_KINDS = (
    ("all", "start"),
    ("all", "periodic"),
    ("docker", "reconnect"),
    ("netlink", "overflow"),
)


class Daemon:
    def __init__(
        self,
        docker: DockerSource | None,
        procfs: Procfs,
        resync_interval: float = 300.0,
        netlink_rcvbuf: int = RCVBUF_BYTES,
    ) -> None:
        self.docker = docker
        self.procfs = procfs
        self.resync_interval = resync_interval
        self.netlink_rcvbuf = netlink_rcvbuf
        self.snapshot = topology.empty()
        self.events = Counter(
            {("netlink", a): 0 for a in ("add", "delete", "port")} | {("process", "exit"): 0}
        )
        self.events.update(
            {("docker", a): 0 for actions in WATCHED_EVENTS.values() for a in actions}
        )
        self.resyncs = Counter(dict.fromkeys(RESYNC_KINDS, 0))
        self._queue: queue.Queue[tuple] = queue.Queue()
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._state = HostState()
        self._netlink: Netlink | None = None
        self._monitor: LinkMonitor | None = None
        self._docker_logged_down = False
        self._docker_attempted = threading.Event()
        self._replay: list | None = None  # while a resync reads: the items applied meanwhile
        self._resync_wanted: tuple | None = None  # a resync asked for while one was reading
        self._exits = (
            exits.ExitWatcher(lambda cid, pid: self._queue.put(("exited", cid, pid)))
            if exits.usable(procfs.root)
            else None
        )

    # -- lifecycle -------------------------------------------------------

    def start(self) -> None:
        """Subscribe to both sources, read everything once, then follow changes."""
        self._netlink = Netlink()
        self._reader = StateReader(self._netlink, self.docker, self.procfs)
        self._monitor = LinkMonitor(
            self._on_link,
            lambda: self._queue.put(("resync", "netlink", "overflow")),
            self.netlink_rcvbuf,
        )
        self._spawn("netlink-events", self._monitor.run)
        if self._exits is not None:
            self._spawn("process-exits", self._exits.run)
        if self.docker is not None:
            # Subscribe before the first read so that nothing between the two is missed.
            self._spawn("docker-events", self._watch_docker)
            self._docker_attempted.wait(self.docker.timeout + 1)
        started = time.monotonic()
        self._install("all", "start", self._reader.full(), started)
        self._spawn("state", self._run_state)

    def stop(self, timeout: float = 1.5) -> None:
        self._stopping.set()
        if self._monitor is not None:
            self._monitor.stop()
        if self._exits is not None:
            self._exits.stop()
        if self.docker is not None:
            self.docker.close_events()
        self._queue.put(_STOP)
        deadline = time.monotonic() + timeout
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
        if self._netlink is not None:
            self._netlink.close()
        if self.docker is not None:
            self.docker.reset()

    def _spawn(self, name: str, target) -> None:
        t = threading.Thread(target=target, name=name, daemon=True)
        t.start()
        self._threads.append(t)

    # -- producers ---------------------------------------------------------

    def _on_link(self, action: str, link) -> None:
        self._queue.put(("link", action, link))

    def _watch_docker(self) -> None:
        backoff = BACKOFF_MIN
        since: int | None = None
        while not self._stopping.is_set():
            try:
                try:
                    stream = self.docker.events(since=since)
                finally:
                    self._docker_attempted.set()
                self._queue.put(("docker_up", True))
                if since is not None or self._docker_logged_down:
                    self._queue.put(("resync", "docker", "reconnect"))
                since = since or int(time.time())
                backoff = BACKOFF_MIN
                for event in stream:
                    since = event.get("time", since)
                    self._queue.put(("docker", event))
                if not self._stopping.is_set():
                    log.warning(
                        "docker_events_ended",
                        detail="dockerd closed the event stream; reconnecting",
                    )
            except UNREACHABLE as exc:
                if not self._stopping.is_set() and not self._docker_logged_down:
                    log.warning(
                        "docker_unreachable",
                        host=self.docker.host,
                        error=str(exc),
                        detail="retrying with backoff; veths are served without container names",
                    )
            if self._stopping.is_set():
                return
            self._docker_logged_down = True
            self.docker.reset()
            self._queue.put(("docker_up", False))
            self._stopping.wait(backoff)
            backoff = min(backoff * 2, BACKOFF_MAX)

    # -- the state loop ----------------------------------------------------

    def _run_state(self) -> None:
        next_resync = time.monotonic() + self.resync_interval
        while True:
            try:
                batch = [self._queue.get(timeout=max(0.0, next_resync - time.monotonic()))]
            except queue.Empty:
                batch = [("resync", "all", "periodic")]
            self._coalesce(batch)
            if _STOP in batch:
                return
            try:
                resync, changed = self._apply(batch)
                if changed:
                    self._publish()
                if resync:
                    self._resync(*resync)
                    next_resync = time.monotonic() + self.resync_interval
            except Exception:  # keep following events; the next resync repairs the state
                log.exception("state_update_failed")
                self._queue.put(("resync", "all", "periodic"))

    def _coalesce(self, batch: list) -> None:
        """Add what is queued behind the first item; once a link event is in the batch, also what follows
        until the queue stays quiet for QUIET seconds, at most COALESCE_MAX after the start. Each batch ends
        in one snapshot, and a burst of link events arrives in pieces: taken one piece at a time, 1,000 new
        veths cost thousands of rebuilds. Docker events come one at a time and wait for nothing."""
        until = time.monotonic() + COALESCE_MAX
        bursty = batch[0][0] == "link"
        while len(batch) < MAX_BATCH:
            wait = min(QUIET, until - time.monotonic()) if bursty else 0
            try:
                batch.append(
                    self._queue.get(timeout=wait) if wait > 0 else self._queue.get_nowait()
                )
            except queue.Empty:
                return
            bursty = bursty or batch[-1][0] == "link"

    def _apply(self, batch: list, replaying: bool = False) -> tuple[tuple | None, bool]:
        """Apply a batch in order. Returns the resync it asks for, if any, and whether the state may
        have changed: events that change nothing (a container's create, the destroy after its die) cost
        no rebuild. While a resync reads, the changes are also kept to be applied again on its result."""
        resync, changed = None, False
        for item in batch:
            kind = item[0]
            if kind in REPLAYED and self._replay is not None and not replaying:
                self._replay.append(item)
            if kind == "link":
                self._count("netlink", item[1], replaying)
                self._reader.apply_link(self._state, item[1], item[2])
                changed = True
            elif kind == "docker":
                event = item[1]
                self._count("docker", event.get("Action", ""), replaying)
                changed = self._apply_docker(event) or changed
            elif kind == "exited":
                self._count("process", "exit", replaying)
                changed = self._process_exited(*item[1:]) or changed
            elif kind == "docker_up":
                changed = self._set_docker_up(item[1]) or changed
            elif kind == "resync":
                resync = resync or item[1:]
            elif kind == "resynced":
                self._install(*item[1:])
        return resync, changed

    def _count(self, source: str, action: str, replaying: bool) -> None:
        # Only the pre-created keys: the scrape thread copies this Counter and must never see it grow.
        if (source, action) in self.events and not replaying:
            self.events[(source, action)] += 1

    def _apply_docker(self, event: dict) -> bool:
        """Follow one Docker event; whether the state may have changed."""
        actor = event.get("Actor") or {}
        action = event.get("Action", "")
        try:
            if event.get("Type") == "network":
                if action in ("connect", "disconnect"):
                    # Starting a container connects it before "start", removing one disconnects it after
                    # "die": only a container already running needs another look.
                    container_id = (actor.get("Attributes") or {}).get("container", "")
                    return container_id in self._state.containers and self._refresh_container(
                        container_id
                    )
                networks = {n.id: n for n in self.docker.networks()}
                changed, self._state.networks = networks != self._state.networks, networks
                return changed
            if action in ("die", "destroy"):
                return self._reader.remove_container(self._state, actor.get("ID", ""))
            if action in (
                "start",
                "rename",
            ):  # not "create": the event filter lets it through for networks
                return self._refresh_container(actor.get("ID", ""))
        except UNREACHABLE as exc:
            log.debug("docker_call_failed", action=action, error=str(exc))
        return False

    def _process_exited(self, container_id: str, pid: int) -> bool:
        """A container's main process exited: it no longer runs, whatever Docker says next."""
        c = self._state.containers.get(container_id)
        return (
            c is not None
            and c.pid == pid
            and self._reader.remove_container(self._state, container_id)
        )

    def _refresh_container(self, container_id: str) -> bool:
        if not container_id:
            return False
        found = self.docker.inspect(container_id)
        if found is None:
            return self._reader.remove_container(self._state, container_id)
        self._reader.add_container(self._state, found)
        return True

    def _set_docker_up(self, up: bool) -> bool:
        if up and not self._state.docker_up and self._docker_logged_down:
            log.info("docker_reachable", host=self.docker.host)
            self._docker_logged_down = False
        changed, self._state.docker_up = up != self._state.docker_up, up
        return changed

    def _resync(self, source: str, reason: str) -> None:
        """Read everything afresh in another thread (one read at a time; a resync asked for meanwhile
        follows it). The state loop goes on applying events, and applies them again on the result."""
        if self._replay is not None:
            self._resync_wanted = self._resync_wanted or (source, reason)
            return
        self._replay = []
        # The read reuses what is known of links' ages and namespace files; it gets copies.
        known = HostState(
            first_seen=dict(self._state.first_seen), netns_files=dict(self._state.netns_files)
        )
        threading.Thread(
            target=self._read_all, args=(source, reason, known), name="resync", daemon=True
        ).start()

    def _read_all(self, source: str, reason: str, known: HostState) -> None:
        started, state = time.monotonic(), None
        try:
            with Netlink() as netlink:
                state = StateReader(netlink, self.docker, self.procfs).full(known)
        except Exception:  # the state stays as it was; the next resync tries again
            log.exception("resync_failed", source=source, reason=reason)
        self._queue.put(("resynced", source, reason, state, started))

    def _install(
        self, source: str, reason: str, state: HostState | None, started: float
    ) -> None:
        """Make a full read the state, with the changes applied since it began applied again, and
        publish it."""
        replay, self._replay = self._replay or [], None
        if state is not None:
            if not state.docker_up:
                self._keep_live_containers(state, self._state)
            self._state = state
            self._apply(replay, replaying=True)
            self._publish()
            _settle_heap()
            self.resyncs[(source, reason)] += 1
            log.info(
                "resync",
                source=source,
                reason=reason,
                containers=len(state.containers),
                links=len(state.links),
                docker_up=state.docker_up,
                replayed=len(replay),
                seconds=round(time.monotonic() - started, 3),
            )
        if self._resync_wanted is not None:
            wanted, self._resync_wanted = self._resync_wanted, None
            self._resync(*wanted)

    def _keep_live_containers(self, state: HostState, previous: HostState) -> None:
        """With Docker unreachable, keep the containers whose process still holds the same namespace."""
        for c in previous.containers.values():
            if (
                c.pid
                and c.netns_inode is not None
                and self.procfs.netns_inode(c.pid) == c.netns_inode
            ):
                self._reader.add_container(state, c)

    def _publish(self) -> None:
        snap = topology.build(self._state, self.snapshot)
        snap.suspect_since = orphans.track(
            snap.suspects, self.snapshot.suspect_since, time.monotonic()
        )
        self.snapshot = snap
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
