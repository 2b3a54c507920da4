"""Published ports and masquerading, checked against the firewall rules that exist."""
from __future__ import annotations

import threading
import time
from typing import Optional

from .. import nat
from ..exposition import Family, labels
from ..sources.netfilter import Netfilter
from ..topology import Snapshot

CONNECTIONS_HELP = (
    "Packets counted by the DNAT rule of this binding. Only a connection's first packet passes the nat table, "
    "so this counts connections that were translated by the rule: from other hosts, and from this host to one "
    "of its own non-loopback addresses. It does not count connections to 127.0.0.1 nor connections from "
    "containers on a Docker bridge, which docker-proxy serves.")
MASQUERADE_HELP = (
    "Packets counted by the MASQUERADE rule of this bridge subnet: connections leaving the subnet through "
    "another interface (only a connection's first packet passes the nat table).")


class NatCollector:
    name = "nat"
    help = "published ports and masquerading checked against the iptables/nftables rules Docker needs"
    default = True

    def __init__(self, netfilter: Optional[Netfilter] = None, nat_cache: float = 0.0, nat_timeout: float = 5.0,
                 **_options) -> None:
        self.netfilter = netfilter or Netfilter(nat_timeout)
        self.cache_seconds = nat_cache
        self._lock = threading.Lock()
        self._cached: Optional[tuple[float, list[nat.Ruleset]]] = None
        self._unparsed_total = 0

    def collect(self, snap: Snapshot) -> list:
        rulesets, unparsed_total = self._read()
        containers = [v.container for v in snap.containers]
        ruleset = nat.choose(rulesets, containers, snap.networks.values())
        ports = nat.port_statuses(containers, ruleset)
        masquerade = nat.masquerade_statuses(snap.networks.values(), ruleset)
        return (self._port_families(ports) + self._masquerade_families(masquerade)
                + self._ruleset_families(ruleset, unparsed_total))

    def _read(self) -> tuple[list[nat.Ruleset], int]:
        with self._lock:
            now = time.monotonic()
            if self._cached is None or now - self._cached[0] >= self.cache_seconds:
                rulesets = self.netfilter.read()
                self._unparsed_total += sum(r.unparsed for r in rulesets)
                self._cached = (now, rulesets)
            return self._cached[1], self._unparsed_total

    @staticmethod
    def _port_families(ports: list[nat.PortStatus]) -> list[Family]:
        info = Family("dockernet_published_port_info", "gauge",
                      "Each port binding Docker reports for a running container; value is always 1.")
        present = Family("dockernet_published_port_rule_present", "gauge",
                         "Whether the DNAT rule that makes this binding work exists (1) or not (0); only for "
                         "bindings Docker backs with a DNAT rule here (not IPv6 bindings served by docker-proxy).")
        connections = Family("dockernet_published_port_connections_total", "counter", CONNECTIONS_HELP)
        for p in ports:
            b, c = p.binding, p.container
            label_set = labels(container_id=c.id, container_name=c.name, protocol=b.protocol, host_ip=b.host_ip,
                               host_port=b.host_port, container_port=b.container_port)
            info.add(label_set, 1)
            if p.expected:
                present.add(label_set, int(p.present))
                connections.add(label_set, p.connections)
        return [info, present, connections]

    @staticmethod
    def _masquerade_families(statuses: list[nat.MasqueradeStatus]) -> list[Family]:
        present = Family("dockernet_masquerade_rule_present", "gauge",
                         "Whether the MASQUERADE rule of each subnet of a Docker bridge network that should "
                         "masquerade (masquerade enabled, not internal) exists (1) or not (0).")
        connections = Family("dockernet_masquerade_connections_total", "counter", MASQUERADE_HELP)
        for m in statuses:
            if m.expected:
                label_set = labels(bridge=m.bridge, subnet=m.subnet)
                present.add(label_set, int(m.present))
                connections.add(label_set, m.connections)
        return [present, connections]

    @staticmethod
    def _ruleset_families(ruleset: nat.Ruleset, unparsed_total: int) -> list[Family]:
        info = Family("dockernet_netfilter_info", "gauge",
                      "The firewall backend holding Docker's rules: iptables-nft, iptables-legacy or nftables; "
                      "value is always 1.").add(labels(backend=ruleset.backend), 1)
        rules = Family("dockernet_netfilter_rules", "gauge",
                       "Rules per chain, in Docker's chains and the built-in chains of the tables it uses.")
        for (table, chain), n in nat.chain_counts(ruleset).items():
            rules.add(labels(backend=ruleset.backend, table=table, chain=chain), n)
        unparsed = Family("dockernet_netfilter_unparsed_rules_total", "counter",
                          "Rules that could not be read, summed over every read of the rules (they are skipped)."
                          ).add("", unparsed_total)
        return [info, rules, unparsed]
