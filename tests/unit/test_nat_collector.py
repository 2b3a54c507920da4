"""The NAT collector's metrics on recorded rules, and the parser's speed on a 10,000-rule ruleset."""
from __future__ import annotations

import importlib.util
import json
import time
import timeit
from pathlib import Path

from conftest import parse_metrics as samples
from exporter import nat, topology
from exporter.collectors.nat import NatCollector
from exporter.exposition import render
from exporter.model import HostState
from exporter.sources.docker import parse_container, parse_network

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "nat"


def load_generator():
    spec = importlib.util.spec_from_file_location("ruleset10k", FIXTURES / "ruleset10k.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Recorded:
    """A netfilter source answering with recorded rulesets (the collector takes any reader)."""

    def __init__(self, *rulesets: nat.Ruleset) -> None:
        self.rulesets = list(rulesets)
        self.reads = 0

    def read(self) -> list:
        self.reads += 1
        return self.rulesets


def recorded_snapshot() -> topology.Snapshot:
    containers = [parse_container(d) for d in json.loads((FIXTURES / "docker20-containers.json").read_text())]
    networks = [parse_network(d) for d in json.loads((FIXTURES / "docker20-networks.json").read_text())]
    return topology.build(HostState(containers={c.id: c for c in containers}, networks={n.id: n for n in networks},
                                    docker_up=True))


def test_collector_renders_the_contract():
    ruleset = nat.parse_iptables_save((FIXTURES / "docker20.iptables-save").read_text(), nat.IPV4, "iptables-nft")
    legacy = nat.Ruleset(backend="iptables-legacy")
    got = samples(render(NatCollector(netfilter=Recorded(ruleset, legacy)).collect(recorded_snapshot())))
    assert got["dockernet_netfilter_info"] == [({"backend": "iptables-nft"}, 1)]
    assert len(got["dockernet_published_port_info"]) == 11
    present = {(l["container_name"], l["host_ip"], l["host_port"]): v
               for l, v in got["dockernet_published_port_rule_present"]}
    assert set(present.values()) == {1} and len(present) == 6          # IPv6 bindings expect no rule here
    labels = got["dockernet_published_port_connections_total"][0][0]
    assert set(labels) == {"container_id", "container_name", "protocol", "host_ip", "host_port", "container_port"}
    conns = {(l["host_port"], l["protocol"]): v for l, v in got["dockernet_published_port_connections_total"]}
    assert conns[("28080", "tcp")] == 3
    masq = {l["bridge"]: v for l, v in got["dockernet_masquerade_rule_present"]}
    assert masq["docker0"] == 1 and len(masq) == 2
    assert got["dockernet_netfilter_unparsed_rules_total"] == [({}, 0)]
    rules = {(l["table"], l["chain"]): v for l, v in got["dockernet_netfilter_rules"]}
    assert rules[("ip nat", "DOCKER")] == 10


def test_unparsed_rules_accumulate_and_the_cache_spares_reads():
    bad = nat.parse_iptables_save("*nat\n:DOCKER - [0:0]\n[1:0] -A DOCKER -p tcp --dport 1 -j DNAT\nCOMMIT\n")
    source = Recorded(bad)
    uncached = NatCollector(netfilter=source)
    for _ in range(3):
        got = samples(render(uncached.collect(recorded_snapshot())))
    assert source.reads == 3 and got["dockernet_netfilter_unparsed_rules_total"] == [({}, 3)]
    cached_source = Recorded(bad)
    cached = NatCollector(netfilter=cached_source, nat_cache=60)
    for _ in range(3):
        cached.collect(recorded_snapshot())
    assert cached_source.reads == 1


def test_parse_10000_rules_well_under_100ms():
    text = load_generator().generate(10000)
    ruleset = nat.parse_iptables_save(text)
    assert sum(ruleset.chains.values()) == 10000 and ruleset.unparsed == 0
    # CPU time of the best of five: other work on a shared machine does not count against the parser.
    best = min(timeit.repeat(lambda: nat.parse_iptables_save(text), number=1, repeat=5, timer=time.process_time))
    assert best < 0.1, f"parsing 10,000 rules took {best * 1000:.0f} ms"
