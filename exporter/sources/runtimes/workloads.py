"""The workload-source interface: what the state needs from a container runtime.

A runtime (Docker today; containerd's CRI and Podman next) says which
workloads run, the identity of each one's network namespace (a pid, or a
netns path), its networks and their bridges, and its lifecycle events. The
kernel side (links, namespace ids, process exits) is shared by all of them and
lives in the state, never in a source.

Every call may raise ``SourceUnavailable``: the runtime is not reachable right
now (socket missing, refused, timed out, restarting). Anything else is a bug.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from enum import Enum
from typing import Protocol

from exporter.core.model import Container, Network


class SourceUnavailable(OSError):
    """The runtime did not answer; the message says where and why, in one line."""


class Effect(Enum):
    """What a lifecycle event means for the state."""

    CHANGED = "changed"  # look the workload up again: it started, was renamed, ...
    CHANGED_IF_KNOWN = "changed_if_known"  # the same, only for a workload already running
    GONE = "gone"  # it no longer runs
    NETWORKS = "networks"  # the runtime's networks changed: read them again
    NOTHING = "nothing"  # counted, changes nothing


@dataclass(frozen=True)
class WorkloadEvent:
    action: str  # as the runtime names it; counted in dockernet_events_total{source,action}
    effect: Effect
    workload_id: str = ""
    time: float = 0.0  # the runtime's timestamp, where it gives one: where to resume after a gap


class WorkloadSource(Protocol):
    runtime: str  # the `source` label of its events and the name in its logs
    address: str  # where it is reached, for logs and errors
    timeout: float  # bound on each call
    event_actions: tuple[str, ...]  # every action `events` may report

    def workloads(self) -> list[Container]:
        """The running workloads, each with its namespace identity."""
        ...

    def workload(self, workload_id: str) -> Container | None:
        """One workload if it is running, else None."""
        ...

    def networks(self) -> list[Network]: ...

    def events(self, since: float | None = None) -> Iterator[WorkloadEvent]:
        """Lifecycle events from `since` (None: from now) until the runtime ends the stream."""
        ...

    def close_events(self) -> None:
        """End a blocked `events` iteration from another thread."""
        ...

    def ping(self) -> bool:
        """Whether the runtime answers a trivial request within its own short bound."""
        ...

    def close(self) -> None:
        """Drop connections; the next call reconnects."""
        ...
