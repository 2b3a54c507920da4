"""The firewall rules that hold Docker's NAT, as every reader needs them: the NAT collector on
each scrape, the topology page, and the `nat` and `topology` commands.

One ``FirewallRules`` keeps the rules last read for ``cache`` seconds, shares one read in flight
between the callers that arrive while it runs, and reads only the backend found to hold Docker's
rules until the workloads' published ports or networks change or REDETECT_SECONDS pass (then every
backend again, and ``firewall.attribution.choose`` picks). ``sources.netfilter.Netfilter`` runs the
commands.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Collection
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from exporter.core.model import Network, Workload
from exporter.sources.firewall.attribution import choose, wanted_families
from exporter.sources.firewall.rules import NetfilterUnavailable, Ruleset

if TYPE_CHECKING:
    from exporter.core.topology import Snapshot

# How long the backend found to hold Docker's rules is read alone before every backend is read again.
REDETECT_SECONDS = 60.0
# How long past its own deadline a caller waits for the read it shares: time for that read, which
# started first and ends at its deadline, to kill its commands and hand over its error.
SHARED_READ_GRACE = 0.25


class Reader(Protocol):
    """What runs the commands: ``sources.netfilter.Netfilter``, or recorded rules in tests."""

    timeout: float

    def read(
        self, families: Collection[str] = ..., deadline: float | None = None
    ) -> list[Ruleset]: ...

    def read_backend(
        self, name: str, families: Collection[str], deadline: float | None = None
    ) -> Ruleset: ...


@dataclass(frozen=True)
class Detection:
    """The backend chosen by the last read of every backend, and what it was chosen for."""

    at: float
    intent: tuple[object, ...]  # containers with ports, networks, families: a change means read all
    backend: str
    docker_families: frozenset[str]


class SharedRead:
    """One read of the rules in flight, shared by every caller that arrives while it runs."""

    def __init__(self) -> None:
        self._done = threading.Event()
        self._result: tuple[Ruleset, int] | None = None
        self._error: BaseException | None = None

    def finish(
        self, result: tuple[Ruleset, int] | None = None, error: BaseException | None = None
    ) -> None:
        self._result, self._error = result, error
        self._done.set()

    def wait(self, deadline: float) -> tuple[Ruleset, int]:
        """Its result, or raise its error; wait at most until ``deadline``."""
        if not self._done.wait(max(0.0, deadline - time.monotonic())):
            raise NetfilterUnavailable("the firewall read in flight did not finish in time")
        if isinstance(self._error, NetfilterUnavailable):
            raise NetfilterUnavailable(str(self._error))  # one of its own per caller
        if self._error is not None:
            raise RuntimeError(f"the shared firewall read failed: {self._error!r}") from self._error
        assert self._result is not None
        return self._result


def read_once(snap: Snapshot, timeout: float = 5.0) -> Ruleset:
    """One read for a one-shot command, as a scrape reads them; raises NetfilterUnavailable."""
    from exporter.sources.firewall.netfilter import (
        Netfilter,  # here: the commands' flags need none of it
    )

    return FirewallRules(Netfilter(timeout)).rules(snap)


class FirewallRules:
    """The rules holding Docker's NAT for the workloads and networks a caller has."""

    def __init__(self, netfilter: Reader, cache: float = 0.0) -> None:
        self.netfilter = netfilter
        self.cache_seconds = cache
        self.redetect_seconds = REDETECT_SECONDS
        self._lock = threading.Lock()  # only to look at or swap the cache and the read in flight
        self._cached: tuple[float, Ruleset] | None = None
        self._in_flight: SharedRead | None = None
        self._detection: Detection | None = None  # changed by the read in flight alone
        self._unparsed_total = 0

    def rules(self, snap: Snapshot, max_age: float = 0.0) -> Ruleset:
        """The rules for the snapshot's workloads and networks: the last read's when it is at most
        ``max_age`` old (or the cache's age), else read now; raises NetfilterUnavailable."""
        containers, networks = [v.container for v in snap.containers], list(snap.networks.values())
        return self.read(containers, networks, max(max_age, self.cache_seconds))[0]

    def read(
        self, containers: list[Workload], networks: list[Network], max_age: float | None = None
    ) -> tuple[Ruleset, int]:
        """The rules, and how many rules every read so far could not parse: the cached ones while
        younger than ``max_age`` (None: the cache's age); else those of the read in flight, waited
        for no longer than this caller's own timeout (and a grace); else those of a new read, which
        this caller runs and the callers arriving meanwhile share."""
        now = time.monotonic()
        max_age = self.cache_seconds if max_age is None else max_age
        with self._lock:
            if self._cached is not None and now - self._cached[0] < max_age:
                return self._cached[1], self._unparsed_total
            shared, leads = self._in_flight, self._in_flight is None
            if shared is None:
                shared = self._in_flight = SharedRead()
        if not leads:
            return shared.wait(now + self.netfilter.timeout + SHARED_READ_GRACE)
        try:
            ruleset = self._fresh(now, containers, networks)
        except BaseException as exc:  # whatever ends the read, the callers sharing it must learn
            with self._lock:
                self._in_flight = None
            shared.finish(error=exc)
            raise
        result = (ruleset, self._unparsed_total)
        with self._lock:
            self._in_flight, self._cached = None, (now, ruleset)
        shared.finish(result)
        return result

    def _fresh(self, now: float, containers: list[Workload], networks: list[Network]) -> Ruleset:
        """Docker's rules as they are now: from the backend chosen last time alone (one command per
        family) while that choice holds, else from every backend."""
        families = wanted_families(containers, networks)
        # Only published ports and networks weigh in choose(): a container without ports changes nothing.
        intent = (tuple(c for c in containers if c.ports), tuple(networks), families)
        deadline = now + self.netfilter.timeout
        last = self._detection
        if last is not None and last.intent == intent and now - last.at < self.redetect_seconds:
            ruleset = self._read_chosen(last, families, deadline)
            if ruleset is not None:
                return ruleset
        self._detection = None
        rulesets = self.netfilter.read(families, deadline)
        self._unparsed_total += sum(r.unparsed for r in rulesets)
        ruleset = choose(rulesets, containers, networks)
        self._detection = Detection(
            now, intent, ruleset.backend, frozenset(ruleset.docker_families)
        )
        return ruleset

    def _read_chosen(
        self, last: Detection, families: frozenset[str], deadline: float
    ) -> Ruleset | None:
        """The chosen backend's rules, or None when every backend must be read: the backend fails, or
        it no longer holds Docker's chains (Docker moved, or someone flushed them)."""
        # The full read lists only the docker-bridges tables that exist; list the same ones.
        read = families & last.docker_families if last.backend == "nftables" else families
        try:
            ruleset = self.netfilter.read_backend(last.backend, read, deadline)
        except NetfilterUnavailable:
            return None
        self._unparsed_total += ruleset.unparsed
        return ruleset if ruleset.docker_families >= last.docker_families else None
