"""The collector contract.

A collector renders one part of /metrics from a topology snapshot. It declares
its name, whether it is on by default, whether it may run beside the others,
and its own options; the registry (``exporter.collectors``) turns those into
``--[no-]collector.<name>`` and ``--collector.<name>.<option>`` flags, checks
their values at start (argparse: one line, exit 2) and passes each collector
only its own options, as keyword arguments named like the options.

``collect`` may read fresh data (counters, firewall rules) but never changes
the snapshot; what it renders once per snapshot goes through ``snap.memo``.
A collector that reads in the background (the netstat collector's sampler)
does so between ``start`` and ``stop``, which the daemon's wiring calls.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from exporter.core.topology import Snapshot
    from exporter.metrics.exposition import Family
    from exporter.sources.kernel.procfs import Procfs


@dataclass(frozen=True)
class Option:
    """One ``--collector.<collector>.<name>`` flag; ``name`` is also the keyword argument."""

    name: str
    type: Callable[[str], Any]
    default: str  # as typed on the command line, parsed by `type`
    help: str
    choices: Sequence[str] | None = None


@dataclass(frozen=True)
class Context:
    """What every collector may use besides its options."""

    procfs: Procfs


class Collector(ABC):
    name: ClassVar[str]
    help: ClassVar[str]  # one line, for --help
    default: ClassVar[bool] = True
    # Mostly waits for child processes or I/O: the scrape runs it in a thread beside the others.
    concurrent: ClassVar[bool] = False
    options: ClassVar[tuple[Option, ...]] = ()

    @abstractmethod
    def collect(self, snap: Snapshot) -> list[Family]:
        """The families of this scrape; raising marks the collector failed for this scrape only."""

    def start(self, snapshot: Callable[[], Snapshot]) -> None:  # noqa: B027 (optional hook)
        """Start the collector's own background work, if it has any, once the daemon runs;
        ``snapshot()`` is the current snapshot."""

    def stop(self) -> None:  # noqa: B027 (optional hook)
        """Stop that work, within a fraction of a second: the daemon is shutting down."""
