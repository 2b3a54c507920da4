"""How the CRI source learns of pods' lifecycle, on any CRI runtime: the pure part.

Three ways, in the order ``auto`` tries them:

- ``containerd``: containerd's events service (only where the runtime says it is containerd);
- ``cri``: the CRI's own stream, ``RuntimeService/GetContainerEvents`` (CRI 1.26+: containerd
  1.7+, CRI-O);
- ``poll``: ``ListPodSandbox`` and ``ListContainers`` every interval, diffed with the previous
  answer: a sandbox that appeared or whose state or running containers changed is looked up
  again, one that is no longer listed is gone.

Each gives the same WorkloadEvents, which the daemon follows as it does Docker's.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from exporter.sources.runtimes.cri_api import CriContainer, CriEvent, Sandbox
from exporter.sources.runtimes.proto import cri_pb2
from exporter.sources.runtimes.workloads import Effect, WorkloadEvent

AUTO, CONTAINERD, CRI, POLL = "auto", "containerd", "cri", "poll"
MODES = (AUTO, CONTAINERD, CRI, POLL)

CONTAINERD_EFFECTS = {
    # A sandbox's task starts once CNI has made its veth; a container's, in a running pod.
    "/tasks/start": Effect.CHANGED,
    # A sandbox whose process exits is kept (not ready) while its namespace lives; a container
    # that exits leaves its pod.
    "/tasks/exit": Effect.CHANGED,
    "/containers/delete": Effect.GONE,
}
CRI_KINDS = tuple(cri_pb2.ContainerEventType.keys())  # CONTAINER_CREATED_EVENT, ...
POLL_CHANGED, POLL_GONE = "poll_changed", "poll_gone"
ACTIONS = {
    CONTAINERD: tuple(CONTAINERD_EFFECTS),
    CRI: CRI_KINDS,
    POLL: (POLL_CHANGED, POLL_GONE),
}


def candidates(wanted: str, runtime_name: str) -> tuple[str, ...]:
    """The modes to try, in order, ending with polling, which every CRI runtime allows: auto tries
    containerd's service where the runtime is containerd, then the CRI's stream; a mode asked for
    is tried alone before it."""
    if wanted == POLL:
        return (POLL,)
    if wanted != AUTO:
        return (wanted, POLL)
    return (CONTAINERD, CRI, POLL) if runtime_name == "containerd" else (CRI, POLL)


def actions(wanted: str) -> tuple[str, ...]:
    """Every action that the modes `wanted` may end in report."""
    return tuple(a for mode in candidates(wanted, "containerd") for a in ACTIONS[mode])


def from_cri_event(event: CriEvent) -> WorkloadEvent:
    """A CRI event concerns its pod: the sandbox is looked up again (a stopped one is dropped
    then); a deleted sandbox (its own id as the container's) is gone. An event without a sandbox
    status names the container, which the lookup resolves to its pod."""
    sandbox = event.sandbox_id or event.container_id
    if event.kind == "CONTAINER_DELETED_EVENT" and event.container_id == sandbox:
        return WorkloadEvent(event.kind, Effect.GONE, sandbox, event.time)
    return WorkloadEvent(event.kind, Effect.CHANGED, sandbox, event.time)


# One poll's answer: sandbox id -> (ready, ids of its running containers).
Listing = Mapping[str, tuple[bool, frozenset[str]]]


def listing(sandboxes: Iterable[Sandbox], containers: Iterable[CriContainer]) -> Listing:
    running: dict[str, set[str]] = {}
    for c in containers:
        if c.running:
            running.setdefault(c.sandbox_id, set()).add(c.id)
    return {s.id: (s.ready, frozenset(running.get(s.id, ()))) for s in sandboxes}


def diff(before: Listing, after: Listing, now: float) -> list[WorkloadEvent]:
    """The events that turn `before` into `after`: sandboxes gone first, then those new or changed,
    each in id order."""
    gone = [WorkloadEvent(POLL_GONE, Effect.GONE, i, now) for i in sorted(before) if i not in after]
    changed = [
        WorkloadEvent(POLL_CHANGED, Effect.CHANGED, i, now)
        for i in sorted(after)
        if before.get(i) != after[i]
    ]
    return gone + changed
