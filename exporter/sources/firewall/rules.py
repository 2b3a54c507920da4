"""What a firewall read yields: NAT rules reduced to what attribution needs (Docker's and
netavark's, Podman's), Docker's drop rules with their counters, and rule counts per chain, for one backend
(iptables-nft, iptables-legacy, nftables)."""

from __future__ import annotations

from dataclasses import dataclass, field

IPV4, IPV6 = "ipv4", "ipv6"
DNAT, MASQUERADE = "DNAT", "MASQUERADE"
NFT_DOCKER_TABLE = "docker-bridges"  # Docker 29's tables, in the nft families below
NFT_FAMILIES = {"ip": IPV4, "ip6": IPV6}


class NetfilterUnavailable(OSError):
    """The rules cannot be read here (no binary, no permission, a timeout)."""


@dataclass
class NatRule:
    """A DNAT or MASQUERADE rule, reduced to what attribution needs."""

    family: str  # ipv4 | ipv6
    action: str  # DNAT | MASQUERADE
    packets: int = 0
    protocol: str = ""  # tcp | udp | sctp ("" = any)
    dports: tuple[int, int] = (0, 0)  # destination (host) port range; (0, 0) = any
    dst: str = ""  # destination address or prefix ("" = any)
    dst_negated: bool = False
    src: str = ""  # source address or prefix ("" = any)
    out_iface: str = ""
    out_negated: bool = False
    to_addr: str = ""  # DNAT target address
    to_ports: tuple[int, int] = (0, 0)  # DNAT target port range


ISOLATION, UNPUBLISHED_PORT, DIRECT_ACCESS = "isolation", "unpublished_port", "direct_access"


@dataclass
class DropRule:
    """A rule of Docker's that drops traffic, with its own packet counter."""

    family: str  # ipv4 | ipv6
    reason: str  # isolation | unpublished_port | direct_access
    bridge: str  # the bridge whose traffic it drops
    packets: int = 0


@dataclass
class Ruleset:
    """What one backend holds: the NAT rules, rule counts per chain, and what could not be read."""

    backend: str = ""
    rules: list[NatRule] = field(default_factory=list)
    # (table, chain) -> rules; table is qualified by its family: "ip nat", "ip6 docker-bridges"
    chains: dict[tuple[str, str], int] = field(default_factory=dict)
    unparsed: int = 0
    docker_families: set[str] = field(default_factory=set)  # families holding Docker's NAT chain
    netavark_families: set[str] = field(default_factory=set)  # ... and Podman's (netavark's)
    drops: list[DropRule] = field(default_factory=list)  # Docker's drop rules, with their counters

    def merge(self, other: Ruleset) -> Ruleset:
        self.rules.extend(other.rules)
        self.drops.extend(other.drops)
        for key, n in other.chains.items():
            self.chains[key] = self.chains.get(key, 0) + n
        self.unparsed += other.unparsed
        self.docker_families |= other.docker_families
        self.netavark_families |= other.netavark_families
        return self
