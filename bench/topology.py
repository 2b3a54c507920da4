"""The topology page's cost. First, pure: the page (document and HTML) rendered from a synthetic
snapshot of 2,000 veths and 200 containers, against the /metrics text of the same snapshot
rendered by the collectors that need no firewall, in the same run. Then live: /metrics scraped
alone and while a page is open on the exporter under test (a client that loads /topology, then
fetches the fragment as the page's script does, at its interval or faster, so that a short window
holds five refreshes)."""

from __future__ import annotations

import http.client
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sized
from types import SimpleNamespace
from typing import TYPE_CHECKING

from exporter.core import topology
from exporter.core.model import Address, Endpoint, HostState, Link, Network, Workload
from exporter.metrics.collectors import (
    AddressesCollector,
    BridgesCollector,
    ContainersCollector,
    OrphansCollector,
    VethsCollector,
)
from exporter.metrics.collectors.base import Context
from exporter.metrics.scrape import Scraper
from exporter.sources.kernel.procfs import Procfs
from exporter.views.page import TopologyPage
from exporter.views.render import REFRESH_SECONDS

from .checks import check
from .stats import median, percentile

if TYPE_CHECKING:
    from .procs import Exporter

VETHS, CONTAINERS = 2000, 200
PEERS_PER_NAMESPACE = 10  # the veths beyond the containers' own: ten per namespace of no container
RENDER_TARGET_MS = 50
SLOWDOWN_TARGET = 1.25
SCRAPE_INTERVAL = 0.1


def synthetic_state(veths: int = VETHS, containers: int = CONTAINERS) -> HostState:
    """Two Docker networks holding the containers (one veth each), two bridges of no network holding
    the other veths, their peers ten to a namespace of no container."""
    state = HostState(host_netns_inode=1, runtimes_up={"docker": True})
    state.links[1] = Link(1, "lo")
    for n in range(4):
        bridge = Link(10 + n, f"br-bench{n}", kind="bridge", operstate="up")
        state.links[bridge.ifindex] = bridge
    for n in range(2):
        net = Network(
            f"net{n}",
            f"bench{n}",
            "bridge",
            f"br-bench{n}",
            ((f"198.19.{n}.0/24", f"198.19.{n}.1"),),
        )
        state.networks[net.id] = net
    for i in range(veths):
        _pair(state, i, containers)
    return state


def _pair(state: HostState, i: int, containers: int) -> None:
    ifindex, own = 100 + i, i < containers
    nsid, peer = (i, 2) if own else (containers + i // PEERS_PER_NAMESPACE, 2 + i % 10)
    bridge = 10 + (i % 2 if own else 2 + i % 2)
    state.links[ifindex] = Link(
        ifindex,
        f"veth{i:07x}",
        kind="veth",
        master=bridge,
        peer_ifindex=peer,
        peer_netnsid=nsid,
        operstate="up",
    )
    mac = f"02:42:00:00:{i // 256:02x}:{i % 256:02x}"
    state.netns_links.setdefault(nsid, {})[peer] = Link(
        peer, f"eth{peer - 2}", kind="veth", mac=mac, peer_ifindex=ifindex, peer_netnsid=0
    )
    if own:
        address = f"198.19.{i % 2}.{2 + i // 2}"
        state.netns_addresses[nsid] = (Address(peer, "ipv4", address, 24),)
        c = Workload(
            id=f"{i:064x}",
            name=f"bench-{i}",
            image="busybox",
            pid=1000 + i,
            network_mode=f"bench{i % 2}",
            netns_inode=10_000 + i,
            nsid=nsid,
            endpoints=(Endpoint(f"bench{i % 2}", f"net{i % 2}", mac, address, 24),),
        )
        state.containers[c.id] = c


def counters(ifindexes: Iterable[int]) -> dict:
    return dict.fromkeys(ifindexes, (1000, 10, 0, 0, 2000, 20, 0, 0))


def timed(render: Callable[[], Sized], repeats: int) -> tuple[float, int]:
    """Median seconds of ``repeats`` calls, and the size of what the last one returned."""
    times, size = [], 0
    for _ in range(repeats):
        started = time.perf_counter()
        size = len(render())
        times.append(time.perf_counter() - started)
    return median(times), size


def render_costs(veths: int, containers: int, repeats: int) -> dict:
    snap = topology.build(synthetic_state(veths, containers))
    clock = iter(range(0, 10**9, 2))  # two seconds per call: the rates are computed every time
    page = TopologyPage(
        lambda: snap,
        None,
        link_stats=counters,
        host_addresses=list,
        clock=lambda: float(next(clock)),
    )
    collectors = [
        ContainersCollector(Context(procfs=Procfs()), link_stats=counters),
        VethsCollector(),
        BridgesCollector(),
        AddressesCollector(),
        OrphansCollector(),
    ]
    published = threading.Event()
    published.set()
    daemon = SimpleNamespace(
        snapshot=snap,
        published=published,
        sources={},
        events=Counter(),
        resyncs=Counter(),
        runtimes_up={},
        wait_first_read=lambda: None,
    )
    scraper = Scraper(daemon, collectors)  # type: ignore[arg-type]

    def metrics() -> str:
        snap.cache.clear()  # what a new snapshot costs, not the families kept from the last scrape
        return scraper.render()

    page_s, page_bytes = timed(lambda: page.respond("/topology").body, repeats)
    json_s, json_bytes = timed(lambda: page.respond("/topology.json").body, repeats)
    metrics_s, metrics_bytes = timed(metrics, repeats)
    return {
        "veths": len(snap.veths),
        "containers": len({i.container.id for i in snap.interfaces}),
        "page_ms": round(page_s * 1000, 2),
        "page_bytes": page_bytes,
        "json_ms": round(json_s * 1000, 2),
        "json_bytes": json_bytes,
        "metrics_ms": round(metrics_s * 1000, 2),
        "metrics_bytes": metrics_bytes,
    }


class OpenPage(threading.Thread):
    """A browser with /topology open: the page, then the fragment every REFRESH_SECONDS, each on
    a new connection."""

    def __init__(self, port: int, interval: float = REFRESH_SECONDS) -> None:
        super().__init__(name="open-page", daemon=True)
        self.port, self.interval = port, interval
        self.stopping = threading.Event()
        self.requests = 0

    def get(self, path: str) -> bytes:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            body = response.read()
            if response.status != 200:
                raise RuntimeError(f"GET {path}: HTTP {response.status}")
            self.requests += 1
            return body
        finally:
            conn.close()

    def run(self) -> None:
        self.get("/topology")
        while not self.stopping.wait(self.interval):
            self.get("/topology?fragment=1")


def scrapes(ours: Exporter, seconds: float) -> list[float]:
    times, deadline = [], time.monotonic() + seconds
    while time.monotonic() < deadline:
        times.append(ours.scrape()[0])
        time.sleep(SCRAPE_INTERVAL)
    return times


def live_costs(ours: Exporter, seconds: float) -> dict:
    alone = scrapes(ours, seconds)
    page = OpenPage(ours.port, min(REFRESH_SECONDS, seconds / 5))
    page.start()
    try:
        beside = scrapes(ours, seconds)
    finally:
        page.stopping.set()
        page.join()
    return {
        "seconds": seconds,
        "alone_ms": round(median(alone) * 1000, 2),
        "alone_p90_ms": round(percentile(alone, 90) * 1000, 2),
        "page_open_ms": round(median(beside) * 1000, 2),
        "page_open_p90_ms": round(percentile(beside, 90) * 1000, 2),
        "page_requests": page.requests,
        "scrapes": len(alone) + len(beside),
    }


def run(ours: Exporter, veths: int, containers: int, repeats: int, seconds: float) -> dict:
    pure = render_costs(veths, containers, repeats)
    live = live_costs(ours, seconds)
    ratio = pure["page_ms"] / pure["metrics_ms"]
    slowdown = live["page_open_ms"] / live["alone_ms"]
    return {
        **pure,
        "page_vs_metrics": round(ratio, 2),
        "live": live,
        "checks": [
            check(
                f"topology page, {veths} veths ({containers} containers)",
                pure["page_ms"],
                "ms",
                f"<= {RENDER_TARGET_MS} ms",
                pure["page_ms"] <= RENDER_TARGET_MS,
                f"/metrics of the same snapshot {pure['metrics_ms']} ms: {ratio:.2f}x",
            ),
            check(
                "/metrics while the page is open",
                round(slowdown, 2),
                "x",
                f"<= {SLOWDOWN_TARGET:g}x",
                slowdown <= SLOWDOWN_TARGET,
                f"median {live['page_open_ms']} ms against {live['alone_ms']} ms alone",
            ),
        ],
    }
