"""The NAT collector on recorded rules: its metrics, its cache, which backends each scrape reads,
and concurrent scrapes sharing one read. (The parser's speed is measured by `make bench`.)"""

from __future__ import annotations

import dataclasses
import json
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path

import pytest

from exporter.core import topology
from exporter.core.model import HostState, Workload
from exporter.metrics.collectors.nat import NatCollector
from exporter.metrics.exposition import Family, render
from exporter.sources.firewall.iptables_save import parse_iptables_save
from exporter.sources.firewall.netfilter import NetfilterUnavailable
from exporter.sources.firewall.nft_json import parse_nft_json
from exporter.sources.firewall.reader import SharedRead
from exporter.sources.firewall.rules import IPV4, IPV6, Ruleset
from exporter.sources.runtimes.docker import parse_container, parse_network
from helpers import parse_metrics as samples
from helpers import wait_for

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "nat"


class Recorded:
    """A netfilter source answering with recorded rulesets (the collector takes any reader);
    ``log`` holds what each read asked for: ("all" or a backend, families)."""

    timeout = 5.0

    def __init__(self, *rulesets: Ruleset) -> None:
        self.rulesets = list(rulesets)
        self.log: list[tuple[str, set]] = []

    @property
    def reads(self) -> int:
        return len(self.log)

    def read(self, families: Iterable[str] = (IPV4, IPV6), deadline: float | None = None) -> list:
        self.log.append(("all", set(families)))
        return self.rulesets

    def read_backend(
        self, name: str, families: Iterable[str], deadline: float | None = None
    ) -> Ruleset:
        self.log.append((name, set(families)))
        for r in self.rulesets:
            if r.backend == name:
                return r
        raise NetfilterUnavailable(f"{name}-save not found in PATH")


def recorded_snapshot(skip: int = 0, extra: Sequence[Workload] = ()) -> topology.Snapshot:
    containers = [
        parse_container(d) for d in json.loads((FIXTURES / "docker20-containers.json").read_text())
    ][skip:]
    containers += extra
    networks = [
        parse_network(d) for d in json.loads((FIXTURES / "docker20-networks.json").read_text())
    ]
    return topology.build(
        HostState(
            containers={c.id: c for c in containers},
            networks={n.id: n for n in networks},
            runtimes_up={"docker": True},
        )
    )


def test_collector_renders_the_contract():
    ruleset = parse_iptables_save(
        (FIXTURES / "docker20.iptables-save").read_text(), IPV4, "iptables-nft"
    )
    legacy = Ruleset(backend="iptables-legacy")
    got = samples(
        render(NatCollector(netfilter=Recorded(ruleset, legacy)).collect(recorded_snapshot()))
    )
    assert got["dockernet_netfilter_info"] == [({"backend": "iptables-nft"}, 1)]
    assert len(got["dockernet_published_port_info"]) == 11
    present = {
        (l["container_name"], l["host_ip"], l["host_port"]): v
        for l, v in got["dockernet_published_port_rule_present"]
    }
    assert set(present.values()) == {1} and len(present) == 6  # IPv6 bindings expect no rule here
    labels = got["dockernet_published_port_connections_total"][0][0]
    assert set(labels) == {
        "container_id",
        "container_name",
        "protocol",
        "host_ip",
        "host_port",
        "container_port",
    }
    conns = {
        (l["host_port"], l["protocol"]): v
        for l, v in got["dockernet_published_port_connections_total"]
    }
    assert conns[("28080", "tcp")] == 3
    masq = {l["bridge"]: v for l, v in got["dockernet_masquerade_rule_present"]}
    assert masq["docker0"] == 1 and len(masq) == 2
    assert got["dockernet_netfilter_unparsed_rules_total"] == [({}, 0)]
    rules = {(l["table"], l["chain"]): v for l, v in got["dockernet_netfilter_rules"]}
    assert rules[("ip nat", "DOCKER")] == 10
    dropped = {
        (l["network"], l["bridge"], l["reason"]): v
        for l, v in got["dockernet_firewall_dropped_packets_total"]
    }
    assert dropped[("bridge", "docker0", "isolation")] == 0
    assert dropped[("dnx-natrec", "br-f8174a54dba8", "isolation")] == 0
    assert dropped[("", "br-b968fc8dede5", "isolation")] == 0  # a bridge of no network known now
    assert len(dropped) == 4


def test_unparsed_rules_accumulate_and_the_cache_spares_reads():
    bad = parse_iptables_save(
        "*nat\n:DOCKER - [0:0]\n[1:0] -A DOCKER -p tcp --dport 1 -j DNAT\nCOMMIT\n"
    )
    source = Recorded(bad)
    uncached = NatCollector(netfilter=source)
    for _ in range(3):
        got = samples(render(uncached.collect(recorded_snapshot())))
    assert source.reads == 3 and got["dockernet_netfilter_unparsed_rules_total"] == [({}, 3)]
    cached_source = Recorded(bad)
    cached = NatCollector(netfilter=cached_source, cache=60)
    for _ in range(3):
        cached.collect(recorded_snapshot())
    assert cached_source.reads == 1


def docker20_ruleset(backend: str = "iptables-nft") -> Ruleset:
    return parse_iptables_save((FIXTURES / "docker20.iptables-save").read_text(), IPV4, backend)


def present_values(collector: NatCollector, snap: topology.Snapshot) -> set:
    return {
        v
        for _, v in samples(render(collector.collect(snap)))[
            "dockernet_published_port_rule_present"
        ]
    }


def test_steady_scrapes_read_only_the_backend_holding_dockers_rules():
    source = Recorded(docker20_ruleset(), Ruleset(backend="iptables-legacy"))
    collector, snap = NatCollector(netfilter=source), recorded_snapshot()
    for _ in range(3):
        assert present_values(collector, snap) == {1}
    # IPv4 only: the recorded networks have no IPv6 subnet and the containers no IPv6 address.
    assert source.log == [("all", {IPV4})] + [("iptables-nft", {IPV4})] * 2
    # A DNAT rule deleted: the next scrape (from the chosen backend alone) says so.
    text = (FIXTURES / "docker20.iptables-save").read_text()
    rule = next(l for l in text.splitlines() if "-j DNAT" in l)
    source.rulesets[0] = parse_iptables_save(text.replace(rule + "\n", ""), IPV4, "iptables-nft")
    assert present_values(collector, snap) == {0, 1} and source.log[-1][0] == "iptables-nft"


def test_containers_without_published_ports_do_not_unsettle_the_choice():
    source = Recorded(docker20_ruleset(), Ruleset(backend="iptables-legacy"))
    collector, snap = NatCollector(netfilter=source), recorded_snapshot()
    collector.collect(snap)
    portless = [
        dataclasses.replace(v.container, id=f"{i:064x}", name=f"portless{i}", ports=())
        for i, v in enumerate(snap.containers)
    ]
    more = recorded_snapshot(extra=portless)
    assert len(more.containers) == 2 * len(snap.containers)
    collector.collect(more)
    collector.collect(snap)
    assert [kind for kind, _ in source.log] == ["all", "iptables-nft", "iptables-nft"]


def test_every_backend_is_read_again_when_the_choice_may_be_stale():
    source = Recorded(docker20_ruleset(), Ruleset(backend="iptables-legacy"))
    collector, snap = NatCollector(netfilter=source), recorded_snapshot()
    collector.collect(snap)
    collector.collect(
        recorded_snapshot(skip=1)
    )  # a container with ports gone: Docker may have restarted
    assert [kind for kind, _ in source.log] == ["all", "all"]
    collector.firewall.redetect_seconds = 0  # the periodic check
    collector.collect(recorded_snapshot(skip=1))
    assert [kind for kind, _ in source.log] == ["all", "all", "all"]

    # Docker restarted on iptables-legacy: its rules now there, stale ones left in iptables-nft.
    collector.firewall.redetect_seconds = 60
    source.rulesets = [
        parse_iptables_save("*nat\n:DOCKER - [0:0]\nCOMMIT\n", IPV4, "iptables-nft"),
        docker20_ruleset("iptables-legacy"),
    ]
    got = samples(render(collector.collect(snap)))  # the containers back: a new intent
    assert got["dockernet_netfilter_info"] == [({"backend": "iptables-legacy"}, 1)]
    collector.collect(snap)
    assert source.log[-2:] == [("all", {IPV4}), ("iptables-legacy", {IPV4})]


def test_chosen_backend_losing_dockers_chain_or_failing_means_reading_every_backend():
    nft, legacy = docker20_ruleset(), Ruleset(backend="iptables-legacy")
    source = Recorded(nft, legacy)
    collector, snap = NatCollector(netfilter=source), recorded_snapshot()
    collector.collect(snap)
    # Docker's chains gone from iptables-nft (flushed, or Docker moved): every backend in the same scrape.
    source.rulesets = [Ruleset(backend="iptables-nft"), docker20_ruleset("iptables-legacy")]
    got = samples(render(collector.collect(snap)))
    assert [kind for kind, _ in source.log] == ["all", "iptables-nft", "all"]
    assert got["dockernet_netfilter_info"] == [({"backend": "iptables-legacy"}, 1)]
    # The chosen backend's command fails: every backend, in the same scrape.
    source.rulesets = [nft]
    assert present_values(collector, snap) == {1}
    assert [kind for kind, _ in source.log][-2:] == ["iptables-legacy", "all"]


def with_ipv6_subnet(snap: topology.Snapshot) -> topology.Snapshot:
    net = next(iter(snap.networks.values()))
    v6net = dataclasses.replace(net, subnets=net.subnets + (("2001:2:0:9::/64", "2001:2:0:9::1"),))
    return dataclasses.replace(snap, networks=dict(snap.networks, **{net.id: v6net}), cache={})


def test_ipv6_rules_read_where_docker_has_ipv6():
    v6 = parse_iptables_save(
        (FIXTURES / "docker20.ip6tables-save").read_text(), IPV6, "iptables-nft"
    )
    source = Recorded(docker20_ruleset().merge(v6))
    snap = with_ipv6_subnet(recorded_snapshot())
    collector = NatCollector(netfilter=source)
    for _ in range(2):
        collector.collect(snap)
    assert source.log == [("all", {IPV4, IPV6}), ("iptables-nft", {IPV4, IPV6})]


def test_nftables_steady_reads_list_the_docker_tables_the_full_read_found():
    doc = json.loads((FIXTURES / "docker29.json").read_text())
    ipv4_only = {
        "nftables": [i for i in doc["nftables"] if next(iter(i.values())).get("family") != "ip6"]
    }
    source = Recorded(parse_nft_json(ipv4_only), Ruleset(backend="iptables-nft"))
    snap = with_ipv6_subnet(recorded_snapshot())
    collector = NatCollector(netfilter=source)
    for _ in range(2):
        collector.collect(snap)
    # IPv6 is wanted, but Docker has no ip6 docker-bridges table here: listing it would fail.
    assert source.log == [("all", {IPV4, IPV6}), ("nftables", {IPV4})]


# -- concurrent scrapes share the read in flight ---------------------------------------------


class Held(Recorded):
    """Recorded rules whose full reads wait until ``release`` is set, then fail with ``error``
    if one is given; ``started`` is set when a read begins."""

    def __init__(self, *rulesets: Ruleset, error: Exception | None = None) -> None:
        super().__init__(*rulesets)
        self.started, self.release, self.error = threading.Event(), threading.Event(), error

    def read(self, families: Iterable[str] = (IPV4, IPV6), deadline: float | None = None) -> list:
        self.started.set()
        assert self.release.wait(10)
        if self.error is not None:
            self.log.append(("all", set(families)))
            raise self.error
        return super().read(families, deadline)


def scrape_while_held(
    collector: NatCollector, source: Held, monkeypatch: pytest.MonkeyPatch, followers: int = 3
) -> list:
    """One scrape starts a read and is held in it; ``followers`` more arrive and wait for the
    read in flight; then it is released. Each scrape's families, or the exception it raised."""
    waiting = []
    wait = SharedRead.wait

    def counted_wait(self, deadline):
        waiting.append(1)
        return wait(self, deadline)

    monkeypatch.setattr(SharedRead, "wait", counted_wait)
    snap = recorded_snapshot()
    results: list[list[Family] | Exception] = []

    def scrape():
        try:
            results.append(collector.collect(snap))
        except Exception as exc:
            results.append(exc)

    threads = [threading.Thread(target=scrape)]
    threads[0].start()
    assert source.started.wait(10)
    threads += [threading.Thread(target=scrape) for _ in range(followers)]
    for t in threads[1:]:
        t.start()
    wait_for(lambda: len(waiting) == followers, what="scrapes waiting for the read in flight")
    source.release.set()
    for t in threads:
        t.join(10)
    return results


def test_concurrent_scrapes_share_the_read_in_flight(monkeypatch):
    source = Held(docker20_ruleset(), Ruleset(backend="iptables-legacy"))
    collector = NatCollector(netfilter=source)
    results = scrape_while_held(collector, source, monkeypatch)
    assert source.log == [("all", {IPV4})]  # one read for the four scrapes
    assert len(results) == 4
    for families in results:
        assert {
            v for _, v in samples(render(families))["dockernet_published_port_rule_present"]
        } == {1}
    collector.collect(recorded_snapshot())  # the read over, the next scrape reads again
    assert len(source.log) == 2


def test_a_failed_shared_read_fails_every_scrape_waiting_for_it(monkeypatch):
    source = Held(
        docker20_ruleset(), error=NetfilterUnavailable("iptables-nft-save -c did not answer")
    )
    collector = NatCollector(netfilter=source)
    results = scrape_while_held(collector, source, monkeypatch)
    assert len(source.log) == 1 and len(results) == 4
    assert all(isinstance(r, NetfilterUnavailable) and "did not answer" in str(r) for r in results)
    source.error = None
    assert present_values(collector, recorded_snapshot()) == {1}  # and the next scrape reads again


def test_a_scrape_waits_for_the_read_in_flight_no_longer_than_its_own_timeout(monkeypatch):
    source = Held(docker20_ruleset())
    source.timeout = 0.1  # the fake read ignores its deadline: only the follower's own bounds it
    collector = NatCollector(netfilter=source)
    snap, got = recorded_snapshot(), []
    leader = threading.Thread(target=lambda: got.append(collector.collect(snap)))
    leader.start()
    assert source.started.wait(10)
    try:
        with pytest.raises(NetfilterUnavailable, match="in flight"):
            collector.collect(snap)
    finally:
        source.release.set()
        leader.join(10)
    assert len(got) == 1 and len(source.log) == 1
