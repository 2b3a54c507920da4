"""The one-shot commands on a single-node swarm: `veths`, `ips`, `bridges` and `netns visible` show
the overlay container's interface, the overlay's namespace, its br0 and VXLAN device, checked
against `ip -j -d link` and `brctl show` run inside that namespace (`nsenter --net=<exec
root>/netns/<file>`) and against `docker network inspect`.

The swarm runs on a dockerd of its own in a network namespace of its own (tests/swarm_helpers.py,
the fixture of test_overlay.py); the commands run in that namespace with that node's socket and
exec root."""

from __future__ import annotations

import json
import os
from typing import Any

import test_overlay
from swarm_helpers import Node

from helpers import EXPORTER, sh

# The single-node swarm of test_overlay.py: an attachable overlay `ov` with c1 and c2, a service on
# it publishing a port (Swarm's routing mesh). This module gets a swarm of its own from it.
swarm = test_overlay.swarm


def cli(node: Node, *args: str, check: bool = True) -> str:
    return node.nsenter(
        *EXPORTER,
        f"--docker.host={node.socket}",
        f"--docker.exec-root={node.exec_root}",
        "--podman.host=",
        "--cri.endpoint=",
        *args,
        check=check,
    )


def cli_json(node: Node, *args: str) -> Any:
    return json.loads(cli(node, *args, "--output=json"))


def ov(node: Node) -> tuple[dict, str, dict[str, dict]]:
    """`ov`'s inspect, its namespace's file name, and that namespace's links by name as `ip -j -d
    link` run inside it shows them."""
    network = node.inspect("network", "ov")
    netns = node.overlay_netns(network["Id"])
    links = json.loads(node.nsenter("ip", "-j", "-d", "link", netns=netns))
    return network, netns, {l["ifname"]: l for l in links}


def kind(link: dict) -> str:
    return link.get("linkinfo", {}).get("info_kind", "")


def test_veths_shows_the_overlay_eth0_and_its_veth_on_br0_in_the_overlay_namespace(swarm):
    network, netns, links = ov(swarm)
    c1 = swarm.inspect("container", "c1")
    eth0 = int(swarm.exec("c1", "cat", "/sys/class/net/eth0/ifindex"))
    iflink = int(swarm.exec("c1", "cat", "/sys/class/net/eth0/iflink"))
    (veth,) = [l for l in links.values() if l["ifindex"] == iflink]
    assert (veth["link_index"], veth["master"], kind(veth)) == (eth0, "br0", "veth")

    rows = [r for r in cli_json(swarm, "veths") if r["container_id"] == c1["Id"]]
    (row,) = [r for r in rows if r["netns"]]
    assert (row["veth"], row["netns"], row["interface"], row["bridge"], row["network"]) == (
        veth["ifname"],
        netns,
        "eth0",
        "br0",
        network["Name"],
    )
    assert row["netns_path"] == f"{swarm.exec_root}/netns/{netns}"
    assert {r["bridge"] for r in rows if not r["netns"]} == {"docker_gwbridge"}  # its eth1
    # Every veth on br0 is listed, Swarm's lb_ sandbox's too (with no container).
    listed = {r["veth"]: r for r in cli_json(swarm, "veths") if r["netns"] == netns}
    assert set(listed) == {
        n for n, l in links.items() if kind(l) == "veth" and l.get("master") == "br0"
    }
    # The sandbox named as Docker lists it among the network's containers.
    assert {r["sandbox"] for r in listed.values() if not r["container_id"]} == {
        k for k in network["Containers"] if k.startswith("lb-")
    }
    table = cli(swarm, "veths").splitlines()
    assert table[0].split()[:2] == ["VETH", "NETNS"]
    assert any(
        line.split()[:4] == [veth["ifname"], netns, c1["Id"][:12], "c1"] and "eth0" in line
        for line in table
    )


def test_ips_shows_the_overlay_address_with_the_overlays_name(swarm):
    network, _netns, _links = ov(swarm)
    c1 = swarm.inspect("container", "c1")
    docker_says = network["Containers"][c1["Id"]]["IPv4Address"]
    rows = [r for r in cli_json(swarm, "ips") if r["container_id"] == c1["Id"]]
    assert [(r["interface"], r["network"]) for r in rows if r["address"] == docker_says] == [
        ("eth0", "ov")
    ]
    inside = swarm.exec("c1", "ip", "addr", "show", "eth0")
    assert f"inet {docker_says} " in inside
    table = cli(swarm, "ips").splitlines()
    assert "NETWORK" in table[0].split()
    assert any(line.split()[-3:] == ["eth0", "ov", docker_says] for line in table)


def test_bridges_shows_the_overlays_br0_with_its_ports_and_the_vxlan_device(swarm):
    network, netns, links = ov(swarm)
    vxlan = next(l for l in links.values() if kind(l) == "vxlan")
    vni = network["Options"]["com.docker.network.driver.overlay.vxlanid_list"]
    assert str(vxlan["linkinfo"]["info_data"]["id"]) == vni
    first, *more = swarm.nsenter("brctl", "show", "br0", netns=netns).splitlines()[1:]
    _name, bridge_id, stp, *port = first.split()

    (br0,) = [b for b in cli_json(swarm, "bridges") if b["netns"] == netns]
    assert (br0["bridge"], br0["id"], br0["stp"], br0["network"], br0["vni"]) == (
        "br0",
        bridge_id,
        stp,
        "ov",
        vni,
    )
    assert br0["state"] == links["br0"]["operstate"].lower()
    assert sorted(p["port"] for p in br0["ports"]) == sorted(port + [l.strip() for l in more])
    assert br0["vxlan"] == {"name": vxlan["ifname"], "mtu": vxlan["mtu"]}
    ports = {p["port"]: p for p in br0["ports"]}
    assert ports[vxlan["ifname"]]["kind"] == "vxlan"
    for name in ("c1", "c2"):
        iflink = int(swarm.exec(name, "cat", "/sys/class/net/eth0/iflink"))
        (veth,) = [n for n, l in links.items() if l["ifindex"] == iflink]
        assert (ports[veth]["container_name"], ports[veth]["interface"]) == (name, "eth0")
    table = cli(swarm, "bridges").splitlines()
    assert table[0].split()[:2] == ["BRIDGE", "NETNS"]
    assert any(line.split()[:2] == ["br0", netns] and vni in line.split() for line in table)


def test_netns_visible_links_the_overlay_and_swarms_namespaces_for_ip_netns(swarm):
    network, netns, links = ov(swarm)
    lb = f"lb_{network['Id'][:9]}"
    try:
        # (Links recorded for containers of another dockerd are judged gone here: not these rows.)
        rows = {
            r["name"]: r
            for r in cli_json(swarm, "netns", "visible", "ov", "ingress")
            if r["kind"] != "container"
        }
        ingress = swarm.overlay_netns(swarm.inspect("network", "ingress")["Id"])
        assert {n: (r["kind"], r["network"], r["status"]) for n, r in rows.items()} == {
            netns: ("overlay", "ov", "created"),
            lb: ("load-balancer", "ov", "created"),
            ingress: ("overlay", "ingress", "created"),
            "ingress_sbox": ("routing-mesh", "ingress", "created"),
        }
        for name, r in rows.items():
            assert r["target"] == f"{swarm.exec_root}/netns/{name}"
            assert os.readlink(f"/var/run/netns/{name}") == r["target"]
        # `ip netns exec` now enters the overlay's namespace: the same links as nsenter shows.
        seen = json.loads(sh("ip", "netns", "exec", netns, "ip", "-j", "-d", "link", check=True))
        assert {l["ifname"]: l["ifindex"] for l in seen} == {
            n: l["ifindex"] for n, l in links.items()
        }
        again = cli_json(swarm, "netns", "visible", "ov")
        assert {(r["name"], r["status"]) for r in again} >= {(netns, "kept"), (lb, "kept")}
        table = cli(swarm, "netns", "visible", "ov").splitlines()
        assert table[0].split()[:3] == ["NAME", "KIND", "NETWORK"]
        assert any(line.split()[:3] == [netns, "overlay", "ov"] for line in table)
        removed = cli_json(swarm, "netns", "invisible", "ov", "ingress")
        assert {r["name"] for r in removed} == set(rows)
        assert not any(os.path.lexists(f"/var/run/netns/{name}") for name in rows)
    finally:
        cli(swarm, "netns", "invisible", "ov", "ingress", check=False)
