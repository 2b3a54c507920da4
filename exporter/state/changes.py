"""What the watching threads tell the daemon's state loop: one type per kind of
item on its queue."""

from __future__ import annotations

from dataclasses import dataclass

from exporter.core.model import HostState, Link
from exporter.sources.runtimes.workloads import WorkloadEvent


@dataclass(frozen=True)
class LinkChanged:
    action: str  # add | delete | port (a bridge port's STP state)
    link: Link


@dataclass(frozen=True)
class RuntimeEvent:
    runtime: str
    event: WorkloadEvent


@dataclass(frozen=True)
class ProcessExited:
    workload_id: str
    pid: int


@dataclass(frozen=True)
class RuntimeUp:
    runtime: str
    up: bool


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


Change = LinkChanged | RuntimeEvent | ProcessExited | RuntimeUp | ResyncWanted | Resynced | Stop
# What a resync's result gets applied again: the changes made while it read.
REPLAYED = (LinkChanged, RuntimeEvent, ProcessExited, RuntimeUp)
