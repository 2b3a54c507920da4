"""Published ports and masquerading, checked against the firewall rules that exist, and the
packets Docker's own drop rules dropped (from the same read of the rules)."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from exporter.app.flags import duration
from exporter.core.model import Container, Network
from exporter.metrics.collectors.base import Collector, Context, Option
from exporter.metrics.exposition import Family, labels
from exporter.sources.firewall.attribution import (
    MasqueradeStatus,
    PortStatus,
    chain_counts,
    choose,
    masquerade_statuses,
    port_statuses,
    wanted_families,
)
from exporter.sources.firewall.rules import NetfilterUnavailable, Ruleset

if TYPE_CHECKING:
    from exporter.core.topology import Snapshot
    from exporter.sources.firewall.netfilter import Netfilter

CONNECTIONS_HELP = (
    "Packets counted by the DNAT rule of this binding. Only a connection's first packet passes the "
    "nat table, so this counts connections that were translated by the rule: from other hosts, and "
    "from this host to one of its own non-loopback addresses. It does not count connections to "
    "127.0.0.1 nor connections from containers on a Docker bridge, which docker-proxy serves."
)
MASQUERADE_HELP = (
    "Packets counted by the MASQUERADE rule of this bridge subnet: connections leaving the subnet through "
    "another interface (only a connection's first packet passes the nat table)."
)
DROPPED_HELP = (
    "Packets dropped by Docker's own firewall rules, by the bridge they protect and why: isolation "
    "(traffic between two Docker networks), unpublished_port (from outside the bridge to a port "
    "not published), direct_access (to a container address from outside its bridge); only the "
    "reasons the firewall backend has. From the rules' own counters."
)

# How long the backend found to hold Docker's rules is read alone before every backend is read again.
REDETECT_SECONDS = 60.0
# How long past its own deadline a scrape waits for the read it shares: time for that read, which
# started first and ends at its deadline, to kill its commands and hand over its error.
SHARED_READ_GRACE = 0.25


@dataclass(frozen=True)
class Detection:
    """The backend chosen by the last read of every backend, and what it was chosen for."""

    at: float
    intent: tuple[object, ...]  # containers with ports, networks, families: a change means read all
    backend: str
    docker_families: frozenset[str]


class SharedRead:
    """One read of the rules in flight, shared by every scrape that arrives while it runs."""

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
            raise NetfilterUnavailable(str(self._error))  # one of its own per scrape
        if self._error is not None:
            raise RuntimeError(f"the shared firewall read failed: {self._error!r}") from self._error
        assert self._result is not None
        return self._result


class NatCollector(Collector):
    name = "nat"
    help = (
        "published ports and masquerading checked against the iptables/nftables rules Docker needs"
    )
    concurrent = True  # mostly waits for iptables-save or nft
    options = (
        Option(
            "cache",
            duration,
            "0s",
            "reuse the firewall rules read for this long (0s: read them on every scrape)",
        ),
        Option(
            "timeout", duration, "5s", "timeout of the iptables-save / nft commands of one read"
        ),
    )

    def __init__(
        self,
        context: Context | None = None,
        *,
        cache: float = 0.0,
        timeout: float = 5.0,
        netfilter: Netfilter | None = None,
    ) -> None:
        if netfilter is None:
            # Here, not at the top: building the flags (`--help`, every command) needs the class
            # alone, and the commands that read no rules never pay for the reader.
            from exporter.sources.firewall.netfilter import Netfilter

            netfilter = Netfilter(timeout)
        self.netfilter = netfilter
        self.cache_seconds = cache
        self.redetect_seconds = REDETECT_SECONDS
        self._lock = threading.Lock()  # only to look at or swap the cache and the read in flight
        self._cached: tuple[float, Ruleset] | None = None
        self._in_flight: SharedRead | None = None
        self._detection: Detection | None = None  # changed by the read in flight alone
        self._unparsed_total = 0

    def collect(self, snap: Snapshot) -> list[Family]:
        containers, networks = [v.container for v in snap.containers], list(snap.networks.values())
        ruleset, unparsed_total = self._read(containers, networks)
        ports = port_statuses(containers, ruleset)
        masquerade = masquerade_statuses(networks, ruleset)
        return (
            self._port_families(ports)
            + self._masquerade_families(masquerade)
            + self._ruleset_families(ruleset, unparsed_total)
            + [self._drop_family(ruleset, networks)]
        )

    def rules(self, snap: Snapshot, max_age: float) -> Ruleset:
        """The rules as the last read found them when it is at most ``max_age`` old (whatever
        --collector.nat.cache says), else read now as a scrape reads them (raises
        NetfilterUnavailable likewise). For readers beside the scrapes: the topology page."""
        containers, networks = [v.container for v in snap.containers], list(snap.networks.values())
        return self._read(containers, networks, max(max_age, self.cache_seconds))[0]

    def _read(
        self, containers: list[Container], networks: list[Network], max_age: float | None = None
    ) -> tuple[Ruleset, int]:
        """The rules for this scrape: the cached ones while fresh; else those of the read in
        flight, waited for no longer than this scrape's own timeout (and a grace); else those of
        a new read, which this scrape runs and the scrapes arriving meanwhile share."""
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
        except BaseException as exc:  # whatever ends the read, the scrapes sharing it must learn
            with self._lock:
                self._in_flight = None
            shared.finish(error=exc)
            raise
        result = (ruleset, self._unparsed_total)
        with self._lock:
            self._in_flight, self._cached = None, (now, ruleset)
        shared.finish(result)
        return result

    def _fresh(self, now: float, containers: list[Container], networks: list[Network]) -> Ruleset:
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

    @staticmethod
    def _port_families(ports: list[PortStatus]) -> list[Family]:
        info = Family(
            "dockernet_published_port_info",
            "gauge",
            "Each port binding the runtime (Docker or Podman) reports for a running container; value is "
            "always 1.",
        )
        present = Family(
            "dockernet_published_port_rule_present",
            "gauge",
            "Whether the DNAT rule that makes this binding work exists (1) or not (0), in Docker's or "
            "netavark's chains; only for bindings backed by a DNAT rule here (not IPv6 bindings "
            "served by docker-proxy).",
        )
        connections = Family(
            "dockernet_published_port_connections_total", "counter", CONNECTIONS_HELP
        )
        for p in ports:
            b, c = p.binding, p.container
            label_set = labels(
                container_id=c.id,
                container_name=c.name,
                protocol=b.protocol,
                host_ip=b.host_ip,
                host_port=b.host_port,
                container_port=b.container_port,
            )
            info.add(label_set, 1)
            if p.expected:
                present.add(label_set, int(p.present))
                connections.add(label_set, p.connections)
        return [info, present, connections]

    @staticmethod
    def _masquerade_families(statuses: list[MasqueradeStatus]) -> list[Family]:
        present = Family(
            "dockernet_masquerade_rule_present",
            "gauge",
            "Whether the MASQUERADE rule of each subnet of a Docker or Podman bridge network that "
            "should masquerade (masquerade enabled, not internal) exists (1) or not (0).",
        )
        connections = Family("dockernet_masquerade_connections_total", "counter", MASQUERADE_HELP)
        for m in statuses:
            if m.expected:
                label_set = labels(bridge=m.bridge, subnet=m.subnet)
                present.add(label_set, int(m.present))
                connections.add(label_set, m.connections)
        return [present, connections]

    @staticmethod
    def _drop_family(ruleset: Ruleset, networks: list[Network]) -> Family:
        """The packets of each bridge's drop rules by reason, the IPv4 and IPv6 rules summed."""
        by_bridge = {n.bridge: n.name for n in networks if n.bridge}
        dropped: dict[tuple[str, str], int] = {}
        for d in ruleset.drops:
            dropped[d.bridge, d.reason] = dropped.get((d.bridge, d.reason), 0) + d.packets
        family = Family("dockernet_firewall_dropped_packets_total", "counter", DROPPED_HELP)
        for (bridge, reason), packets in sorted(dropped.items()):
            family.add(
                labels(network=by_bridge.get(bridge, ""), bridge=bridge, reason=reason), packets
            )
        return family

    @staticmethod
    def _ruleset_families(ruleset: Ruleset, unparsed_total: int) -> list[Family]:
        info = Family(
            "dockernet_netfilter_info",
            "gauge",
            "The firewall backend holding Docker's rules: iptables-nft, iptables-legacy or nftables; "
            "value is always 1.",
        ).add(labels(backend=ruleset.backend), 1)
        rules = Family(
            "dockernet_netfilter_rules",
            "gauge",
            "Rules per chain, in Docker's chains and the built-in chains of the tables it uses.",
        )
        for (table, chain), n in chain_counts(ruleset).items():
            rules.add(labels(backend=ruleset.backend, table=table, chain=chain), n)
        unparsed = Family(
            "dockernet_netfilter_unparsed_rules_total",
            "counter",
            "Rules that could not be read, summed over every read of the rules (they are skipped).",
        ).add("", unparsed_total)
        return [info, rules, unparsed]
