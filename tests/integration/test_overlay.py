"""A single-node swarm: Swarm containers and service tasks fully mapped, none of their veths flagged.

The swarm runs on a dockerd of its own, in a network namespace of its own (tests/swarm_helpers.py):
the shared test dockerd never enters swarm mode, and the swarm, its namespaces and its processes
are gone when this module ends. The exporter runs in that namespace with the node's exec root."""

from __future__ import annotations

import json
import os
import subprocess
import time

import pytest
from swarm_helpers import Cluster, Node, NodeExporter, container_net_dev

from helpers import EXPORTER, Metrics, ip_json, sh, unique, wait_for

OVERLAY_SUBNET = "198.18.232.0/24"
GRACE = 1.0
# /proc/net/dev columns read for each counter the exporter exports.
COLUMNS = {"receive_bytes": 0, "receive_packets": 1, "transmit_bytes": 8, "transmit_packets": 9}


@pytest.fixture(scope="module")
def swarm():
    """One node, swarm initialised; an attachable overlay `ov` with c1 and c2 on it; a service of
    two replicas on `ov` publishing a port through the routing mesh."""
    cluster = Cluster(unique("dnxov"))
    try:
        node = cluster.add()
        cluster.init()
        node.docker(
            "network", "create", "-d", "overlay", "--attachable", "--subnet", OVERLAY_SUBNET, "ov"
        )
        node.run("c1", "ov")
        node.run("c2", "ov")
        node.docker(
            "service",
            "create",
            "-d",
            "--name",
            "svc",
            "--replicas",
            "2",
            "-p",
            "8080:80",
            "--network",
            "ov",
            "dockernet-test:busybox",
            "httpd",
            "-f",
            "-p",
            "80",
        )
        wait_for(lambda: len(tasks(node)) == 2, 60, interval=0.5, what="two running tasks")
        yield node
    finally:
        cluster.close()


@pytest.fixture(scope="module")
def node_exporter(swarm):
    p = NodeExporter(
        swarm, f"--collector.orphans.grace={GRACE}s", f"--collector.overlay.grace={GRACE}s"
    ).wait_ready()
    yield p
    p.stop()


def tasks(node: Node) -> list[str]:
    names = node.docker(
        "ps", "--filter", "label=com.docker.swarm.service.name=svc", "--format", "{{.Names}}"
    )
    return names.split()


def interfaces(metrics: Metrics, name: str) -> set[str]:
    return {
        l["interface"]
        for l, _ in metrics.select("dockernet_container_receive_bytes_total", container_name=name)
    }


def addresses(metrics: Metrics, name: str) -> dict[str, tuple[str, str]]:
    """interface -> (network, address) of the container's IPv4 address series."""
    return {
        l["interface"]: (l["network"], l["address"])
        for l, _ in metrics.select(
            "dockernet_container_address_info", container_name=name, family="ipv4"
        )
    }


def test_every_gwbridge_veth_is_mapped_and_none_is_flagged(swarm, node_exporter):
    gwbridge = [
        l["ifname"]
        for l in ip_json("-n", swarm.name, "link", "show", "master", "docker_gwbridge")
        if l["ifname"].startswith("veth")
    ]
    # c1, c2, two tasks, and Swarm's own ingress sandbox.
    assert len(gwbridge) == 5

    def mapped():
        m = node_exporter.metrics()
        owners = {
            l["veth"]: l["container_name"]
            for l, _ in m.select("dockernet_veth_info", bridge="docker_gwbridge")
        }
        return (
            m
            if set(owners) == set(gwbridge) and len([o for o in owners.values() if o]) == 4
            else None
        )

    m = wait_for(mapped, 20, what="the gwbridge veths in dockernet_veth_info")
    owners = {
        l["container_name"] for l, _ in m.select("dockernet_veth_info", bridge="docker_gwbridge")
    }
    assert owners == {"c1", "c2", *tasks(swarm), ""}  # "": the ingress sandbox's, no container's
    time.sleep(GRACE * 2)  # past the grace period: a suspect would be flagged now
    m = node_exporter.metrics()
    assert m.get_value("dockernet_orphaned_veths", reason="no_endpoint") == 0
    assert m.get_value("dockernet_orphaned_veths", reason="netns_without_container") == 0
    assert not m.get("dockernet_veth_orphaned")


def test_overlay_eth0_has_its_own_counters_and_address(swarm, node_exporter):
    c2 = swarm.inspect("container", "c2")
    peer = c2["NetworkSettings"]["Networks"]["ov"]["IPAddress"]
    swarm.exec("c1", "ping", "-c", "5", "-i", "0.2", peer)
    wait_for(
        lambda: "eth0" in interfaces(node_exporter.metrics(), "c1"), 20, what="c1's eth0 series"
    )
    before = container_net_dev(swarm, "c1")["eth0"]
    m = node_exporter.metrics()
    after = container_net_dev(swarm, "c1")["eth0"]
    for suffix, column in COLUMNS.items():
        value = m.get_value(
            f"dockernet_container_{suffix}_total", container_name="c1", interface="eth0"
        )
        assert before[column] <= value <= after[column], suffix
    assert after[COLUMNS["transmit_packets"]] >= 5  # the pings went out on the overlay
    c1 = swarm.inspect("container", "c1")["NetworkSettings"]["Networks"]["ov"]
    assert addresses(m, "c1")["eth0"] == ("ov", c1["IPAddress"])
    assert addresses(m, "c1")["eth1"][0] == "docker_gwbridge"


def test_service_task_has_ingress_overlay_and_gateway_interfaces(swarm, node_exporter):
    def all_three():
        m = node_exporter.metrics()
        return m if all(len(addresses(m, t)) == 3 for t in tasks(swarm)) else None

    m = wait_for(all_three, 20, what="three interfaces per task")
    for task in tasks(swarm):
        networks = swarm.inspect("container", task)["NetworkSettings"]["Networks"]
        seen = addresses(m, task)
        assert sorted(network for network, _ in seen.values()) == [
            "docker_gwbridge",
            "ingress",
            "ov",
        ]
        for network, address in seen.values():
            if network != "docker_gwbridge":
                assert address == networks[network]["IPAddress"]
        info = m.select("dockernet_container_info", container_name=task)
        assert info[0][0]["network_mode"] == "ov"
    # A container on the overlay alone is in that network's mode, as `docker run --network` says.
    assert m.select("dockernet_container_info", container_name="c1")[0][0]["network_mode"] == "ov"


def test_overlay_interface_names_its_veth_on_br0(swarm, node_exporter):
    """The veth found by the peer's namespace id and ifindex, checked against the kernel as seen
    inside both namespaces."""
    network_id = swarm.inspect("network", "ov")["Id"]
    netns = swarm.overlay_netns(network_id)
    links = {
        l["ifname"]: l for l in json.loads(swarm.nsenter("ip", "-j", "-d", "link", netns=netns))
    }
    c1_eth0 = int(swarm.exec("c1", "cat", "/sys/class/net/eth0/ifindex"))
    c1_iflink = int(swarm.exec("c1", "cat", "/sys/class/net/eth0/iflink"))
    expected = next(name for name, l in links.items() if l["ifindex"] == c1_iflink)
    assert links[expected]["link_index"] == c1_eth0
    assert links[expected]["master"] == "br0"
    status, body = node_exporter.get("/topology.json")
    assert status == 200
    doc = json.loads(body)
    eth0 = next(
        i
        for ns in doc["namespaces"]
        if any(c["name"] == "c1" for c in ns["containers"])
        for i in ns["interfaces"]
        if i["name"] == "eth0"
    )
    assert (eth0["veth"], eth0["bridge"], eth0["network"]) == (expected, "br0", "ov")


def test_topology_command_draws_the_overlay_from_the_nodes_exec_root(swarm):
    """The one-shot command, run in the node's namespace with the node's dockerd and exec root."""
    out = swarm.nsenter(
        *EXPORTER,
        f"--docker.host={swarm.socket}",
        f"--docker.exec-root={swarm.exec_root}",
        "--podman.host=",
        "--cri.endpoint=",
        "topology",
        "--output=json",
    )
    doc = json.loads(out)
    ov = next(o for o in doc["overlays"] if o["network"] == "ov")
    assert ov["namespace"] == swarm.overlay_netns(swarm.inspect("network", "ov")["Id"])
    assert {"c1", "c2"} <= {e["container_name"] for e in ov["endpoints"]}


def test_overlay_network_info_and_endpoints_match_docker_and_the_kernel(swarm, node_exporter):
    ov = swarm.inspect("network", "ov", "--verbose")
    links = json.loads(swarm.nsenter("ip", "-j", "-d", "link", netns=swarm.overlay_netns(ov["Id"])))
    on_br0 = [
        l
        for l in links
        if l.get("master") == "br0" and l.get("linkinfo", {}).get("info_kind") == "veth"
    ]
    vxlan = next(l for l in links if l.get("linkinfo", {}).get("info_kind") == "vxlan")
    m = wait_for(
        lambda: (
            (m := node_exporter.metrics()).get_value("dockernet_overlay_endpoints", network="ov")
            == len(on_br0)
            and m
        ),
        20,
        what="the overlay's endpoints",
    )
    ((labels, _),) = m.select("dockernet_overlay_network_info", network="ov")
    config = ov["IPAM"]["Config"][0]
    assert labels == {
        "network": "ov",
        "network_id": ov["Id"],
        "vni": str(vxlan["linkinfo"]["info_data"]["id"]),
        "subnet": config["Subnet"],
        "gateway": config["Gateway"],
        "encrypted": "false",
    }
    assert len(on_br0) == len(ov["Containers"])  # c1, c2, two tasks, the lb_ sandbox
    assert m.get_value("dockernet_overlay_mtu_bytes", network="ov") == vxlan["mtu"]
    assert m.get_value("dockernet_overlay_peers", network="ov") == 0  # one node: nobody to reach


def test_address_use_follows_containers(swarm, node_exporter):
    def used(m):
        return m.get_value("dockernet_network_addresses_used", network="ov", subnet=OVERLAY_SUBNET)

    def docker_count():
        # Docker's own view: every endpoint on the network here, and the gateway.
        return len(swarm.inspect("network", "ov")["Containers"]) + 1

    wait_for(lambda: used(node_exporter.metrics()) == docker_count(), 20, what="ov's address use")
    before = docker_count()
    m = node_exporter.metrics()
    assert (
        m.get_value("dockernet_network_addresses_capacity", network="ov", subnet=OVERLAY_SUBNET)
        == 254
    )
    swarm.run("c3", "ov")
    try:
        wait_for(
            lambda: used(node_exporter.metrics()) == before + 1 == docker_count(),
            20,
            what="c3 counted",
        )
    finally:
        swarm.docker("rm", "-f", "c3")
    wait_for(lambda: used(node_exporter.metrics()) == before, 20, what="c3 no longer counted")
    gw = swarm.inspect("network", "docker_gwbridge")
    gw_used = node_exporter.metrics().get_value(
        "dockernet_network_addresses_used",
        network="docker_gwbridge",
        subnet=gw["IPAM"]["Config"][0]["Subnet"],
    )
    assert gw_used == len(gw["Containers"]) + 1  # the ingress sandbox's endpoint too


def test_a_vxlan_device_left_in_the_host_namespace_is_flagged_after_the_grace(swarm, node_exporter):
    name = "vx-001fff-dnxlk"
    swarm.nsenter("ip", "link", "add", name, "type", "vxlan", "id", "8191", "dstport", "4789")
    try:
        start = time.monotonic()

        def flagged():
            m = node_exporter.metrics()
            return (
                m
                if any(l["name"] == name for l, _ in m.get("dockernet_overlay_leaked_info", ()))
                else None
            )

        m = wait_for(flagged, 20, what="the vx- device flagged")
        assert time.monotonic() - start >= GRACE
        assert m.get_value("dockernet_overlay_leaked", kind="vxlan_device") == 1
    finally:
        swarm.nsenter("ip", "link", "del", name)
    wait_for(
        lambda: (
            node_exporter.metrics().get_value("dockernet_overlay_leaked", kind="vxlan_device") == 0
        ),
        20,
        what="the flag gone with the device",
    )


def test_overlay_removed_takes_its_series_with_its_namespace(swarm, node_exporter):
    swarm.docker(
        "network", "create", "-d", "overlay", "--attachable", "--subnet", "198.18.233.0/24", "ov2"
    )
    swarm.run("c4", "ov2")
    network_id = swarm.inspect("network", "ov2")["Id"]
    netns = swarm.overlay_netns(network_id)
    wait_for(
        lambda: (
            node_exporter.metrics().get_value("dockernet_overlay_endpoints", network="ov2") == 2
        ),
        20,
        what="ov2's endpoints (c4 and its lb_ sandbox)",
    )
    swarm.docker("rm", "-f", "c4")
    swarm.docker("network", "rm", "ov2")
    # libnetwork removes the namespace within about a minute; its series go with it.
    wait_for(
        lambda: netns not in os.listdir(swarm.exec_root / "netns"),
        120,
        interval=1,
        what="ov2's namespace removed",
    )

    def gone():
        text = node_exporter.text()
        return "ov2" not in text and netns not in text

    wait_for(gone, 20, what="ov2's series gone")


def test_an_overlay_namespace_docker_does_not_list_is_flagged_after_the_grace(swarm, node_exporter):
    """A namespace bound where Docker keeps its overlays', named as it names them, with a VXLAN
    device on a br0 and a veth into it, for a network Docker never made."""
    name = "9-dnxleak000"
    path = swarm.exec_root / "netns" / name
    path.touch()
    try:
        subprocess.run(["unshare", f"--net={path}", "true"], check=True)
        inside = ("nsenter", f"--net={path}", "ip", "link")
        sh(*inside, "add", "br0", "type", "bridge")
        sh(*inside, "add", "vxlan0", "type", "vxlan", "id", "8190", "dstport", "4789")
        sh(*inside, "set", "vxlan0", "master", "br0")
        # A veth from the node into it: the notification of its host end, once up (with its peer's
        # namespace id, which no file the exporter knows has), makes it look at the files again.
        swarm.nsenter("ip", "link", "add", "dnxleak0", "type", "veth", "peer", "name", "dnxleak1")
        swarm.nsenter("ip", "link", "set", "dnxleak1", "netns", str(path))
        swarm.nsenter("ip", "link", "set", "dnxleak0", "up")
        start = time.monotonic()

        def flagged():
            m = node_exporter.metrics()
            return m if m.get_value("dockernet_overlay_leaked", kind="namespace") == 1 else None

        m = wait_for(flagged, 20, what="the namespace flagged")
        assert time.monotonic() - start >= GRACE
        assert [l["name"] for l, _ in m.get("dockernet_overlay_leaked_info", ())] == [name]
        ((info, _),) = m.select("dockernet_overlay_network_info", network=name)
        assert (info["vni"], info["network_id"]) == ("", "dnxleak000")
    finally:
        swarm.nsenter("ip", "link", "del", "dnxleak0", check=False)
        subprocess.run(["umount", str(path)], capture_output=True)
        path.unlink()


def test_macvlan_interfaces_are_mapped(swarm, node_exporter):
    """Parent: one end of a veth made for the test in the node's namespace, never an uplink. (This
    machine's kernel has no ipvlan: `ip link add ... type ipvlan` says "Unknown device type".)"""
    driver, subnet = "macvlan", "198.18.240.0/24"
    parent, network, name = "dnxmv0", "dnxmacvlan", "cmacvlan"
    swarm.nsenter("ip", "link", "add", parent, "type", "veth", "peer", "name", "dnxmv1")
    try:
        swarm.docker(
            "network", "create", "-d", driver, "-o", f"parent={parent}", "--subnet", subnet, network
        )
        swarm.run(name, network)
        ip = swarm.inspect("container", name)["NetworkSettings"]["Networks"][network]["IPAddress"]

        def mapped():
            m = node_exporter.metrics()
            return m if addresses(m, name).get("eth0") == (network, ip) else None

        m = wait_for(mapped, 20, what=f"{name}'s eth0 with its address")
        before = container_net_dev(swarm, name)["eth0"]
        assert (
            m.get_value(
                "dockernet_container_transmit_bytes_total", container_name=name, interface="eth0"
            )
            <= before[8]
        )
        assert (
            m.select("dockernet_container_info", container_name=name)[0][0]["network_mode"]
            == network
        )
        # Docker's own view: its endpoints here, and the gateway where its IPAM config names one.
        inspect = swarm.inspect("network", network)
        expected = len(inspect["Containers"]) + bool(inspect["IPAM"]["Config"][0].get("Gateway"))
        used = m.get_value("dockernet_network_addresses_used", network=network, subnet=subnet)
        assert used == expected
    finally:
        swarm.docker("rm", "-f", name, check=False)
        swarm.docker("network", "rm", network, check=False)
        swarm.nsenter("ip", "link", "del", parent, check=False)
