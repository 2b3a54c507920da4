"""What the watching threads tell the daemon's state loop: one type per kind of
item on its queue."""

from __future__ import annotations

from dataclasses import dataclass

from exporter.core.model import HostState, Link, Network, Workload
from exporter.sources.runtimes.workloads import WorkloadEvent


@dataclass(frozen=True)
class LinkChanged:
    action: str  # add | delete | port (a bridge port's STP state)
    link: Link


@dataclass(frozen=True)
class RuntimeEvent:
    """A lifecycle event with what its runtime answered when asked about it (sources/follow.py's
    look-up worker makes the calls, off the state loop)."""

    runtime: str
    event: WorkloadEvent
    workload: Workload | None = None  # the workload as looked up; None: it does not run
    networks: tuple[Network, ...] | None = None  # the runtime's networks, where read again


@dataclass(frozen=True)
class RuntimeListed:
    """One runtime's full listing, or why it failed (then `error` says what, in one line)."""

    runtime: str
    reason: str  # start | periodic | reconnect | overflow
    networks: tuple[Network, ...] = ()
    workloads: tuple[Workload, ...] = ()
    followed: bool = False  # its events were followed when the listing ended: it is up
    error: str = ""


@dataclass(frozen=True)
class ProcessExited:
    workload_id: str
    pid: int


@dataclass(frozen=True)
class RuntimeDown:
    """A runtime's stream, ping or look-up failed (`error` says what, in one line). It is up again
    only after a listing made while its events are followed (RuntimeListed)."""

    runtime: str
    error: str


@dataclass(frozen=True)
class ResyncWanted:
    source: str  # all | netlink | a runtime
    reason: str  # start | periodic | reconnect | overflow


@dataclass(frozen=True)
class Resynced:
    """A full read finished (state None: it failed)."""

    wanted: ResyncWanted
    state: HostState | None
    started: float


@dataclass(frozen=True)
class Stop:
    pass


Change = (
    LinkChanged
    | RuntimeEvent
    | RuntimeListed
    | ProcessExited
    | RuntimeDown
    | ResyncWanted
    | Resynced
    | Stop
)
# What a resync's result gets applied again: the changes made while it read.
REPLAYED = (LinkChanged, RuntimeEvent, RuntimeListed, ProcessExited, RuntimeDown)
