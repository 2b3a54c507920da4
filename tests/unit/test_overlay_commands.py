"""`veths`, `bridges` and `ips` on the recorded single-node swarm (tests/fixtures/overlay): each
overlay container interface with its veth on br0 in the overlay's namespace, each overlay's br0 with
its ports and VXLAN device, the overlay addresses with their network. Checked against the recorded
links themselves, not the join's own answer."""

from __future__ import annotations

import dataclasses

import pytest
from test_overlay_recorded import load, recorded_state

from exporter.commands import bridges, ips, veths
from exporter.commands.base import format_table
from exporter.core import topology
from exporter.core.model import Address

OV_NETNS = "1-wxp0shoh5j"  # the file of `ov`'s namespace in the recording
LB_NSID = 3  # the id of lb_wxp0shoh5's namespace there


@pytest.fixture(scope="module")
def state():
    return recorded_state()


@pytest.fixture(scope="module")
def snap(state):
    return topology.build(state)


def c1(state):
    return next(c for c in state.containers.values() if c.name == "c1")


def overlay_links(state):
    nsid = load("identities.json")["netns_files"][OV_NETNS][1]
    return state.netns_links[nsid]


def test_veths_lists_the_overlay_eth0_with_its_veth_on_br0_in_the_overlay_namespace(state, snap):
    c = c1(state)
    eth0 = next(l for l in state.netns_links[c.nsid].values() if l.name == "eth0")
    links = overlay_links(state)
    br0 = next(l for l in links.values() if l.name == "br0")
    # The recorded veth whose peer is c1's eth0: its namespace's id and ifindex there.
    (veth,) = [
        l for l in links.values() if l.peer_netnsid == c.nsid and l.peer_ifindex == eth0.ifindex
    ]
    rows = [r for r in veths.rows(snap) if r["container_id"] == c.id]
    assert {(r["interface"], r["netns"], r["bridge"], r["network"]) for r in rows} == {
        ("eth0", OV_NETNS, "br0", "ov"),
        ("eth1", "", "docker_gwbridge", "docker_gwbridge"),
    }
    (overlay_row,) = [r for r in rows if r["netns"]]
    assert overlay_row["veth"] == veth.name and veth.master == br0.ifindex
    assert overlay_row["netns_path"] == f"{load('identities.json')['exec_root']}/netns/{OV_NETNS}"


def test_veths_lists_swarms_own_endpoints_on_br0_without_a_container(state, snap):
    links = overlay_links(state)
    (lb,) = [l.name for l in links.values() if l.peer_netnsid == LB_NSID]
    rows = {r["veth"]: r for r in veths.rows(snap) if r["netns"] == OV_NETNS}
    on_br0 = {l.name for l in links.values() if l.kind == "veth"}
    assert set(rows) == on_br0
    assert rows[lb]["container_id"] == rows[lb]["interface"] == ""
    # Named as `docker network inspect ov` lists it among the network's containers.
    assert rows[lb]["sandbox"] == "lb-ov"
    assert [r["sandbox"] for r in rows.values() if r["container_id"]] == [None] * (len(rows) - 1)
    line = next(
        l
        for l in format_table(veths.COLUMNS, veths.table_rows(list(rows.values()))).splitlines()
        if l.startswith(lb + " ")
    )
    assert "(lb-ov)" in line.split()


def test_the_ingress_sandboxs_gateway_veth_is_named_in_the_host_too(snap):
    host = [r for r in veths.rows(snap) if not r["netns"] and r["bridge"] == "docker_gwbridge"]
    assert sorted((r["container_name"], r["sandbox"]) for r in host if not r["container_id"]) == [
        ("", "ingress-sbox")
    ]
    gwbridge = next(b for b in bridges.rows(snap) if b["bridge"] == "docker_gwbridge")
    assert [p["sandbox"] for p in gwbridge["ports"] if p["sandbox"]] == ["ingress-sbox"]
    rows = bridges.table_rows([gwbridge])
    assert [r["container_name"] for r in rows if r["sandbox"]] == ["(ingress-sbox)"]


def test_the_veths_table_names_the_namespace(state, snap):
    table = format_table(veths.COLUMNS, veths.rows(snap)).splitlines()
    assert table[0].split()[:2] == ["VETH", "NETNS"]
    c = c1(state)
    assert any(
        line.split()[:3] == [r["veth"], OV_NETNS, c.id] and "eth0" in line
        for line in table
        for r in veths.rows(snap)
        if r["container_id"] == c.id and r["netns"]
    )


def test_bridges_lists_each_overlay_br0_with_its_vxlan_device_and_endpoints(state, snap):
    links = overlay_links(state)
    br0 = next(l for l in links.values() if l.name == "br0")
    ov = next(b for b in bridges.rows(snap) if b["netns"] == OV_NETNS)
    network = next(n for n in load("networks.json") if n["Name"] == "ov")
    assert (ov["bridge"], ov["network"], ov["id"], ov["state"]) == (
        "br0",
        "ov",
        br0.bridge_id,
        "up",
    )
    assert ov["vni"] == network["Options"]["com.docker.network.driver.overlay.vxlanid_list"]
    ports = {p["port"]: p for p in ov["ports"]}
    assert set(ports) == {l.name for l in links.values() if l.master == br0.ifindex}
    assert ports["vxlan0"]["kind"] == "vxlan" and ov["vxlan"] == {"name": "vxlan0", "mtu": 1450}
    c = c1(state)
    mine = [p for p in ports.values() if p["container_id"] == c.id]
    assert [(p["kind"], p["interface"]) for p in mine] == [("veth", "eth0")]
    assert [p["sandbox"] for p in ports.values() if p["sandbox"]] == ["lb-ov"]
    host = {b["bridge"] for b in bridges.rows(snap) if not b["netns"]}
    assert "br0" not in host and "docker_gwbridge" in host


def test_the_bridges_table_puts_the_namespace_and_vni_on_the_first_port_line(snap):
    rows = bridges.table_rows(bridges.rows(snap))
    first = [r for r in rows if r.get("netns") == OV_NETNS]
    assert len(first) == 1 and first[0]["vni"] == "4097"
    assert "vxlan" not in first[0]  # the JSON's nested device is not a column


def test_ips_names_the_overlay_network_of_an_overlay_address(state):
    c = c1(state)
    eth0 = next(l for l in state.netns_links[c.nsid].values() if l.name == "eth0")
    (ov,) = [ep for ep in c.endpoints if ep.network == "ov"]
    state = dataclasses.replace(
        state, netns_addresses={c.nsid: (Address(eth0.ifindex, "ipv4", ov.ipv4, 24),)}
    )
    (row,) = ips.rows(topology.build(state))
    assert (row["container_name"], row["interface"], row["network"]) == ("c1", "eth0", "ov")
    assert row["address"] == f"{ov.ipv4}/24"
    assert "NETWORK" in format_table(ips.COLUMNS, [row]).splitlines()[0]
