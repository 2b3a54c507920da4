"""Docker's and Podman's intent (published ports, masquerading bridge subnets) joined with the
rules that exist, and the choice of the backend that holds Docker's rules.

Docker's iptables rules carry no comments, so a rule is attributed to a port
binding by what it does (protocol, host port, host address, the container
address and port it translates to), never by its position in a chain. Podman's
(netavark's) rules are attributed the same way; its masquerade of a subnet is
the rule that excludes multicast, where Docker's excludes the bridge.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

from exporter.core.model import Network, PortBinding, Workload
from exporter.sources.firewall.rules import (
    DNAT,
    IPV4,
    IPV6,
    MASQUERADE,
    NFT_DOCKER_TABLE,
    NatRule,
    Ruleset,
)

# Chains counted in dockernet_netfilter_rules: Docker's own and the built-in chains it hooks
# into, of the tables it uses (a host may hold thousands of others).
COUNTED_TABLES = ("nat", "filter", "raw")
BUILTIN_CHAINS = ("PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING")
ANY_ADDRESS = ("", "0.0.0.0/0", "::/0")
MULTICAST = {IPV4: "224.0.0.0/4", IPV6: "ff00::/8"}


@dataclass(frozen=True)
class PortStatus:
    container: Workload
    binding: PortBinding
    expected: bool  # Docker backs this binding with a DNAT rule on this host
    present: bool
    connections: int


@dataclass(frozen=True)
class MasqueradeStatus:
    network: Network
    bridge: str
    subnet: str
    expected: bool
    present: bool
    connections: int


def choose(
    rulesets: Iterable[Ruleset],
    containers: Iterable[Workload] = (),
    networks: Iterable[Network] = (),
) -> Ruleset:
    """The ruleset that holds Docker's rules, when more than one backend has rules.

    The one whose rules serve most of Docker's current intent wins (stale rules left
    in a backend Docker no longer uses match no current container address), then
    the one holding Docker's NAT chain and more NAT rules (as kube-proxy's
    iptables-wrapper picks the busier backend); a tie goes to the first given,
    the system's default.
    """
    candidates = list(rulesets)
    if not candidates:
        raise ValueError("no ruleset to choose from")
    containers, networks = list(containers), list(networks)

    def score(item: tuple[int, Ruleset]) -> tuple[int, bool, int, int]:
        position, r = item
        served = sum(s.present for s in port_statuses(containers, r)) + sum(
            s.present for s in masquerade_statuses(networks, r)
        )
        return served, bool(r.docker_families), len(r.rules), -position

    return max(enumerate(candidates), key=score)[1]


def wanted_families(containers: Iterable[Workload], networks: Iterable[Network]) -> frozenset[str]:
    """IPv4, and IPv6 when a Docker network has an IPv6 subnet or a container an IPv6 address: without
    either no binding nor subnet can need an IPv6 rule, and the IPv6 rules need not be read."""
    ipv6 = any(":" in subnet for n in networks for subnet, _ in n.subnets) or any(
        ep.ipv6 for c in containers for ep in c.endpoints
    )
    return frozenset((IPV4, IPV6) if ipv6 else (IPV4,))


def port_statuses(containers: Iterable[Workload], ruleset: Ruleset) -> list[PortStatus]:
    """One status per port binding Docker reports.

    A binding is expected to have a DNAT rule when Docker manages NAT in its
    address family on this host and the container has an address in it (for
    an IPv6 binding of an IPv4-only container Docker relies on docker-proxy).
    """
    index = _dnat_index(ruleset.rules)
    out = []
    for c in containers:
        for b in c.ports:
            family = IPV6 if ":" in b.host_ip else IPV4
            addrs = {ep.ipv6 if family == IPV6 else ep.ipv4 for ep in c.endpoints} - {""}
            expected = family in _chain_families(ruleset, c.nat_chains) and bool(addrs)
            matches = (
                [
                    r
                    for r in index.get((family, b.protocol, b.host_port), ())
                    if _dnat_matches(r, b, addrs)
                ]
                if expected
                else []
            )
            out.append(PortStatus(c, b, expected, bool(matches), sum(r.packets for r in matches)))
    return out


def _chain_families(ruleset: Ruleset, nat_chains: str) -> set[str]:
    """The families in which these NAT chains (a runtime's: docker or netavark) are found."""
    return ruleset.netavark_families if nat_chains == "netavark" else ruleset.docker_families


def _dnat_index(rules: list[NatRule]) -> dict[tuple[str, str, int], list[NatRule]]:
    index: dict[tuple[str, str, int], list[NatRule]] = {}
    for r in rules:
        if r.action == DNAT and r.protocol and r.dports[0]:
            for port in range(r.dports[0], r.dports[1] + 1):
                index.setdefault((r.family, r.protocol, port), []).append(r)
    return index


def _dnat_matches(rule: NatRule, b: PortBinding, addrs: set[str]) -> bool:
    if rule.to_addr not in addrs or rule.dst_negated:
        return False
    if rule.to_ports[0] and rule.to_ports[0] + (b.host_port - rule.dports[0]) != b.container_port:
        return False
    return _same_host_address(rule.dst, b.host_ip)


def _same_host_address(rule_dst: str, host_ip: str) -> bool:
    if host_ip in ("", "0.0.0.0", "::"):
        return rule_dst in ANY_ADDRESS
    return rule_dst.split("/")[0] == host_ip and rule_dst.partition("/")[2] in ("", "32", "128")


def masquerade_statuses(networks: Iterable[Network], ruleset: Ruleset) -> list[MasqueradeStatus]:
    """One status per subnet of each bridge network that should masquerade (enabled, not internal)."""
    masq = [r for r in ruleset.rules if r.action == MASQUERADE and r.src and not r.protocol]
    out = []
    for n in sorted(networks, key=lambda n: n.bridge):
        if n.driver != "bridge" or not n.bridge or n.internal or not n.masquerade:
            continue
        for subnet, _gateway in n.subnets:
            family = IPV6 if ":" in subnet else IPV4
            matches = [
                r
                for r in masq
                if r.family == family and _masquerades(r, n) and _same_network(r.src, subnet)
            ]
            out.append(
                MasqueradeStatus(
                    n,
                    n.bridge,
                    subnet,
                    family in _chain_families(ruleset, n.nat_chains),
                    bool(matches),
                    sum(r.packets for r in matches),
                )
            )
    return out


def _masquerades(rule: NatRule, network: Network) -> bool:
    """Whether the rule has the shape of the network's runtime's masquerade of its subnet."""
    if network.nat_chains == "netavark":
        return rule.dst_negated and rule.dst == MULTICAST[rule.family] and not rule.out_iface
    return not rule.dst and rule.out_iface == network.bridge and rule.out_negated


def _same_network(a: str, b: str) -> bool:
    try:
        return ipaddress.ip_network(a, strict=False) == ipaddress.ip_network(b, strict=False)
    except ValueError:
        return False


def chain_counts(ruleset: Ruleset) -> dict[tuple[str, str], int]:
    """Rule counts of the chains worth a series: Docker's, and the built-in chains of its tables."""
    return {
        (table, chain): n
        for (table, chain), n in sorted(ruleset.chains.items())
        if table.endswith(NFT_DOCKER_TABLE)
        or (
            table.split(" ")[-1] in COUNTED_TABLES
            and (chain.startswith("DOCKER") or chain in BUILTIN_CHAINS)
        )
    }
