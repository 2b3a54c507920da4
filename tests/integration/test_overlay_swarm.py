"""A real two-node swarm on one machine: two dockerds, each in a network namespace of its own, joined
over a veth link (tests/swarm_helpers.py); an attachable overlay with a container on each node,
pings across crossing the link as VXLAN. The exporter runs in the manager's namespace against its
dockerd and exec root, and is checked against each container's own /proc/net/dev and addresses, the
overlay namespace's links and forwarding database, and `docker network inspect --verbose`. The last
test makes the second node leave: its peer goes."""

from __future__ import annotations

import json

import pytest
from swarm_helpers import Cluster, Node, NodeExporter, container_net_dev

from helpers import Metrics, unique, wait_for

SUBNET = "198.18.236.0/24"
# ip -s link's stats64 keys, by the exporter's counter names.
VXLAN_STATS = {
    "receive_bytes": ("rx", "bytes"),
    "receive_packets": ("rx", "packets"),
    "transmit_bytes": ("tx", "bytes"),
    "transmit_packets": ("tx", "packets"),
}


@pytest.fixture(scope="module")
def nodes():
    """Manager and worker, an attachable overlay `ov`, container `ca` on the manager and `cb` on the
    worker. Everything is undone, whatever step fails."""
    cluster = Cluster(unique("dnxsw"))
    try:
        manager, worker = cluster.add(), cluster.add()
        cluster.init()
        cluster.join(worker)
        manager.docker(
            "network", "create", "-d", "overlay", "--attachable", "--subnet", SUBNET, "ov"
        )
        manager.run("ca", "ov")
        worker.run("cb", "ov")
        yield manager, worker
    finally:
        cluster.close()


@pytest.fixture(scope="module")
def manager_exporter(nodes):
    p = NodeExporter(nodes[0]).wait_ready()
    yield p
    p.stop()


def address(node: Node, container: str) -> str:
    return node.inspect("container", container)["NetworkSettings"]["Networks"]["ov"]["IPAddress"]


def overlay_links(node: Node) -> dict:
    network_id = node.inspect("network", "ov")["Id"]
    out = node.nsenter("ip", "-j", "-s", "-d", "link", netns=node.overlay_netns(network_id))
    return {l["ifname"]: l for l in json.loads(out)}


def fdb_destinations(node: Node) -> set[str]:
    network_id = node.inspect("network", "ov")["Id"]
    out = node.nsenter(
        "bridge", "-j", "fdb", "show", "dev", "vxlan0", netns=node.overlay_netns(network_id)
    )
    return {e["dst"] for e in json.loads(out or "[]") if e.get("dst")}


def with_peers(exporter: NodeExporter, n: int) -> Metrics:
    """The exporter's metrics once it counts n peers on `ov`."""

    def counted() -> Metrics | None:
        m = exporter.metrics()
        return m if m.get_value("dockernet_overlay_peers", network="ov") == n else None

    m = wait_for(counted, 20, what=f"{n} peers")
    assert m is not None
    return m


def test_pings_cross_the_link_as_vxlan_and_the_counters_match_the_kernel(nodes, manager_exporter):
    manager, worker = nodes
    before = overlay_links(manager)["vxlan0"]["stats64"]
    manager.exec("ca", "ping", "-c", "10", "-i", "0.2", "-W", "2", address(worker, "cb"))
    low = overlay_links(manager)["vxlan0"]["stats64"]
    assert low["tx"]["packets"] - before["tx"]["packets"] >= 10
    assert low["rx"]["packets"] - before["rx"]["packets"] >= 10  # the replies came back over VXLAN
    m = manager_exporter.metrics()
    high = overlay_links(manager)["vxlan0"]["stats64"]
    for suffix, (direction, key) in VXLAN_STATS.items():
        value = m.get_value(f"dockernet_overlay_vxlan_{suffix}_total", network="ov")
        assert low[direction][key] <= value <= high[direction][key], suffix


def test_the_other_node_is_a_peer(nodes, manager_exporter):
    manager, worker = nodes
    verbose = manager.inspect("network", "ov", "--verbose")
    assert {p["IP"] for p in verbose["Peers"]} == {manager.address, worker.address}
    assert fdb_destinations(manager) == {worker.address}
    m = with_peers(manager_exporter, 1)
    assert [l["peer"] for l, _ in m.select("dockernet_overlay_peer_info", network="ov")] == [
        worker.address
    ]
    ((labels, mtu),) = m.select("dockernet_overlay_underlay_mtu_bytes", network="ov")
    assert labels["interface"] == "dnxunder"
    assert mtu == json.loads(manager.nsenter("ip", "-j", "link", "show", "dnxunder"))[0]["mtu"]
    assert (
        m.get_value("dockernet_overlay_mtu_bytes", network="ov")
        == overlay_links(manager)["vxlan0"]["mtu"]
    )


def test_local_container_counters_and_address_on_the_overlay(nodes, manager_exporter):
    manager, worker = nodes
    manager.exec("ca", "ping", "-c", "3", "-i", "0.2", address(worker, "cb"))
    wait_for(
        lambda: manager_exporter.metrics().get_value(
            "dockernet_container_transmit_packets_total", container_name="ca", interface="eth0"
        ),
        20,
        what="a's eth0 counters",
    )
    before = container_net_dev(manager, "ca")["eth0"]
    m = manager_exporter.metrics()
    after = container_net_dev(manager, "ca")["eth0"]
    sent = m.get_value(
        "dockernet_container_transmit_packets_total", container_name="ca", interface="eth0"
    )
    assert before[9] <= sent <= after[9]
    ((labels, _),) = m.select(
        "dockernet_container_address_info", container_name="ca", interface="eth0"
    )
    assert (labels["network"], labels["address"]) == ("ov", address(manager, "ca"))
    # The worker's container is no series of the manager's exporter: it is the other node's.
    assert not m.select("dockernet_container_info", container_name="cb")
    links = overlay_links(manager)
    veths = [
        l
        for l in links.values()
        if l.get("master") == "br0" and l["linkinfo"]["info_kind"] == "veth"
    ]
    assert m.get_value("dockernet_overlay_endpoints", network="ov") == len(veths)


def test_the_peer_goes_when_the_other_node_leaves(nodes, manager_exporter):
    manager, worker = nodes
    worker.docker("rm", "-f", "cb")
    worker.docker("swarm", "leave", "--force")
    wait_for(
        lambda: fdb_destinations(manager) == set(),
        90,
        interval=1,
        what="the FDB to forget the worker",
    )
    m = with_peers(manager_exporter, 0)
    assert not m.select("dockernet_overlay_peer_info", network="ov")
