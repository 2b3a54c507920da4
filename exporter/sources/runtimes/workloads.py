"""The workload-source interface: what the state needs from a container runtime.

A runtime (Docker today; containerd's CRI and Podman next) says which
workloads run, the identity of each one's network namespace (a pid, or a
netns path), its networks and their bridges, and its lifecycle events. The
kernel side (links, namespace ids, process exits) is shared by all of them and
lives in the state, never in a source.

Every call may raise ``SourceUnavailable``: the runtime is not reachable right
now (socket missing, refused, timed out, restarting), or ``MALFORMED`` errors:
it answered something that cannot be read. Either is that runtime's failure
alone (the daemon's workers catch every error of a source's calls, see
sources/follow.py); an object that a runtime reports badly among good ones is
left out of a listing alone, and logged once (``Unreadable``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import Enum
from typing import Protocol, TypeVar

from exporter import logs
from exporter.core.model import Network, Workload

log = logs.get_logger()
T = TypeVar("T")


class SourceUnavailable(OSError):
    """The runtime did not answer; the message says where and why, in one line."""


# What an answer that cannot be read raises (json's and protobuf's errors included, see cri_api):
# an expected failure of a runtime, logged in one line without a traceback.
MALFORMED: tuple[type[Exception], ...] = (
    ValueError,  # UnicodeDecodeError, json.JSONDecodeError, cri_api's undecodable message
    KeyError,
    TypeError,
    AttributeError,
    IndexError,
)
EXPECTED: tuple[type[Exception], ...] = (SourceUnavailable, *MALFORMED)


def describe(exc: BaseException) -> str:
    """One line saying what failed: a SourceUnavailable's own message, else the error's kind and
    text."""
    if isinstance(exc, SourceUnavailable):
        return str(exc)
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


class Unreadable:
    """The objects one runtime reports badly (a pod whose status it refuses or that cannot be
    decoded, a container whose inspect cannot be read): each is left out, and logged once while it
    stays so."""

    def __init__(self, event: str, key: str) -> None:
        self.event, self.key = event, key  # the log line's name and its object's id field
        self._ids: set[str] = set()

    def left_out(self, object_id: str, error: str) -> None:
        if object_id not in self._ids:
            self._ids.add(object_id)
            log.warning(self.event, **{self.key: object_id}, error=error)

    def read(self, object_id: str) -> None:
        self._ids.discard(object_id)

    def attempt(self, object_id: str, read: Callable[[], T]) -> T | None:
        """read(), or None (the object left out) when what the runtime said cannot be read."""
        try:
            found = read()
        except MALFORMED as exc:
            self.left_out(object_id, describe(exc))
            return None
        self.read(object_id)
        return found

    def keep(self, listed: set[str]) -> None:
        """Forget the objects no longer listed (logged again if they come back unreadable)."""
        self._ids &= listed

    def __contains__(self, object_id: str) -> bool:
        return object_id in self._ids


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
    # What the rest of the exporter knows of a runtime, it learns here: adding one touches
    # sources/ and its flags only.
    runtime: str  # its name as it reports itself: `runtime` labels, events' `source`, logs
    address: str  # where it is reached, for logs and errors
    timeout: float  # bound on each call
    event_actions: tuple[str, ...]  # every action `events` may report
    has_pods: bool  # its workloads are Kubernetes pods (the pods collector's families)
    events_mode: str  # how its events are followed where that can be done more than one way
    netns_dir: str  # where it keeps namespace files of its own ("": none, or `ip netns`'s)

    def workloads(self) -> list[Workload]:
        """The running workloads, each with its namespace identity."""
        ...

    def workload(self, workload_id: str) -> Workload | None:
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
