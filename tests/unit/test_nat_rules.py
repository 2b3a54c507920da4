"""NAT rules on recorded fixtures: Docker 20.10 (recorded here), the 28 layout and the
29 nftables layout (written from Docker's documentation of its rules), and the join
with Docker's intent. No root, no Docker."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import random
from pathlib import Path

import pytest

from exporter.core.model import Endpoint, Network, PortBinding, Workload
from exporter.sources.firewall import iptables_save
from exporter.sources.firewall.attribution import (
    chain_counts,
    choose,
    masquerade_statuses,
    port_statuses,
    wanted_families,
)
from exporter.sources.firewall.iptables_save import header_backend, parse_iptables_save
from exporter.sources.firewall.nft_json import parse_nft_json
from exporter.sources.firewall.rules import IPV4, IPV6, Ruleset
from exporter.sources.runtimes.docker import parse_container, parse_network

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "nat"
# bench/ runs from the checkout and is not installed: load its rules-text generator by path.
_spec = importlib.util.spec_from_file_location(
    "bench_nattext", Path(__file__).resolve().parents[2] / "bench" / "nattext.py"
)
assert _spec is not None and _spec.loader is not None  # a .py file has a source loader
nattext = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(nattext)


def text(name: str) -> str:
    return (FIXTURES / name).read_text()


def docker20() -> tuple[Ruleset, list[Workload], list[Network]]:
    ruleset = parse_iptables_save(text("docker20.iptables-save"), IPV4, "iptables-nft")
    ruleset.merge(parse_iptables_save(text("docker20.ip6tables-save"), IPV6, "iptables-nft"))
    containers = [parse_container(d) for d in json.loads(text("docker20-containers.json"))]
    networks = [parse_network(d) for d in json.loads(text("docker20-networks.json"))]
    return ruleset, containers, networks


def statuses(containers: list[Workload], ruleset: Ruleset) -> dict:
    return {
        (p.container.name, p.binding.protocol, p.binding.host_ip, p.binding.host_port): p
        for p in port_statuses(containers, ruleset)
    }


def c1(ipv6: bool = True) -> Workload:
    """Docker's documented example: c1 on bridge1 publishing 8080->80/tcp (and 8081->81/udp on 127.0.0.1)."""
    ports = [PortBinding("tcp", 80, "0.0.0.0", 8080), PortBinding("udp", 81, "127.0.0.1", 8081)]
    if ipv6:
        ports.append(PortBinding("tcp", 80, "::", 8080))
    return Workload(
        id="c" * 64,
        name="c1",
        ports=tuple(ports),
        endpoints=(
            Endpoint(
                "bridge1",
                "n" * 64,
                ipv4="198.19.7.2",
                ipv4_prefix=24,
                ipv6="2001:2:0:7::2" if ipv6 else "",
                ipv6_prefix=64,
            ),
        ),
    )


def doc_networks() -> list[Network]:
    return [
        Network(
            "d" * 64,
            "bridge",
            "bridge",
            bridge="docker0",
            subnets=(("198.18.0.0/24", "198.18.0.1"),),
        ),
        Network(
            "n" * 64,
            "bridge1",
            "bridge",
            bridge="bridge1",
            subnets=(("198.19.7.0/24", "198.19.7.1"), ("2001:2:0:7::/64", "2001:2:0:7::1")),
        ),
    ]


# -- Docker 20.10, recorded on this kind of host -------------------------------------------


def test_docker20_recorded_bindings_are_all_present_with_their_counters():
    ruleset, containers, _ = docker20()
    assert ruleset.backend == "iptables-nft" and ruleset.unparsed == 0
    assert ruleset.docker_families == {IPV4}  # Docker 20.10 leaves ip6tables alone by default
    got = statuses(containers, ruleset)
    assert len(got) == 11  # 6 IPv4 bindings + 5 IPv6 ones
    web = {k: v for k, v in got.items() if k[0] == "dnx-natrec-web" and k[2] != "::"}
    assert {k[3]: (v.present, v.connections) for k, v in web.items()} == {
        28080: (True, 3),
        28081: (True, 0),
        28090: (True, 0),
        28091: (True, 0),
        28092: (True, 0),
    }
    assert got[("dnx-natrec-db", "tcp", "0.0.0.0", 28100)].present
    ipv6 = [v for k, v in got.items() if k[2] == "::"]
    assert ipv6 and not any(v.expected for v in ipv6)  # served by docker-proxy, no rule to expect


def test_docker20_masquerade_per_bridge_subnet():
    ruleset, _, networks = docker20()
    got = {(m.bridge, m.subnet): m for m in masquerade_statuses(networks, ruleset)}
    assert set(got) == {
        ("docker0", "198.18.0.0/24"),
        (networks[1].bridge, networks[1].subnets[0][0]),
    }
    assert all(m.expected and m.present for m in got.values())


def test_docker20_chain_counts():
    ruleset, _, _ = docker20()
    counts = chain_counts(ruleset)
    assert counts[("ip nat", "DOCKER")] == 6 + 4  # 6 DNAT + a RETURN per bridge (4 networks then)
    assert counts[("ip nat", "PREROUTING")] == 1
    assert ("ip filter", "DOCKER-ISOLATION-STAGE-1") in counts
    assert not any(table.startswith("ip6") for table, _ in counts)  # ip6tables held no table at all


def test_deleting_one_rule_makes_exactly_that_binding_missing():
    lines = text("docker20.iptables-save").splitlines()
    deleted = [l for l in lines if "--dport 28091 -j DNAT" not in l]
    assert len(deleted) == len(lines) - 1
    ruleset = parse_iptables_save("\n".join(deleted))
    _, containers, _ = docker20()
    missing = [k for k, v in statuses(containers, ruleset).items() if v.expected and not v.present]
    assert missing == [("dnx-natrec-web", "tcp", "0.0.0.0", 28091)]


def test_attribution_does_not_depend_on_rule_order():
    lines = text("docker20.iptables-save").splitlines()
    nat_start = lines.index("*nat")
    rules = [l for l in lines[nat_start:] if l.startswith("[")]
    shuffled = rules[:]
    random.Random(4).shuffle(shuffled)
    reordered = (
        lines[:nat_start]
        + [l for l in lines[nat_start:] if not l.startswith("[")][:-2]
        + shuffled
        + ["COMMIT"]
    )
    _, containers, _ = docker20()
    before = {
        k: (v.present, v.connections)
        for k, v in statuses(containers, parse_iptables_save("\n".join(lines))).items()
    }
    after = {
        k: (v.present, v.connections)
        for k, v in statuses(containers, parse_iptables_save("\n".join(reordered))).items()
    }
    assert before == after


# -- Docker 28 layout (DOCKER-FORWARD, -CT, -BRIDGE), IPv4 and IPv6 ------------------------------


def test_docker28_layout_ipv4_and_ipv6():
    ruleset = parse_iptables_save(text("docker28.iptables-save"), IPV4, "iptables-nft")
    ruleset.merge(parse_iptables_save(text("docker28.ip6tables-save"), IPV6, "iptables-nft"))
    assert header_backend(text("docker28.iptables-save")) == "iptables-nft"
    assert ruleset.docker_families == {IPV4, IPV6} and ruleset.unparsed == 0
    got = statuses([c1()], ruleset)
    assert (
        got[("c1", "tcp", "0.0.0.0", 8080)].present,
        got[("c1", "tcp", "0.0.0.0", 8080)].connections,
    ) == (True, 12)
    assert (got[("c1", "tcp", "::", 8080)].present, got[("c1", "tcp", "::", 8080)].connections) == (
        True,
        4,
    )
    assert (
        got[("c1", "udp", "127.0.0.1", 8081)].expected
        and not got[("c1", "udp", "127.0.0.1", 8081)].present
    )
    masq = {
        m.subnet: (m.present, m.connections) for m in masquerade_statuses(doc_networks(), ruleset)
    }
    assert masq == {
        "198.18.0.0/24": (True, 0),
        "198.19.7.0/24": (True, 5),
        "2001:2:0:7::/64": (True, 2),
    }
    counts = chain_counts(ruleset)
    assert counts[("ip filter", "DOCKER-FORWARD")] == 5 and counts[("ip filter", "DOCKER-CT")] == 2
    assert counts[("ip raw", "PREROUTING")] == 1 and counts[("ip6 nat", "DOCKER")] == 1


# -- Docker 29 native nftables ---------------------------------------------------------------------


def test_docker29_nftables_layout():
    ruleset = parse_nft_json(json.loads(text("docker29.json")))
    assert ruleset.backend == "nftables" and ruleset.unparsed == 0
    assert ruleset.docker_families == {IPV4, IPV6}
    got = statuses([c1()], ruleset)
    assert {k[2:]: (v.present, v.connections) for k, v in got.items()} == {
        ("0.0.0.0", 8080): (True, 12),
        ("127.0.0.1", 8081): (True, 0),
        ("::", 8080): (True, 4),
    }
    masq = {
        m.subnet: (m.present, m.connections) for m in masquerade_statuses(doc_networks(), ruleset)
    }
    assert masq == {
        "198.18.0.0/24": (True, 0),
        "198.19.7.0/24": (True, 5),
        "2001:2:0:7::/64": (True, 2),
    }
    counts = chain_counts(ruleset)
    assert counts[("ip docker-bridges", "nat-prerouting-and-output")] == 2
    assert counts[("ip docker-bridges", "nat-postrouting-in__bridge1")] == 0
    assert counts[("ip6 docker-bridges", "nat-postrouting-out__bridge1")] == 1


def test_nft_tables_other_than_dockers_are_ignored_and_bad_rules_counted():
    doc = json.loads(text("docker29.json"))
    doc["nftables"] += [
        {
            "rule": {
                "family": "ip",
                "table": "filter",
                "chain": "INPUT",
                "expr": [{"dnat": {"addr": "198.18.9.9"}}],
            }
        },
        {"rule": {"family": "ip", "table": "docker-bridges", "chain": "nat-prerouting-and-output"}},
        {
            "rule": {
                "family": "ip",
                "table": "docker-bridges",
                "chain": "nat-prerouting-and-output",
                "expr": [{"dnat": {"port": 80}}],
            }
        },
    ]
    ruleset = parse_nft_json(doc)
    assert ruleset.unparsed == 2
    assert all(r.to_addr != "198.18.9.9" for r in ruleset.rules)


# -- the join's rules ------------------------------------------------------------------------------


def rules(*lines: str) -> Ruleset:
    body = "\n".join(["*nat", ":DOCKER - [0:0]", *lines, "COMMIT"])
    return parse_iptables_save(body)


def test_host_address_must_match_exactly():
    only_loopback = rules(
        "[9:0] -A DOCKER -d 127.0.0.1/32 ! -i bridge1 -p tcp -m tcp --dport 8080 "
        "-j DNAT --to-destination 198.19.7.2:80"
    )
    got = statuses([c1(ipv6=False)], only_loopback)
    assert not got[
        ("c1", "tcp", "0.0.0.0", 8080)
    ].present  # a 127.0.0.1 rule serves no 0.0.0.0 binding


def test_rule_to_another_container_or_port_does_not_count():
    ruleset = rules(
        "[1:0] -A DOCKER ! -i bridge1 -p tcp -m tcp --dport 8080 -j DNAT --to-destination 198.19.7.3:80",
        "[1:0] -A DOCKER ! -i bridge1 -p tcp -m tcp --dport 8080 -j DNAT --to-destination 198.19.7.2:81",
        "[1:0] -A DOCKER ! -i bridge1 -p udp -m udp --dport 8080 -j DNAT --to-destination 198.19.7.2:80",
    )
    assert not statuses([c1(ipv6=False)], ruleset)[("c1", "tcp", "0.0.0.0", 8080)].present


def test_port_range_rule_serves_each_port_of_the_range():
    ruleset = rules(
        "[6:0] -A DOCKER ! -i bridge1 -p tcp -m tcp --dport 9000:9002 "
        "-j DNAT --to-destination 198.19.7.2:90-92"
    )
    c = Workload(
        id="r" * 64,
        name="r",
        endpoints=(Endpoint("bridge1", "n", ipv4="198.19.7.2"),),
        ports=tuple(PortBinding("tcp", 90 + i, "0.0.0.0", 9000 + i) for i in range(3))
        + (PortBinding("tcp", 95, "0.0.0.0", 9001),),
    )
    got = [
        (p.binding.host_port, p.binding.container_port, p.present)
        for p in port_statuses([c], ruleset)
    ]
    assert got == [(9000, 90, True), (9001, 91, True), (9002, 92, True), (9001, 95, False)]


def test_ipv6_destination_forms():
    assert iptables_save._split_destination("[2001:2::2]:80") == ("2001:2::2", (80, 80))
    assert iptables_save._split_destination("198.18.0.2:80-85") == ("198.18.0.2", (80, 85))
    assert iptables_save._split_destination("198.18.0.2") == ("198.18.0.2", (0, 0))
    assert iptables_save._split_destination("2001:2::2") == ("2001:2::2", (0, 0))


def test_internal_and_non_masquerading_networks_expect_nothing():
    nets = [
        Network(
            "i",
            "internal",
            "bridge",
            bridge="br-i",
            subnets=(("198.19.8.0/24", ""),),
            internal=True,
        ),
        Network(
            "m",
            "nomasq",
            "bridge",
            bridge="br-m",
            subnets=(("198.19.9.0/24", ""),),
            masquerade=False,
        ),
        Network("o", "overlay", "overlay", subnets=(("198.19.10.0/24", ""),)),
    ]
    assert masquerade_statuses(nets, rules()) == []


def test_hairpin_masquerade_is_not_the_subnet_rule():
    ruleset = rules(
        "[0:0] -A POSTROUTING -s 198.19.7.2/32 -d 198.19.7.2/32 -p tcp -m tcp --dport 80 -j MASQUERADE",
        "[0:0] -A POSTROUTING -s 198.19.7.0/24 -o bridge1 -j MASQUERADE",
    )
    (status,) = [
        m for m in masquerade_statuses(doc_networks(), ruleset) if m.subnet == "198.19.7.0/24"
    ]
    assert status.expected and not status.present


def test_unreadable_rules_are_counted_and_skipped():
    ruleset = rules(
        "[1:0] -A DOCKER ! -i bridge1 -p tcp -m tcp --dport 8080 -j DNAT --to-destination 198.19.7.2:80",
        "[x:0] -A DOCKER ! -i bridge1 -p tcp -m tcp --dport 8081 -j DNAT --to-destination 198.19.7.2:81",
        "[1:0] -A DOCKER -p tcp -m tcp --dport 8082 -j DNAT",
        "[1:0] -A DOCKER -p tcp -m tcp --dport eighty -j DNAT --to-destination 198.19.7.2:80",
        "[1:0 -A DOCKER -j RETURN",
        "garbage line",
        '[2:0] -A DOCKER -m comment --comment "a \\"quoted\\" -j DNAT" -p tcp --dport 8083 '
        "-j DNAT --to-destination 198.19.7.2:83",
    )
    assert ruleset.unparsed == 5
    assert sorted(r.dports[0] for r in ruleset.rules) == [8080, 8083]


def test_choose_the_backend_that_serves_dockers_intent():
    current, _, networks = docker20()
    _, containers, _ = docker20()
    stale = parse_iptables_save(text("docker28.iptables-save"), IPV4, "iptables-legacy")
    empty = Ruleset(backend="nftables")
    assert choose([stale, current, empty], containers, networks).backend == "iptables-nft"
    # Without any intent to serve, the backend holding Docker's chain and more NAT rules wins...
    assert choose([empty, stale]).backend == "iptables-legacy"
    # ...and a tie goes to the first given: the system's default.
    assert choose([Ruleset(backend="iptables-legacy"), empty]).backend == "iptables-legacy"


def test_ipv6_rules_are_wanted_only_where_docker_has_ipv6():
    _, containers, networks = docker20()
    assert wanted_families(containers, networks) == {IPV4}  # `::` bindings of IPv4-only containers
    assert wanted_families([c1()], []) == {IPV4, IPV6}  # an IPv6 address
    assert wanted_families([], doc_networks()) == {IPV4, IPV6}  # an IPv6 subnet
    assert wanted_families([c1(ipv6=False)], doc_networks()[:1]) == {IPV4}


def test_header_backend():
    assert (
        header_backend("# Generated by iptables-save v1.8.9 (nf_tables) on x\n*nat\n")
        == "iptables-nft"
    )
    assert (
        header_backend("# Generated by iptables-save v1.8.9 (legacy) on x\n") == "iptables-legacy"
    )
    assert header_backend("# Generated by iptables-save v1.6.1 on x\n") == "iptables-legacy"
    assert header_backend("") is None


@pytest.mark.parametrize(
    "family,line",
    [
        (
            IPV4,
            "[1:0] -A DOCKER -d 198.18.0.1/32 ! -i docker0 -p sctp -m sctp --dport 7 "
            "-j DNAT --to-destination 198.18.0.2:7",
        ),
        (
            IPV6,
            "[1:0] -A DOCKER -d 2001:2::1/128 ! -i docker0 -p tcp -m tcp --dport 7 "
            "-j DNAT --to-destination [2001:2::2]:7",
        ),
    ],
)
def test_specific_host_address_bindings(family, line):
    host_ip, addr = ("198.18.0.1", "198.18.0.2") if family == IPV4 else ("2001:2::1", "2001:2::2")
    proto = "sctp" if family == IPV4 else "tcp"
    endpoint = (
        Endpoint("bridge", "b", ipv4=addr) if family == IPV4 else Endpoint("bridge", "b", ipv6=addr)
    )
    c = Workload(
        id="s" * 64, name="s", endpoints=(endpoint,), ports=(PortBinding(proto, 7, host_ip, 7),)
    )
    body = "\n".join(["*nat", ":DOCKER - [0:0]", line, "COMMIT"])
    (status,) = port_statuses([c], parse_iptables_save(body, family))
    assert status.expected and status.present and status.connections == 1


def test_fast_path_reads_dockers_shapes_as_the_general_parser_does():
    specs = []
    for name, family in (
        ("docker20.iptables-save", IPV4),
        ("docker28.iptables-save", IPV4),
        ("docker28.ip6tables-save", IPV6),
    ):
        table = ""
        for line in text(name).splitlines():
            table = line[1:] if line.startswith("*") else table
            spec = line.partition("] ")[2].split(" ", 2)[2] if line.startswith("[") else ""
            if table == "nat" and iptables_save._worth_parsing(spec):
                specs.append((spec, family))
    fast = [(s, f) for s, f in specs if iptables_save._docker_shaped(s, f, 7) is not None]
    assert len(fast) >= 10
    for spec, family in fast:
        assert iptables_save._docker_shaped(spec, family, 7) == iptables_save._nat_rule(
            iptables_save._options(spec), family, 7
        ), spec


def test_a_large_ruleset_with_kube_proxys_rules_is_read_whole():
    """10,000 rules, 40% of them kube-proxy's (quoted comments, DNAT without a port): each one
    counted, none unreadable, and only Docker's DNAT and subnet MASQUERADE rules kept. (Its
    speed is a figure of `make bench`, bench/natparse.py.)"""
    body = nattext.iptables_save(10000, kube_proxy=0.4)
    ruleset = parse_iptables_save(body)
    assert sum(ruleset.chains.values()) == 10000 and ruleset.unparsed == 0
    nat = body.split("*nat\n", 1)[1].split("\nCOMMIT\n", 1)[0].splitlines()
    docker = [l for l in nat if ("-j DNAT" in l and "--dport" in l) or "! -o" in l]
    assert len(ruleset.rules) == len(docker) > 1000


# -- Docker's drop rules and their counters ---------------------------------------------------------


def drops(ruleset: Ruleset) -> dict:
    out: dict = {}
    for d in ruleset.drops:
        out[d.family, d.reason, d.bridge] = out.get((d.family, d.reason, d.bridge), 0) + d.packets
    return out


def test_drop_rules_of_each_layout():
    isolation = text("docker20.iptables-save").replace(
        "[0:0] -A DOCKER-ISOLATION-STAGE-2 -o docker0 -j DROP",
        "[7:588] -A DOCKER-ISOLATION-STAGE-2 -o docker0 -j DROP",
    )
    assert drops(parse_iptables_save(isolation, IPV4)) == {
        (IPV4, "isolation", "br-f8174a54dba8"): 0,
        (IPV4, "isolation", "br-365a3458c15e"): 0,
        (IPV4, "isolation", "docker0"): 7,
        (IPV4, "isolation", "br-b968fc8dede5"): 0,
    }
    docker28 = parse_iptables_save(text("docker28.iptables-save"), IPV4)
    docker28.merge(parse_iptables_save(text("docker28.ip6tables-save"), IPV6))
    assert drops(docker28) == {
        (IPV4, "direct_access", "bridge1"): 0,
        (IPV4, "unpublished_port", "docker0"): 0,
        (IPV4, "unpublished_port", "bridge1"): 0,
        (IPV6, "unpublished_port", "bridge1"): 0,
    }
    nft = json.loads(text("docker29.json"))
    for item in nft["nftables"]:
        rule = item.get("rule", {})
        if rule.get("comment") == "DROP DIRECT ACCESS":
            next(e for e in rule["expr"] if "counter" in e)["counter"]["packets"] = 3
    assert drops(parse_nft_json(nft)) == {
        (IPV4, "direct_access", "bridge1"): 3,
        (IPV4, "unpublished_port", "docker0"): 0,
        (IPV4, "unpublished_port", "bridge1"): 0,
    }


def test_drops_that_are_not_dockers_are_not_counted():
    other = (
        "*filter\n:DOCKER-USER - [0:0]\n:DOCKER-ISOLATION-STAGE-2 - [0:0]\n"
        "[5:300] -A DOCKER-USER -o docker0 -j DROP\n"
        "[6:360] -A DOCKER-ISOLATION-STAGE-2 -o docker0 -p tcp -j DROP\n"
        "[2:120] -A FORWARD -i eth0 -j DROP\nCOMMIT\n"
    )
    ruleset = parse_iptables_save(other, IPV4)
    assert ruleset.drops == [] and ruleset.unparsed == 0


def podman_on_default_network() -> tuple[Ruleset, Workload, Network]:
    """Recorded: Podman 4.3 with netavark 1.4, one container publishing 18080->80/tcp, beside
    Docker's default bridge."""
    ruleset = parse_iptables_save(text("netavark14.iptables-save"), backend="iptables-nft")
    container = Workload(
        id="p" * 64,
        name="web",
        runtime="podman",
        nat_chains="netavark",
        endpoints=(Endpoint("podman", "podman", ipv4="198.18.160.60", ipv4_prefix=24),),
        ports=(PortBinding("tcp", 80, "", 18080),),
    )
    network = Network(
        "podman",
        "podman",
        "bridge",
        bridge="podman0",
        subnets=(("198.18.160.0/24", "198.18.160.1"),),
        runtime="podman",
        nat_chains="netavark",
    )
    return ruleset, container, network


def test_netavark_binding_and_masquerade_are_found_through_its_chains():
    ruleset, container, network = podman_on_default_network()
    assert ruleset.netavark_families == {IPV4} and ruleset.unparsed == 0
    (port,) = port_statuses([container], ruleset)
    assert port.expected and port.present
    (masq,) = masquerade_statuses([network], ruleset)
    assert (masq.bridge, masq.subnet, masq.expected, masq.present) == (
        "podman0",
        "198.18.160.0/24",
        True,
        True,
    )


def test_netavark_rules_deleted_or_of_another_subnet_are_missing():
    ruleset, container, network = podman_on_default_network()
    lines = text("netavark14.iptables-save").splitlines()
    without = "\n".join(
        line for line in lines if "DNAT --to-destination" not in line and "! -d 224" not in line
    )
    bare = parse_iptables_save(without, backend="iptables-nft")
    assert not port_statuses([container], bare)[0].present
    assert not masquerade_statuses([network], bare)[0].present
    # Docker's masquerade of its own bridge is not Podman's, nor Podman's another network's.
    other = dataclasses.replace(network, bridge="podman1", subnets=(("198.18.0.0/24", ""),))
    assert not masquerade_statuses([other], ruleset)[0].present
    # A Docker container is not served by netavark's chains, nor judged where Docker has none.
    docker_one = dataclasses.replace(container, runtime="docker", nat_chains="docker")
    assert not port_statuses([docker_one], ruleset)[0].expected
