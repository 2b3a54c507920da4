"""Published ports and masquerading, checked against the firewall rules that exist, and the
packets Docker's own drop rules dropped (from the same read of the rules)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from exporter.app.flags import duration
from exporter.core.model import Network
from exporter.metrics.collectors.base import Collector, Context, Option
from exporter.metrics.exposition import Family, labels
from exporter.sources.firewall.attribution import (
    MasqueradeStatus,
    PortStatus,
    chain_counts,
    masquerade_statuses,
    port_statuses,
)
from exporter.sources.firewall.rules import Ruleset

if TYPE_CHECKING:
    from exporter.core.topology import Snapshot
    from exporter.sources.firewall.reader import Reader

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
        netfilter: Reader | None = None,
    ) -> None:
        # Here, not at the top: building the flags (`--help`, every command) needs the class
        # alone, and the commands that read no rules never pay for the reader.
        from exporter.sources.firewall.reader import FirewallRules

        if netfilter is None:
            from exporter.sources.firewall.netfilter import Netfilter

            netfilter = Netfilter(timeout)
        # The rules of each scrape; the topology page reads them through it too (service.py).
        self.firewall = FirewallRules(netfilter, cache)

    def collect(self, snap: Snapshot) -> list[Family]:
        containers, networks = [v.container for v in snap.containers], list(snap.networks.values())
        ruleset, unparsed_total = self.firewall.read(containers, networks)
        ports = port_statuses(containers, ruleset)
        masquerade = masquerade_statuses(networks, ruleset)
        return (
            self._port_families(ports)
            + self._masquerade_families(masquerade)
            + self._ruleset_families(ruleset, unparsed_total)
            + [self._drop_family(ruleset, networks)]
        )

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
