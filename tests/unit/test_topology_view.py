"""The topology document, page and tree from a hand-made host: two networks, a container on both,
a shared namespace, host-network and no-network containers, published ports with and without
their DNAT rule, an orphan, and a hostile compose label."""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import re
from collections.abc import Collection
from typing import Any

from exporter.commands.topology import tree
from exporter.core import topology
from exporter.core.model import Address, Endpoint, HostState, Link, Network, PortBinding, Workload
from exporter.sources.firewall.rules import DNAT, IPV4, MASQUERADE, NatRule, Ruleset
from exporter.views import document as topology_view
from exporter.views import render as topology_page
from exporter.views.document import Options, Rates, document, rates_between
from exporter.views.page import TopologyPage
from exporter.views.render import render, render_main

XSS = "<img src=x onerror=alert(1)>"
WEB_PORT = PortBinding("tcp", 80, "0.0.0.0", 8080)
GONE_PORT = PortBinding("tcp", 81, "0.0.0.0", 8081)
NETWORKS = (
    Network("n1", "bridge", "bridge", "docker0", (("198.18.0.0/24", "198.18.0.1"),)),
    Network("n2", "back", "bridge", "br-back", (("198.19.1.0/24", "198.19.1.1"),)),
)


def ctr(name: str, nsid: int | None, inode: int, mode: str = "bridge", **kw: Any) -> Workload:
    kw.setdefault("image", "busybox")
    return Workload(
        id=name * 8,
        name=name,
        pid=100 + inode,
        network_mode=mode,
        netns_inode=inode,
        nsid=nsid,
        started_at=f"2026-01-01T00:00:0{inode % 10}Z",
        **kw,
    )


def ep(network: str, mac: str, ip: str) -> Endpoint:
    net = {n.name: n for n in NETWORKS}[network]
    return Endpoint(network, net.id, mac=mac, ipv4=ip, ipv4_prefix=24)


WEB = ctr(
    "web",
    0,
    11,
    endpoints=(ep("bridge", "02:42:00:00:00:02", "198.18.0.2"),),
    ports=(WEB_PORT, GONE_PORT),
    compose_project=XSS,
)
BOTH = ctr(
    "both",
    1,
    12,
    endpoints=(
        ep("bridge", "02:42:00:00:00:03", "198.18.0.3"),
        ep("back", "02:42:00:00:01:02", "198.19.1.2"),
    ),
)
SIDECAR = ctr("sidecar", 1, 12, mode=f"container:{'both' * 8}")
HOSTNET = ctr("hostnet", None, 1, mode="host")
NONET = ctr("nonet", 2, 13, mode="none")


def veth(ifindex: int, name: str, master: int, peer: int, nsid: int | None) -> Link:
    return Link(
        ifindex,
        name,
        kind="veth",
        master=master,
        peer_ifindex=peer,
        peer_netnsid=nsid,
        operstate="up",
    )


def inner(ifindex: int, name: str, mac: str, peer: int) -> Link:
    return Link(ifindex, name, kind="veth", mac=mac, peer_ifindex=peer, peer_netnsid=0)


def host(extra: tuple[Workload, ...] = ()) -> HostState:
    links = [
        Link(1, "lo"),
        Link(2, "eth0", operstate="up"),
        Link(5, "docker0", kind="bridge", operstate="up"),
        Link(6, "br-back", kind="bridge", operstate="up"),
        veth(10, "vethweb0000", 5, 2, 0),
        veth(11, "vethboth000", 5, 2, 1),
        veth(12, "vethboth001", 6, 3, 1),
        veth(13, "vethleak000", 5, 14, None),  # both ends in the host: an orphan
        Link(14, "vethleak001", kind="veth", peer_ifindex=13),
    ]
    containers = (WEB, BOTH, SIDECAR, HOSTNET, NONET) + extra
    return HostState(
        links={l.ifindex: l for l in links},
        containers={c.id: c for c in containers},
        netns_links={
            0: {2: inner(2, "eth0", "02:42:00:00:00:02", 10)},
            1: {
                2: inner(2, "eth0", "02:42:00:00:00:03", 11),
                3: inner(3, "eth1", "02:42:00:00:01:02", 12),
            },
            2: {1: Link(1, "lo")},
        },
        netns_addresses={
            0: (Address(2, "ipv4", "198.18.0.2", 24),),
            1: (Address(2, "ipv4", "198.18.0.3", 24), Address(3, "ipv4", "198.19.1.2", 24)),
        },
        networks={n.id: n for n in NETWORKS},
        host_netns_inode=1,
        runtimes_up={"docker": True},
    )


def rules() -> Ruleset:
    return Ruleset(
        "iptables-nft",
        [
            NatRule(IPV4, DNAT, protocol="tcp", dports=(8080, 8080), to_addr="198.18.0.2"),
            NatRule(IPV4, MASQUERADE, src="198.18.0.0/24", out_iface="docker0", out_negated=True),
        ],
        docker_families={IPV4},
    )


def doc_of(state: HostState | None = None, **options: Any) -> dict:
    snap = topology.build(state or host(), now=100.0)
    return document(snap, 100.0 + 60, Options(**({"rules": rules()} | options)))


def by_name(items: list[dict]) -> dict:
    return {i["name"]: i for i in items}


def test_bridges_hold_their_veths_with_the_namespace_at_the_other_end():
    doc = doc_of()
    bridges = by_name(doc["bridges"])
    assert [v["name"] for v in bridges["docker0"]["veths"]] == [
        "vethweb0000",
        "vethboth000",
        "vethleak000",
    ]
    assert [v["name"] for v in bridges["br-back"]["veths"]] == ["vethboth001"]
    assert (bridges["docker0"]["ports"], bridges["docker0"]["max_ports"]) == (3, 1023)
    assert bridges["docker0"]["network"] == "bridge" and bridges["br-back"]["network"] == "back"
    namespaces = {ns["id"]: ns for ns in doc["namespaces"]}
    web = bridges["docker0"]["veths"][0]
    assert web["namespace"] == WEB.id and web["interface"] == "eth0"
    (eth0,) = namespaces[WEB.id]["interfaces"]
    assert (eth0["veth"], eth0["veth_ifindex"], eth0["state"]) == ("vethweb0000", 10, "unknown")
    assert eth0["addresses"] == [{"family": "ipv4", "address": "198.18.0.2", "prefix_length": 24}]
    both = namespaces[BOTH.id]
    assert [i["name"] for i in both["interfaces"]] == ["eth0", "eth1"]
    assert {i["veth"] for i in both["interfaces"]} == {"vethboth000", "vethboth001"}


def test_shared_namespace_host_network_and_no_network_containers():
    doc = doc_of()
    namespaces = {ns["id"]: ns for ns in doc["namespaces"]}
    shared = namespaces[BOTH.id]
    assert shared["shared"] and [c["name"] for c in shared["containers"]] == ["both", "sidecar"]
    assert not namespaces[WEB.id]["shared"]
    assert [c["name"] for c in doc["host_network"]] == ["hostnet"]
    assert [c["name"] for c in doc["no_network"]] == ["nonet"]
    assert NONET.id not in namespaces and HOSTNET.id not in namespaces


def test_rules_present_missing_and_unknown():
    doc = doc_of()
    (web,) = [c for ns in doc["namespaces"] for c in ns["containers"] if c["name"] == "web"]
    assert [(p["host_port"], p["dnat"]) for p in web["ports"]] == [
        (8080, "present"),
        (8081, "missing"),
    ]
    bridges = by_name(doc["bridges"])
    assert bridges["docker0"]["subnets"][0]["masquerade"] == "present"
    assert bridges["br-back"]["subnets"][0]["masquerade"] == "missing"
    unread = doc_of(rules=None)
    assert not unread["nat_read"]
    (web,) = [c for ns in unread["namespaces"] for c in ns["containers"] if c["name"] == "web"]
    assert {p["dnat"] for p in web["ports"]} == {"unknown"}
    assert by_name(unread["bridges"])["docker0"]["subnets"][0]["masquerade"] == "unknown"


def test_orphans_with_reason_age_and_grace():
    doc = doc_of(grace=30.0)
    assert [(o["veth"], o["reason"], o["flagged"]) for o in doc["orphans"]] == [
        ("vethleak000", "peer_in_host", True),
        ("vethleak001", "peer_in_host", True),
    ]
    assert doc["orphans"][0]["age_seconds"] == 60.0 and doc["orphans"][0]["bridge"] == "docker0"
    assert [v["name"] for v in doc["unattached"]] == ["vethleak001"]
    assert not any(o["flagged"] for o in doc_of(grace=120.0)["orphans"])


def test_revision_ignores_rates_and_ages_and_follows_the_picture():
    snap = topology.build(host(), now=100.0)

    def rev(now: float = 160.0, **options: Any) -> str:
        return document(snap, now, Options(**({"rules": rules()} | options)))["revision"]

    same = document(snap, 160.0, Options(rules(), Rates({10: 5.0}, {10: 7.0})))
    assert by_name(same["bridges"])["docker0"]["veths"][0]["rx_bps"] == 5.0
    assert same["revision"] == rev() == rev(170.0)
    assert rev(grace=30.0) != rev(grace=120.0)  # the orphans become flagged
    assert rev(rules=None) != rev() != rev(rules=Ruleset("iptables-nft"))
    assert rev(host_addresses=(Address(2, "ipv4", "192.0.2.2", 24),)) != rev()
    extra = ctr("extra", None, 1, mode="host")
    assert doc_of(host((extra,)))["revision"] != rev()


def test_rates_between_two_reads_as_the_container_sees_them():
    before = {10: (100, 1, 0, 0, 1000, 10, 0, 0), 11: (50, 0, 0, 0, 50, 0, 0, 0)}
    after = {10: (300, 2, 0, 0, 1500, 12, 0, 0), 11: (0, 0, 0, 0, 0, 0, 0, 0), 12: (1,) * 8}
    r = rates_between(before, after, 2.0)
    assert r.rx == {10: 250.0} and r.tx == {10: 100.0}  # host tx is what the container receives
    assert rates_between(before, after, 0) == Rates()


def pairs(html: str) -> dict[str, str]:
    """veth name -> the HTML of its pair (host end, wire, far end): up to the next pair or the end
    of its bridge or section."""
    pair = (
        r'<div class="pair[^"]*" data-veth="([^"]+)">.*?(?=<div class="pair|</details>|</section>)'
    )
    return {m.group(1): m.group(0) for m in re.finditer(pair, html, re.S)}


def test_page_escapes_every_value_and_draws_each_veth_beside_its_container():
    html = render(doc_of())
    assert XSS not in html and "&lt;img src=x onerror=alert(1)&gt;" in html
    found = pairs(html)
    assert '<span class="cname">web</span>' in found["vethweb0000"]
    for name in ("vethboth000", "vethboth001"):
        assert "both</span>" in found[name] and "sidecar</span>" in found[name]
    assert "peer_in_host" in found["vethleak000"] and 'class="pair orphan"' in found["vethleak000"]
    assert 'class="apart hostnet"' in html and ">hostnet</span>" in html
    assert "DNAT missing" in html and "MASQUERADE present" in html


def test_hostile_names_stay_text_in_every_attribute():
    evil = '"><script>x</script>'
    odd = ctr(
        evil, None, 1, mode="host", image=f"'{evil}", compose_project="p", compose_service=evil
    )
    html = render_main(doc_of(host((odd,))))
    assert "<script>" not in html and "&#34;&gt;&lt;script&gt;" in html
    assert "&#39;" in html


def test_big_bridges_start_closed_and_the_policy_allows_only_the_page_own_script_and_style():
    links = {i: veth(i, f"veth{i:07x}", 5, 2, None) for i in range(100, 100 + 70)}
    state = host()
    state.links.update(links)
    html = render(doc_of(state))
    assert '<details class="bridge" data-bridge="docker0">' in html
    assert '<details class="bridge" data-bridge="br-back" open>' in html

    def sha(text: str) -> str:
        return base64.b64encode(hashlib.sha256(text.encode()).digest()).decode()

    (script,) = re.findall(r"<script>(.*?)</script>", html, re.S)
    (style,) = re.findall(r"<style>(.*?)</style>", html, re.S)
    assert f"'sha256-{sha(script)}'" in topology_page.CSP
    assert f"'sha256-{sha(style)}'" in topology_page.CSP
    assert "unsafe-inline" not in topology_page.CSP


def test_tree_shows_bridges_then_veths_then_containers():
    text = tree(doc_of())
    lines = text.splitlines()
    assert lines[0].startswith("br-back [up] network=back 198.19.1.0/24 gw 198.19.1.1")
    assert "masquerade=missing" in lines[0]
    assert lines[1] == "└── vethboth001 [up] <-> eth1 [unknown] 198.19.1.2/24"
    assert lines[2] == "    ├── both (busybox)  (shared namespace)"
    assert lines[3] == "    └── sidecar (busybox)"
    assert f"web (busybox) project={XSS} 0.0.0.0:8080->80/tcp dnat=present" in text
    assert "vethleak000 [up] !! ORPHAN peer_in_host" in text
    assert "host network\n└── hostnet (busybox)\nno network\n└── nonet (busybox)" in text
    assert "orphans\n  !! vethleak000 on docker0: peer_in_host" in text


class Counting:
    def __init__(self) -> None:
        self.calls = 0
        self.sent = 0

    def __call__(self, ifindexes: Collection[int]) -> dict:
        self.calls += 1
        self.sent += 1000
        return dict.fromkeys(ifindexes, (0, 0, 0, 0, self.sent, 0, 0, 0))


def test_page_model_reads_counters_at_most_once_a_second_and_serves_three_forms():
    now = [0.0]
    stats = Counting()
    page = TopologyPage(
        lambda: topology.build(host()),
        None,
        link_stats=stats,
        host_addresses=lambda: [Address(2, "ipv4", "192.0.2.2", 24)],
        clock=lambda: now[0],
    )
    page.document()
    now[0] = 0.5
    page.document()
    assert stats.calls == 1
    now[0] = 2.0
    doc = page.document()
    assert stats.calls == 2
    assert by_name(doc["bridges"])["docker0"]["veths"][0]["rx_bps"] == 500.0
    assert by_name(doc["interfaces"])["eth0"]["addresses"][0]["address"] == "192.0.2.2"
    full, fragment, data = (
        page.respond("/topology"),
        page.respond("/topology", "fragment=1"),
        page.respond("/topology.json"),
    )
    assert full.body.startswith(b"<!doctype html>") and "Content-Security-Policy" in full.headers
    assert fragment.body.startswith(b'<main id="topology"')
    assert data.content_type == "application/json" and json.loads(data.body)["schema"] == 1


def test_rate_units():
    assert [topology_page.rate(v) for v in (None, 12.4, 1500, 2.5e6, 3e9)] == [
        "\u2013",
        "12 B/s",
        "1.5 kB/s",
        "2.5 MB/s",
        "3.0 GB/s",
    ]
    assert topology_view.SCHEMA == 1


class CountingPage(TopologyPage):
    """A page that counts the documents it builds."""

    built = 0

    def _document(self, snap, now):
        self.built += 1
        return super()._document(snap, now)


def test_each_form_is_drawn_once_per_snapshot_and_rate_interval_and_served_to_every_visitor():
    now, snaps = [0.0], [topology.build(host())]
    page = CountingPage(lambda: snaps[0], None, link_stats=Counting(), clock=lambda: now[0])
    first = [page.respond("/topology") for _ in range(20)]
    assert page.built == 1 and all(r.body is first[0].body for r in first)
    packed = page.respond("/topology", gzip=True)
    assert packed.headers["Content-Encoding"] == "gzip"
    assert gzip.decompress(packed.body) == first[0].body
    assert "Content-Encoding" not in first[0].headers
    assert (
        page.respond("/topology.json").body
        == json.dumps(page.document(), ensure_ascii=False).encode()
    )
    assert page.built == 2  # the call of document() above, not the JSON form
    now[0] = 0.9
    assert page.respond("/topology").body is first[0].body and page.built == 2
    now[0] = 1.0  # the rates interval is over: rates and ages drawn anew
    assert page.respond("/topology").body is not first[0].body and page.built == 3
    snaps[0] = topology.build(host((ctr("late", None, 1, mode="host"),)))  # a new snapshot
    assert b"late" in page.respond("/topology", "fragment=1").body and page.built == 4
