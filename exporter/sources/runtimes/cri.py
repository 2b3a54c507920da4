"""Kubernetes pods through the CRI (``runtime.v1.RuntimeService``, what the kubelet calls) of any
CRI runtime (containerd, CRI-O), with lifecycle events from containerd's events service, the CRI's
own event stream, or polling the CRI (see cri_events: which is used is chosen at each
subscription, and logged when it changes).

A pod is one workload: its sandbox, whose namespace is the file its verbose status names
(``/var/run/netns/cni-<uuid>``), and whose running containers are its members. A hostNetwork
pod (namespace mode NODE) has the host's namespace, hence no veth.

``parse_pod``, ``pod_members`` and ``parse_event`` are pure, as is cri_events; ``CriSource``
makes the calls.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from exporter import logs
from exporter.core.model import Endpoint, Network, PodMember, Workload
from exporter.sources.runtimes import cri_api, cri_events
from exporter.sources.runtimes.cni_cache import (
    RESULTS as CNI_RESULTS,
)
from exporter.sources.runtimes.cni_cache import (
    CniAttachment,
    attachments,
    cni_networks,
)
from exporter.sources.runtimes.cri_api import (
    CallFailed,
    CriClient,
    CriContainer,
    NotFound,
    Refused,
    Sandbox,
)
from exporter.sources.runtimes.cri_events import AUTO, CONTAINERD, CRI, POLL
from exporter.sources.runtimes.workloads import Effect, SourceUnavailable, Unreadable, WorkloadEvent

log = logs.get_logger()

DEFAULT_ENDPOINT = "/run/containerd/containerd.sock"
# CNI's cache of each attachment's result: <network>-<sandbox id>-<interface>, JSON.
CRI_NAMESPACE = "k8s.io"  # containerd's namespace of the CRI's sandboxes and containers
EFFECTS = cri_events.CONTAINERD_EFFECTS
PING_TIMEOUT = 5.0
# The runtime's own name (Version.runtime_name) where it cannot be asked yet, by its socket's path.
CONTAINERD_NAME, CRIO_NAME = "containerd", "cri-o"
NAME_TIMEOUT = 0.5  # a Version call at start may delay the exporter's start by this much at most
POLL_INTERVAL = 1.0  # seconds between two listings in poll mode
PROBE_WAIT = 0.2  # seconds an event stream may take to end at once (auto; about 1 ms here)
# How a stream that serves no events ends at once: containerd 1.6's GetContainerEvents and CRI-O's
# Subscribe are UNIMPLEMENTED; CRI-O's GetContainerEvents returns OK with enable_pod_events off.
UNSERVED = ("UNIMPLEMENTED", "OK")
STREAMS = {CONTAINERD: "containerd's events", CRI: "the CRI's events", POLL: "the CRI's listing"}
START_WAIT, START_RETRY = 0.5, 0.005  # seconds; see CriSource.workload


def pod_members(
    containers: Iterable[CriContainer], sandbox_id: str, started: str = "", exited: str = ""
) -> tuple[PodMember, ...]:
    """The running containers of a sandbox. An event says more freshly than the CRI's state that
    the container `started` runs, or that `exited` no longer does."""
    return tuple(
        PodMember(c.id, c.name, c.image)
        for c in sorted(containers, key=lambda c: (c.name, c.id))
        if c.sandbox_id == sandbox_id and c.id != exited and (c.running or c.id == started)
    )


def parse_pod(
    sandbox: Sandbox,
    members: tuple[PodMember, ...] = (),
    endpoints: tuple[Endpoint, ...] = (),
    runtime: str = CONTAINERD_NAME,
) -> Workload | None:
    """A pod from its verbose sandbox status, or None when it holds no namespace any more (a
    stopped sandbox). A sandbox whose process died is kept, not ready, while its namespace lives."""
    if not sandbox.ready and not sandbox.netns_path:
        return None
    return Workload(
        id=sandbox.id,
        name=f"{sandbox.namespace}_{sandbox.name}",
        runtime=runtime,
        pid=sandbox.pid if sandbox.ready else 0,
        netns_path=sandbox.netns_path,
        network_mode="host" if sandbox.host_network else "pod",
        pod_namespace=sandbox.namespace,
        pod_name=sandbox.name,
        pod_uid=sandbox.uid,
        ready=sandbox.ready,
        members=members if sandbox.ready else (),
        endpoints=endpoints,
    )


def parse_event(envelope: cri_api.Envelope) -> WorkloadEvent:
    effect = EFFECTS.get(envelope.topic, Effect.NOTHING)
    return WorkloadEvent(envelope.topic, effect, envelope.container_id, envelope.time)


class _Poll:
    """Poll mode's stream: the listing when made, then, every interval until cancelled, the events
    that turn the previous listing into the next."""

    def __init__(self, read: Callable[[], cri_events.Listing], interval: float) -> None:
        self._read, self.interval = read, interval
        self._cancelled = threading.Event()
        self._last = read()

    def cancel(self) -> None:
        self._cancelled.set()

    def __iter__(self) -> Iterator[WorkloadEvent]:
        while not self._cancelled.wait(self.interval):
            now, listed = time.time(), self._read()
            events, self._last = cri_events.diff(self._last, listed, now), listed
            yield from events


class CriSource:
    """A CRI runtime's pods; every call may raise SourceUnavailable."""

    has_pods = True
    netns_dir = ""  # the pods' namespaces are pinned where `ip netns` keeps them

    def __init__(
        self,
        endpoint: str = DEFAULT_ENDPOINT,
        timeout: float = 10.0,
        cni_results: str = CNI_RESULTS,
        events: str = AUTO,
        poll_interval: float = POLL_INTERVAL,
    ) -> None:
        self.address = endpoint
        self.cni_results = cni_results
        self.timeout = timeout
        self.events_wanted = events  # one of cri_events.MODES
        self.events_mode = ""  # the mode in use, once a subscription chose it
        self.poll_interval = poll_interval
        self.event_actions = cri_events.actions(events)
        self._skipped: list[str] = []  # the modes the last subscription found unserved, and how
        self._client = CriClient(endpoint, timeout)
        # What Version said at construction, for the first subscription alone ("": no answer).
        self._answered_name = ""
        self.runtime = self._name()
        self._stream: Any = None
        self._lock = threading.Lock()
        # The latest start or exit event of each container not yet looked up (see pod_members).
        self._fresh: dict[str, str] = {}
        # Sandboxes whose status the runtime refuses or that cannot be decoded, each logged once.
        self._unreadable = Unreadable("cri_sandbox_unreadable", "sandbox_id")

    def _call(self, method: str, request: bytes, timeout: float | None = None) -> bytes:
        try:
            return self._client.call(method, request, timeout)
        except CallFailed as exc:
            raise self._unreachable(exc) from None

    def _unreachable(self, exc: CallFailed) -> SourceUnavailable:
        return SourceUnavailable(f"the CRI is unreachable at {self.address} ({exc})")

    def _status(self, sandbox_id: str) -> Sandbox:
        """Raises NotFound for a sandbox the runtime does not know, and for one whose status it
        refuses: that sandbox cannot be mapped, but the runtime and its other pods still can."""
        request = cri_api.sandbox_status_request(sandbox_id)
        try:
            data = self._client.call("PodSandboxStatus", request)
        except Refused as exc:
            self._unreadable.left_out(sandbox_id, str(exc))
            raise NotFound("PodSandboxStatus") from None
        except CallFailed as exc:
            raise self._unreachable(exc) from None
        sandbox = self._unreadable.attempt(sandbox_id, lambda: cri_api.parse_sandbox_status(data))
        if sandbox is None:
            raise NotFound("PodSandboxStatus")
        return sandbox

    def _containers(self, sandbox_id: str = "", container_id: str = "") -> list[CriContainer]:
        request = cri_api.list_containers_request(sandbox_id, container_id, running=False)
        return cri_api.parse_containers(self._call("ListContainers", request), self._left_out)

    def _sandboxes(self) -> list[Sandbox]:
        return cri_api.parse_sandboxes(self._call("ListPodSandbox", b""), self._left_out)

    def _left_out(self, error: str) -> None:
        """An item of a listing that cannot be decoded (it has no id that can be read)."""
        self._unreadable.left_out("(undecodable)", error)

    def _name(self) -> str:
        """The runtime's name as it reports itself (containerd, cri-o), for its labels and logs;
        where it does not answer yet, the one its socket's conventional path implies."""
        try:
            request = cri_api.version_request()
            name, _ = cri_api.parse_runtime(self._client.call("Version", request, NAME_TIMEOUT))
        except (CallFailed, ValueError):
            name = ""
        self._answered_name = name
        return name or (CRIO_NAME if "crio" in self.address else CONTAINERD_NAME)

    def version(self) -> str:
        return cri_api.parse_version(self._call("Version", cri_api.version_request()))

    def workloads(self) -> list[Workload]:
        sandboxes = self._sandboxes()
        self._unreadable.keep({s.id for s in sandboxes} | {"(undecodable)"})
        containers = self._containers()
        out = []
        for listed in sandboxes:
            try:
                sandbox = self._status(listed.id)
            except NotFound:  # removed meanwhile
                continue
            members = pod_members(containers, sandbox.id)
            pod = parse_pod(sandbox, members, self._endpoints(sandbox.id), self.runtime)
            if pod is not None:
                out.append(pod)
        return out

    def workload(self, workload_id: str) -> Workload | None:
        """The pod of a sandbox id, or of the id of one of its containers. A sandbox's task starts
        a moment before the CRI records the sandbox: after a start event, an unknown id is asked
        again for up to START_WAIT."""
        fresh = self._fresh.pop(workload_id, "")
        started = workload_id if fresh == "/tasks/start" else ""
        exited = workload_id if fresh == "/tasks/exit" else ""
        deadline, pause = time.monotonic() + (START_WAIT if started else 0.0), START_RETRY
        while (found := self._lookup(workload_id)) is None and time.monotonic() < deadline:
            time.sleep(pause)
            pause *= 2
        if found is None:
            return None
        sandbox, sandbox_id = found, found.id
        members = pod_members(self._containers(sandbox_id=sandbox_id), sandbox_id, started, exited)
        return parse_pod(sandbox, members, self._endpoints(sandbox_id), self.runtime)

    def _lookup(self, workload_id: str) -> Sandbox | None:
        """The sandbox of that id, or of the container of that id."""
        try:
            return self._status(workload_id)
        except NotFound:
            pass
        owners = [c.sandbox_id for c in self._containers(container_id=workload_id)]
        try:
            return self._status(owners[0]) if owners else None
        except NotFound:
            return None

    def networks(self) -> list[Network]:
        return cni_networks(self._attachments(), self.runtime)

    def _attachments(self, sandbox_id: str = "") -> list[CniAttachment]:
        return attachments(self.cni_results, sandbox_id)

    def _endpoints(self, sandbox_id: str) -> tuple[Endpoint, ...]:
        return tuple(sorted((a.endpoint for a in self._attachments(sandbox_id)), key=str))

    def events(self, since: float | None = None) -> Iterator[WorkloadEvent]:
        """The pods' events from now, by the mode asked for or (auto) the first the runtime serves.
        Nothing is replayed: a gap is covered by the resync that follows a reconnect."""
        try:
            mode, stream = self._subscribe(
                cri_events.candidates(self.events_wanted, self._name_now())
            )
        except CallFailed as exc:
            raise self._unreachable(exc) from None
        self._chose(mode)
        with self._lock:
            self._stream = stream
        return self._decoded(mode, stream)

    def _name_now(self) -> str:
        """Which runtime answers at the socket now. The first subscription follows construction at
        once and takes its answer; each later one follows a stream that ended, maybe a runtime
        restarted as another (CRI-O in containerd's place): it asks again, which also fails at once
        on a dead socket, where a stream would fail only when iterated. The labels keep the name
        of construction."""
        name, self._answered_name = self._answered_name, ""
        if not name:
            name, _ = cri_api.parse_runtime(self._client.call("Version", cri_api.version_request()))
        return name

    def _chose(self, mode: str) -> None:
        """Log the mode when it changes (a warning where it is not the one asked for)."""
        if mode == self.events_mode:
            return
        self.events_mode = mode
        said = {"endpoint": self.address, "mode": mode, "asked": self.events_wanted}
        if self._skipped:
            said["unserved"] = ",".join(self._skipped)
        if mode == POLL:
            said["interval"] = f"{self.poll_interval:g}s"
        if self.events_wanted in (AUTO, mode):
            log.info("cri_events", **said)
        else:
            log.warning(
                "cri_events", **said, detail="the runtime does not serve the mode asked for"
            )

    def _subscribe(self, modes: tuple[str, ...]) -> tuple[str, Any]:
        """The first of `modes` whose stream does not end at once as one serving no events; the
        last, poll, works on every CRI runtime. Which were skipped, and how, is logged."""
        self._skipped = []
        for mode in modes[:-1]:
            stream = self._open(mode)
            code = cri_api.ended_at_once(stream, PROBE_WAIT)
            if code not in UNSERVED:
                return mode, stream
            self._skipped.append(f"{mode}:{code}")
        return modes[-1], self._open(modes[-1])

    def _open(self, mode: str) -> Any:
        if mode == CONTAINERD:
            filters = [f'topic=="{topic}",namespace=={CRI_NAMESPACE}' for topic in EFFECTS]
            return self._client.subscribe(filters)
        if mode == CRI:
            return self._client.container_events()
        return _Poll(self._listing, self.poll_interval)

    def _listing(self) -> cri_events.Listing:
        """What poll mode compares: two calls, whatever the number of pods."""
        sandboxes = self._client.call("ListPodSandbox", cri_api.list_sandboxes_request())
        running = self._client.call("ListContainers", cri_api.list_containers_request())
        return cri_events.listing(
            cri_api.parse_sandboxes(sandboxes, self._left_out),
            cri_api.parse_containers(running, self._left_out),
        )

    def _decoded(self, mode: str, stream: Any) -> Iterator[WorkloadEvent]:
        try:
            if mode == CONTAINERD:
                for envelope in self._client.envelopes(stream):
                    if envelope.topic in ("/tasks/start", "/tasks/exit"):
                        self._fresh[envelope.container_id] = envelope.topic
                    yield parse_event(envelope)
            elif mode == CRI:
                yield from map(cri_events.from_cri_event, self._client.cri_events(stream))
            else:
                yield from stream
        except CallFailed as exc:
            with self._lock:
                cancelled, self._stream = self._stream is None, None
            if cancelled:
                return
            raise SourceUnavailable(f"{STREAMS[mode]} ended at {self.address} ({exc})") from None

    def close_events(self) -> None:
        with self._lock:
            stream, self._stream = self._stream, None
        if stream is not None:
            stream.cancel()

    def ping(self) -> bool:
        try:
            self._call("Version", cri_api.version_request(), min(self.timeout, PING_TIMEOUT))
            return True
        except SourceUnavailable:
            return False

    def close(self) -> None:
        self._client.close()
