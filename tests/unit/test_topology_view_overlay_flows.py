"""The overlays and the flows on /topology.json, the page and the tree: the recorded single-node
swarm (tests/fixtures/overlay) with remote VTEPs given, and flows series made by hand (a container
talking to another, one port left unanswered, the host, a hostile name)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import pytest
from test_overlay_recorded import recorded_state
from test_topology_view import Counting, host

from exporter.commands.topology import tree
from exporter.core import topology
from exporter.core.flow_peers import HOST_PEER, Peer
from exporter.views import flows as flows_view
from exporter.views.document import Options, document
from exporter.views.flows import Reading, opened, opened_rates
from exporter.views.page import TopologyPage
from exporter.views.rates import Readings
from exporter.views.render import render, render_main

XSS = "<img src=x onerror=alert(1)>"
WEB, DB = Peer("web", "shop"), Peer("db", "shop")
EVIL = Peer(XSS, '"><script>x</script>')
# (source, destination, protocol, port) -> opened, unanswered, open (and the byte columns)
ROWS = (
    ((WEB, DB, "tcp", "5432"), [10, 0, 2, 0, 0, 0, 0]),
    ((WEB, DB, "tcp", "81"), [3, 3, 0, 0, 0, 0, 0]),
    ((HOST_PEER, WEB, "tcp", "80"), [1, 0, 0, 0, 0, 0, 0]),
    ((EVIL, DB, "udp", ""), [1, 0, 1, 0, 0, 0, 0]),
)


@pytest.fixture(scope="module")
def swarm() -> topology.Snapshot:
    return topology.build(recorded_state())


def names(snap: topology.Snapshot) -> dict[str, str]:
    """network name -> its overlay namespace's name."""
    return {ns.network_name: ns.name for ns in snap.overlays}


# veth on br0 -> the HTML of its endpoint: up to the next one or the end of the overlay.
ENDPOINT = r'<div class="endpoint" data-endpoint="([^"]+)">(.*?)(?=<div class="endpoint|</section>)'


def overlay_html(html: str, network: str) -> str:
    (found,) = re.findall(
        rf'<section class="overlay" data-overlay="{network}">.*?</section>', html, re.S
    )
    return found


def test_each_overlay_is_drawn_with_its_vxlan_device_peers_and_containers(swarm):
    peers = {names(swarm)["ov"]: ("198.18.250.2", "198.18.250.3"), names(swarm)["ingress"]: ()}
    doc = document(swarm, 0.0, Options(peers=peers))
    ov = next(o for o in doc["overlays"] if o["network"] == "ov")
    assert ov["peers"] == ["198.18.250.2", "198.18.250.3"]
    html = overlay_html(render(doc), "ov")
    assert "VNI 4097" in html and '<span class="ifname vxlan">vxlan0</span> mtu 1450' in html
    assert '<span class="peer">198.18.250.2</span> <span class="peer">198.18.250.3</span>' in html
    endpoints = dict(re.findall(ENDPOINT, html, re.S))
    assert len(endpoints) == len(ov["endpoints"]) == 5
    for e in ov["endpoints"]:
        drawn = endpoints[e["veth"]]
        if e["container_name"] is None:
            assert f'<span class="sandbox">{e["sandbox"]}</span>: Swarm' in drawn
            assert e["sandbox"] == "lb-ov"
        else:  # the container's namespace, its own interface on the overlay, its name
            assert f'<div class="ns" data-ns="{e["container_id"]}">' in drawn
            assert f'<span class="ifname">{e["interface"]}</span>' in drawn
            assert f'<span class="cname">{e["container_name"]}</span>' in drawn
    assert "no peers (no other node on this network)" in overlay_html(render(doc), "ingress")


def test_peers_not_read_are_said_so_and_a_peer_change_is_a_new_revision(swarm):
    unread = document(swarm, 0.0)
    assert {o["peers"] for o in unread["overlays"]} == {None}
    assert "peers not read (overlay collector off)" in overlay_html(render_main(unread), "ov")
    ov = names(swarm)["ov"]
    one = document(swarm, 0.0, Options(peers={ov: ("198.18.250.2",)}))
    two = document(swarm, 0.0, Options(peers={ov: ("198.18.250.2", "198.18.250.3")}))
    assert len({unread["revision"], one["revision"], two["revision"]}) == 3
    assert "peers 198.18.250.2 198.18.250.3" in tree(two)


BRIDGED = topology.build(host())  # one snapshot: only the flows differ between documents


def flows_doc(reading: Reading | None) -> dict:
    return document(BRIDGED, 0.0, Options(flows=reading))


def test_flow_edges_carry_the_series_and_their_rates():
    rates = {(WEB, DB, "tcp", "5432"): 2.5}
    doc = flows_doc(Reading(ROWS, rates))
    assert doc["flows"]["following"] and doc["flows"]["error"] is None
    edges = {(e["source"], e["destination"], e["port"]): e for e in doc["flows"]["edges"]}
    assert edges[("web", "db", "5432")] == {
        "source": "web",
        "source_namespace": "shop",
        "source_kind": "workload",
        "destination": "db",
        "destination_namespace": "shop",
        "destination_kind": "workload",
        "protocol": "tcp",
        "port": "5432",
        "open": 2,
        "opened_total": 10,
        "opened_per_second": 2.5,
        "unanswered_total": 0,
    }
    assert edges[("web", "db", "81")]["unanswered_total"] == 3
    assert edges[("web", "db", "81")]["opened_per_second"] is None  # one reading: no rate yet
    assert edges[("host", "web", "80")]["source_kind"] == "host"


def rows_of(html: str) -> list[str]:
    return re.findall(r'<tr class="flow[^"]*" data-flow="\d+">.*?</tr>', html, re.S)


def test_the_page_draws_each_edge_unanswered_ones_red_and_names_as_text():
    html = render(flows_doc(Reading(ROWS, {(WEB, DB, "tcp", "5432"): 2.5})))
    drawn = rows_of(html)
    assert len(drawn) == 4
    (red,) = [r for r in drawn if 'class="flow unanswered"' in r]
    assert "tcp/81" in red and '<span class="peername peer-workload">web</span>' in red
    (fast,) = [r for r in drawn if "tcp/5432" in r]
    assert '<td data-live="rate">2.5/s</td>' in fast
    assert XSS not in html and "&lt;img src=x onerror=alert(1)&gt;" in html
    assert "<script>x" not in html and "&#34;&gt;&lt;script&gt;x" in html


def test_flows_off_failing_or_quiet_are_three_different_things():
    off = flows_doc(None)
    assert off["flows"] is None
    assert "runs without --collector.flows" in render_main(off)
    failed = flows_doc(Reading(error="the conntrack table is not read yet"))
    assert failed["flows"] == {
        "following": False,
        "error": "the conntrack table is not read yet",
        "edges": [],
    }
    assert "Flows are not followed now: the conntrack table is not read yet" in render_main(failed)
    quiet = flows_doc(Reading())
    assert quiet["flows"] == {"following": True, "error": None, "edges": []}
    assert "No connection involving a workload seen" in render_main(quiet)
    assert len({off["revision"], failed["revision"], quiet["revision"]}) == 3


def test_figures_change_in_place_edges_and_red_ones_change_the_revision():
    def rev(rows: Any) -> str:
        return flows_doc(Reading(rows))["revision"]

    busier = tuple((k, [v[0] + 5, v[1], v[2] + 1, 0, 0, 0, 0]) for k, v in ROWS)
    assert rev(ROWS) == rev(busier)
    assert rev(ROWS) != rev(ROWS[:3])
    now_red = ((ROWS[0][0], [10, 1, 2, 0, 0, 0, 0]), *ROWS[1:])
    assert rev(ROWS) != rev(now_red)


def test_opened_rates_between_readings_a_second_apart():
    key = ROWS[0][0]
    rates: Readings[dict, dict] = Readings(1.0, opened_rates, {})

    def update(rows: list, now: float) -> dict:
        return rates.update(now, lambda: opened(rows))

    assert update([(key, [10, 0, 0])], 0.0) == {}
    assert update([(key, [20, 0, 0])], 0.5) == {}  # too soon: the previous rates
    assert update([(key, [30, 0, 0])], 2.0) == {key: 10.0}
    assert update([(key, [30, 0, 0]), (ROWS[1][0], [3, 3, 0])], 4.0) == {key: 0.0}
    assert update([(key, [25, 0, 0])], 6.0) == {}  # went back: dropped and made again


class Peers:
    """Remote VTEPs by namespace file; a namespace gone raises as the sockets do."""

    def __init__(self, found: dict[str, set[str]]) -> None:
        self.found = found
        self.asked: list[tuple[str, int]] = []

    def __call__(self, path: str, ifindex: int) -> Iterable[str]:
        self.asked.append((path, ifindex))
        if path not in self.found:
            raise FileNotFoundError(path)
        return self.found[path]


def test_page_model_reads_peers_and_flows_and_rates_the_flows(swarm):
    now = [0.0]
    ov = next(ns for ns in swarm.overlays if ns.network_name == "ov")
    peers = Peers({ov.path: {"198.18.250.3", "198.18.250.2"}})
    key, opened = ROWS[0][0], [10]
    page = TopologyPage(
        lambda: swarm,
        None,
        link_stats=Counting(),
        host_addresses=list,
        overlay_peers=peers,
        flows=lambda snap: [(key, [opened[0], 0, 1, 0, 0, 0, 0])],
        clock=lambda: now[0],
    )
    doc = page.document()
    assert {o["network"]: o["peers"] for o in doc["overlays"]} == {
        "ov": ["198.18.250.2", "198.18.250.3"],
        "ingress": None,  # its namespace went away meanwhile
    }
    assert (ov.path, ov.vxlan.ifindex) in peers.asked
    assert doc["flows"]["edges"][0]["opened_per_second"] is None
    now[0], opened[0] = 2.0, 16
    assert page.document()["flows"]["edges"][0]["opened_per_second"] == 3.0

    def not_followed(_snap: topology.Snapshot) -> flows_view.Rows:
        raise RuntimeError("the flows collector is not started")

    page.flows = not_followed
    assert page.document()["flows"]["following"] is False


def test_the_tree_lists_the_edges_when_asked_and_says_why_not_read():
    lines = tree(flows_doc(Reading(ROWS))).splitlines()
    at = lines.index("flows (connections in the conntrack table now)")
    assert lines[at + 1 : at + 6] == [
        f"  {EVIL.namespace}/{EVIL.name} -> shop/db udp/: open 1",
        "  host -> shop/web tcp/80: open 0",
        "  shop/web -> shop/db tcp/5432: open 2",
        "  !! shop/web -> shop/db tcp/81: open 0, unanswered 3",
        "orphans",
    ]
    assert "flows" not in tree(flows_doc(None))
    failed = tree(flows_doc(Reading(error="cannot read the conntrack table: EPERM")))
    assert "flows: not read: cannot read the conntrack table: EPERM" in failed.splitlines()
    quiet = tree(flows_doc(Reading())).splitlines()
    at = quiet.index("flows (connections in the conntrack table now)")
    assert quiet[at + 1] == "  none"
