"""Bridge and address metrics, and the `bridges` / `ips` rows, from the
recorded host and synthetic namespaces."""

from __future__ import annotations

import dataclasses

from recorded import by_name, recorded_state

from exporter.commands import bridges as bridges_cmd
from exporter.commands import ips as ips_cmd
from exporter.core import topology
from exporter.core.model import Address, Link
from exporter.metrics.collectors.addresses import AddressesCollector
from exporter.metrics.collectors.bridges import BridgesCollector
from exporter.metrics.exposition import render


def test_bridge_metrics_of_the_recorded_host():
    state = recorded_state()
    state.links[90] = Link(90, "dnx-br", kind="bridge", operstate="down")
    text = render(BridgesCollector().collect(topology.build(state)))
    assert (
        'dockernet_bridge_info{bridge="docker0",network="bridge",driver="bridge",'
        'subnet="198.18.0.0/24",gateway="198.18.0.1"} 1\n'
    ) in text
    assert (
        'dockernet_bridge_info{bridge="dnx-br",network="",driver="",subnet="",gateway=""} 1\n'
        in text
    )
    assert 'dockernet_bridge_up{bridge="docker0"} 1\n' in text
    assert 'dockernet_bridge_up{bridge="dnx-br"} 0\n' in text
    assert 'dockernet_bridge_ports{bridge="docker0"} 2\n' in text
    assert 'dockernet_bridge_ports{bridge="dnx-br"} 0\n' in text
    assert (
        'dockernet_bridge_port_state{bridge="docker0",veth="vethcaaf5d3",state="forwarding"} 1\n'
        in text
    )
    assert (
        'dockernet_bridge_port_state{bridge="br-b968fc8dede5",veth="veth52fcfaa",state="forwarding"} 1\n'
        in text
    )


def test_ipv4_and_ipv6_subnets_are_separate_series():
    state = recorded_state()
    net = next(n for n in state.networks.values() if n.name == "tnet")
    state.networks[net.id] = dataclasses.replace(
        net, subnets=net.subnets + (("fd00:dead:beef::/64", "fd00:dead:beef::1"),)
    )
    text = render(BridgesCollector().collect(topology.build(state)))
    assert text.count('dockernet_bridge_info{bridge="br-b968fc8dede5",network="tnet"') == 2
    assert 'subnet="fd00:dead:beef::/64",gateway="fd00:dead:beef::1"} 1\n' in text


def test_bridges_command_nests_ports_with_their_containers():
    rows = {b["bridge"]: b for b in bridges_cmd.rows(topology.build(recorded_state()))}
    t1 = by_name()["t1"]["Id"]
    assert rows["docker0"]["network"] == "bridge" and rows["docker0"]["stp"] == "no"
    assert rows["docker0"]["id"].startswith("8000.")
    assert {
        (p["port"], p["container_id"], p["interface"], p["port_state"])
        for p in rows["docker0"]["ports"]
    } >= {("vethcaaf5d3", t1, "eth0", "forwarding")}
    table = bridges_cmd.table_rows([rows["docker0"]])
    assert table[0]["bridge"] == "docker0" and "bridge" not in table[1]


def test_addresses_come_from_the_container_namespace_by_ifindex():
    state = recorded_state()
    t2 = by_name()["t2"]
    nsid = next(c.nsid for c in state.containers.values() if c.id == t2["Id"])
    assert nsid is not None
    eth = {l.name: l.ifindex for l in state.netns_links[nsid].values()}
    state.netns_addresses[nsid] = (
        Address(1, "ipv4", "127.0.0.1", 8),
        Address(eth["eth0"], "ipv4", "198.19.0.2", 24),
        Address(eth["eth0"], "ipv6", "fe80::42:c6ff:fe13:2", 64),
        Address(eth["eth1"], "ipv4", "198.18.0.3", 24),
    )
    snap = topology.build(state)
    text = render(AddressesCollector().collect(snap))
    mac = t2["NetworkSettings"]["Networks"]["tnet"]["MacAddress"]
    assert (
        f'dockernet_container_address_info{{container_id="{t2["Id"]}",container_name="t2",interface="eth0",'
        f'network="tnet",family="ipv4",address="198.19.0.2",prefix_length="24",mac="{mac}"}} 1\n'
    ) in text
    assert 'family="ipv6",address="fe80::42:c6ff:fe13:2",prefix_length="64"' in text
    assert "127.0.0.1" not in text  # lo is no interface of the container's networks
    rows = [r for r in ips_cmd.rows(snap) if r["container_name"] == "t2"]
    assert [(r["interface"], r["address"]) for r in rows] == [
        ("eth0", "198.19.0.2/24"),
        ("eth0", "fe80::42:c6ff:fe13:2/64"),
        ("eth1", "198.18.0.3/24"),
    ]
