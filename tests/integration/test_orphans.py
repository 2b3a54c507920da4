"""Orphaned veths made on purpose, one of each reason, on the real kernel and
the real dockerd; the scope; and 200 containers of churn with no running
container ever flagged."""

from __future__ import annotations

import concurrent.futures
import random
import threading
import time
from typing import TYPE_CHECKING

import requests

from helpers import TEST_IMAGE, ExporterProcess, Metrics, parse_metrics, unique, wait_for

if TYPE_CHECKING:
    from docker.models.containers import Container

GRACE = 5.0


def flagged(m: Metrics) -> dict:
    return {l["veth"]: (l["reason"], l["bridge"]) for l, _ in m.select("dockernet_veth_orphaned")}


def container_veth(m: Metrics, c: Container) -> str:
    (row,) = [l for l, _ in m.select("dockernet_veth_info", container_id=c.id, interface="eth0")]
    return row["veth"]


def test_each_reason_after_the_grace_period_and_cleared_when_removed(exporter, containers, hand):
    running = exporter(f"--collector.orphans.grace={GRACE}s")
    c = containers.run()
    base = unique()
    created = time.monotonic()
    pair = hand.pair(base + "a", base + "b", master="docker0")  # never moved
    leaked = hand.pair(base + "n", "eth0", netns=hand.anonymous_netns(base), master="docker0")
    extra = hand.pair(base + "e", base + "x", netns=str(c.attrs["State"]["Pid"]), master="docker0")
    mine = {pair, base + "b", leaked, extra}
    early = running.metrics()
    assert time.monotonic() - created < GRACE, "setup too slow to see the grace period"
    assert not set(flagged(early)) & mine
    for reason in ("peer_in_host", "netns_without_container", "no_endpoint"):
        assert early.get_value("dockernet_orphaned_veths", reason=reason) is not None

    m = wait_for(
        lambda: (m := running.metrics()) and set(flagged(m)) >= mine and m,
        timeout=GRACE + 30,
        what="the hand-made orphans flagged",
    )
    assert time.monotonic() - created >= GRACE
    got = flagged(m)
    assert got[pair] == ("peer_in_host", "docker0")
    assert got[base + "b"] == ("peer_in_host", "")
    assert got[leaked] == ("netns_without_container", "docker0")
    assert got[extra] == ("no_endpoint", "docker0")
    assert container_veth(m, c) not in got  # the container's own veth next to it is not an orphan
    for reason in ("peer_in_host", "netns_without_container", "no_endpoint"):
        assert m.get_value("dockernet_orphaned_veths", reason=reason) >= 1

    for link in (pair, leaked, extra):
        hand.delete(link)
    wait_for(lambda: not set(flagged(running.metrics())) & mine, what="the orphans cleared")


def test_scope_docker_flags_nothing_of_a_clean_host_and_scope_all_flags_other_tools(
    exporter, containers, hand
):
    net = containers.network()
    owner = containers.run()
    mode_containers = [
        owner,
        containers.run(network=net.name),
        containers.run(network_mode="host"),
        containers.run(network_mode="none"),
        containers.run(network_mode=f"container:{owner.id}"),
    ]
    containers.client.networks.get("bridge").connect(mode_containers[1])
    base = unique()
    br = hand.bridge(base + "br")
    named = hand.pair(base + "i", "eth0", netns=hand.named_netns(base), master=br)
    anonymous = hand.pair(base + "a", "eth0", netns=hand.anonymous_netns(base), master=br)
    named_on_docker0 = hand.pair(base + "d", "eth1", netns=base, master="docker0")
    unplugged_pair = hand.pair(base + "u", base + "v")
    other_tools = {named, anonymous, named_on_docker0, unplugged_pair, base + "v"}
    docker_scope = exporter("--collector.orphans.grace=0s")
    all_scope = exporter("--collector.orphans.grace=0s", "--collector.orphans.scope=all")
    own_veths = set()
    for p in (docker_scope, all_scope):

        def mapped(p: ExporterProcess = p) -> Metrics | None:
            m = p.metrics()
            owned = len(m.select("dockernet_veth_info", container_id=owner.id)) == 1
            moded = len(m.select("dockernet_veth_info", container_id=mode_containers[1].id)) == 2
            return m if owned and moded else None

        m = wait_for(mapped, what=f"the containers mapped ({p.url})")
        own_veths |= {
            l["veth"]
            for c in mode_containers
            for l, _ in m.select("dockernet_veth_info", container_id=c.id)
        }
    assert len(own_veths) == 3
    assert not set(flagged(docker_scope.metrics())) & (own_veths | other_tools)
    got = flagged(all_scope.metrics())
    assert not set(got) & own_veths
    assert {v: got.get(v, ("", ""))[0] for v in other_tools} == {
        named: "netns_without_container",
        anonymous: "netns_without_container",
        named_on_docker0: "netns_without_container",
        unplugged_pair: "peer_in_host",
        base + "v": "peer_in_host",
    }


CHURN = 200
LONG_LIVED = 8
CHURN_GRACE = 10.0  # well above the start-up time of a container on a loaded 2-core host


class Lifetimes:
    """When each test container was running, and the host ifindex of its veth."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.spans: list[list] = []  # [ifindex, running since, running until (None: still)]

    def started(self, c: Container) -> list:
        pid = c.attrs["State"]["Pid"]
        with open(f"/proc/{pid}/root/sys/class/net/eth0/iflink") as f:  # the container's own sysfs
            span = [int(f.read()), time.monotonic(), None]
        with self.lock:
            self.spans.append(span)
        return span

    def running_through(self, start: float, end: float) -> set:
        with self.lock:
            return {
                ifindex
                for ifindex, since, until in self.spans
                if since <= start and (until is None or until >= end)
            }


def test_churn_never_flags_a_running_container(exporter, containers, hand):
    running = exporter(f"--collector.orphans.grace={CHURN_GRACE}s")
    lifetimes = Lifetimes()
    with concurrent.futures.ThreadPoolExecutor(LONG_LIVED) as pool:
        steady = list(pool.map(lambda _: containers.run(), range(LONG_LIVED)))
    for c in steady:
        lifetimes.started(c)
    witness = hand.pair(
        unique() + "w", unique() + "w", master="docker0"
    )  # must be flagged during the churn
    stop = threading.Event()
    violations: list[str] = []
    witnessed: list[bool] = []
    scrapes: list[float] = []

    def scrape_loop():
        while not stop.is_set():
            start = time.monotonic()
            text = requests.get(running.url + "/metrics", timeout=30).text
            end = time.monotonic()
            m = parse_metrics(text)
            ifindex = {l["veth"]: int(l["ifindex"]) for l, _ in m.get("dockernet_veth_info", ())}
            names = {l["veth"] for l, _ in m.get("dockernet_veth_orphaned", ())}
            alive = lifetimes.running_through(start, end)
            violations.extend(n for n in names if ifindex.get(n) in alive)
            witnessed.append(witness in names)
            scrapes.append(end - start)
            stop.wait(0.2)  # leave the two cores to dockerd between scrapes

    def start(i):
        c = containers.client.containers.run(
            TEST_IMAGE, "sleep 3600", name=unique("dnx-churn"), detach=True
        )
        containers.names.append(c.name)
        c.reload()
        span = lifetimes.started(c)
        # Many outlive the grace period (the last ones do not, to end sooner); removals wait in their own
        # pool so that starts go on meanwhile.
        lifetime = random.uniform(0, 1.6 * CHURN_GRACE if i < CHURN * 3 // 4 else 2.0)
        return removers.submit(remove, c, span, time.monotonic() + lifetime)

    def remove(c, span, due):
        time.sleep(max(0.0, due - time.monotonic()))
        with lifetimes.lock:
            span[2] = time.monotonic()
        c.remove(force=True)

    scraper = threading.Thread(target=scrape_loop, daemon=True)
    scraper.start()
    try:
        with concurrent.futures.ThreadPoolExecutor(
            64
        ) as removers:  # mostly waiting for their due time
            with concurrent.futures.ThreadPoolExecutor(12) as starters:
                removals = list(starters.map(start, range(CHURN)))
            for r in removals:
                r.result()
    finally:
        stop.set()
        scraper.join(30)
    assert len(lifetimes.spans) == CHURN + LONG_LIVED
    assert len(scrapes) > 20
    assert violations == []
    assert any(witnessed), "the detector never flagged the hand-made orphan during the churn"
