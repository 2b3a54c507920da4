"""Published ports and masquerading, checked against the firewall rules that exist."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from .. import nat
from ..exposition import Family, labels
from ..sources.netfilter import Netfilter, NetfilterUnavailable
from ..topology import Snapshot

CONNECTIONS_HELP = (
    "Packets counted by the DNAT rule of this binding. Only a connection's first packet passes the nat table, "
    "so this counts connections that were translated by the rule: from other hosts, and from this host to one "
    "of its own non-loopback addresses. It does not count connections to 127.0.0.1 nor connections from "
    "containers on a Docker bridge, which docker-proxy serves."
)
MASQUERADE_HELP = (
    "Packets counted by the MASQUERADE rule of this bridge subnet: connections leaving the subnet through "
    "another interface (only a connection's first packet passes the nat table)."
)

# How long the backend found to hold Docker's rules is read alone before every backend is read again.
REDETECT_SECONDS = 60.0


@dataclass(frozen=True)
class Detection:
    """The backend chosen by the last read of every backend, and what it was chosen for."""

    at: float
    intent: tuple  # containers with ports, networks, families: a change means read every backend
    backend: str
    docker_families: frozenset[str]


class NatCollector:
    name = "nat"
    help = (
        "published ports and masquerading checked against the iptables/nftables rules Docker needs"
    )
    default = True
    concurrent = True  # mostly waits for iptables-save or nft: the scrape runs it beside the others

    def __init__(
        self,
        netfilter: Netfilter | None = None,
        nat_cache: float = 0.0,
        nat_timeout: float = 5.0,
        **_options,
    ) -> None:
        self.netfilter = netfilter or Netfilter(nat_timeout)
        self.cache_seconds = nat_cache
        self.redetect_seconds = REDETECT_SECONDS
        self._lock = threading.Lock()
        self._cached: tuple[float, nat.Ruleset] | None = None
        self._detection: Detection | None = None
        self._unparsed_total = 0

    def collect(self, snap: Snapshot) -> list:
        containers, networks = [v.container for v in snap.containers], list(snap.networks.values())
        ruleset, unparsed_total = self._read(containers, networks)
        ports = nat.port_statuses(containers, ruleset)
        masquerade = nat.masquerade_statuses(networks, ruleset)
        return (
            self._port_families(ports)
            + self._masquerade_families(masquerade)
            + self._ruleset_families(ruleset, unparsed_total)
        )

    def _read(self, containers: list, networks: list) -> tuple[nat.Ruleset, int]:
        with self._lock:
            now = time.monotonic()
            if self._cached is None or now - self._cached[0] >= self.cache_seconds:
                self._cached = (now, self._fresh(now, containers, networks))
            return self._cached[1], self._unparsed_total

    def _fresh(self, now: float, containers: list, networks: list) -> nat.Ruleset:
        """Docker's rules as they are now: from the backend chosen last time alone (one command per
        family) while that choice holds, else from every backend."""
        families = nat.wanted_families(containers, networks)
        # Only published ports and networks weigh in nat.choose: a container without ports changes nothing.
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
        ruleset = nat.choose(rulesets, containers, networks)
        self._detection = Detection(
            now, intent, ruleset.backend, frozenset(ruleset.docker_families)
        )
        return ruleset

    def _read_chosen(
        self, last: Detection, families: frozenset, deadline: float
    ) -> nat.Ruleset | None:
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
    def _port_families(ports: list[nat.PortStatus]) -> list[Family]:
        info = Family(
            "dockernet_published_port_info",
            "gauge",
            "Each port binding Docker reports for a running container; value is always 1.",
        )
        present = Family(
            "dockernet_published_port_rule_present",
            "gauge",
            "Whether the DNAT rule that makes this binding work exists (1) or not (0); only for "
            "bindings Docker backs with a DNAT rule here (not IPv6 bindings served by docker-proxy).",
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
    def _masquerade_families(statuses: list[nat.MasqueradeStatus]) -> list[Family]:
        present = Family(
            "dockernet_masquerade_rule_present",
            "gauge",
            "Whether the MASQUERADE rule of each subnet of a Docker bridge network that should "
            "masquerade (masquerade enabled, not internal) exists (1) or not (0).",
        )
        connections = Family("dockernet_masquerade_connections_total", "counter", MASQUERADE_HELP)
        for m in statuses:
            if m.expected:
                label_set = labels(bridge=m.bridge, subnet=m.subnet)
                present.add(label_set, int(m.present))
                connections.add(label_set, m.connections)
        return [present, connections]

    @staticmethod
    def _ruleset_families(ruleset: nat.Ruleset, unparsed_total: int) -> list[Family]:
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
        for (table, chain), n in nat.chain_counts(ruleset).items():
            rules.add(labels(backend=ruleset.backend, table=table, chain=chain), n)
        unparsed = Family(
            "dockernet_netfilter_unparsed_rules_total",
            "counter",
            "Rules that could not be read, summed over every read of the rules (they are skipped).",
        ).add("", unparsed_total)
        return [info, rules, unparsed]
