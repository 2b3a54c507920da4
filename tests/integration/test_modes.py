"""Every network mode against ground truth from outside the exporter:
`ip -j -d link`, `docker inspect`, and the container's own /sys view."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from helpers import Metrics, ip_json, printed, sh, wait_for

if TYPE_CHECKING:
    from docker.models.containers import Container


def host_veths() -> dict:
    """ifindex -> ip's view of each veth in the host namespace."""
    return {l["ifindex"]: l for l in ip_json("-d", "link", "show", "type", "veth")}


def peer_ifindex(container: Container, interface: str) -> int:
    """The container's own answer: /sys/class/net/<if>/iflink is its peer's ifindex on the host."""
    return int(printed(container.exec_run(f"cat /sys/class/net/{interface}/iflink")))


def veth_rows(metrics: Metrics, container: Container) -> list:
    return [l for l, _ in metrics.select("dockernet_veth_info", container_id=container.id)]


def counter_rows(metrics: Metrics, container: Container) -> list:
    return [
        l["interface"]
        for l, _ in metrics.select(
            "dockernet_container_receive_bytes_total", container_id=container.id
        )
    ]


@pytest.fixture
def running(exporter):
    return exporter()


def test_default_bridge(containers, running):
    c = containers.run()
    m = wait_for(
        lambda: (m := running.metrics()) and veth_rows(m, c) and m, what="veth of the container"
    )
    (row,) = veth_rows(m, c)
    veths = host_veths()
    assert int(row["ifindex"]) == peer_ifindex(c, "eth0")
    assert veths[int(row["ifindex"])]["ifname"] == row["veth"]
    assert row["bridge"] == "docker0" == veths[int(row["ifindex"])]["master"]
    assert row["network"] == "bridge"
    assert row["interface"] == "eth0"
    assert row["container_name"] == c.name
    assert m.get_value("dockernet_container_info", container_id=c.id, network_mode="bridge") == 1
    assert counter_rows(m, c) == ["eth0"]


def test_user_network_and_second_interface(containers, running):
    net = containers.network()
    c = containers.run(network=net.name)
    net.reload()
    containers.client.networks.get("bridge").connect(c)
    m = wait_for(
        lambda: (m := running.metrics()) and len(veth_rows(m, c)) == 2 and m, what="two veths"
    )
    rows = {r["interface"]: r for r in veth_rows(m, c)}
    assert set(rows) == {"eth0", "eth1"}
    bridge_name = "br-" + net.id[:12]
    for interface, row in rows.items():
        assert int(row["ifindex"]) == peer_ifindex(c, interface)
        assert host_veths()[int(row["ifindex"])]["master"] == row["bridge"]
    assert rows["eth0"]["bridge"] == bridge_name and rows["eth0"]["network"] == net.name
    assert rows["eth1"]["bridge"] == "docker0" and rows["eth1"]["network"] == "bridge"
    assert sorted(counter_rows(m, c)) == ["eth0", "eth1"]


def test_host_network_has_no_interface_series(containers, running):
    c = containers.run(network_mode="host")
    m = wait_for(
        lambda: (
            (m := running.metrics())
            and m.select("dockernet_container_info", container_id=c.id)
            and m
        ),
        what="info of the host-network container",
    )
    assert m.get_value("dockernet_container_info", container_id=c.id, network_mode="host") == 1
    assert counter_rows(m, c) == []
    assert veth_rows(m, c) == []


def test_none_network(containers, running):
    c = containers.run(network_mode="none")
    m = wait_for(
        lambda: (
            (m := running.metrics())
            and m.select("dockernet_container_info", container_id=c.id)
            and m
        ),
        what="info of the none-network container",
    )
    assert m.get_value("dockernet_container_info", container_id=c.id, network_mode="none") == 1
    assert counter_rows(m, c) == [] and veth_rows(m, c) == []


def test_container_mode_counted_once(containers, running):
    owner = containers.run()
    guest = containers.run(network_mode=f"container:{owner.id}")
    m = wait_for(
        lambda: (
            (m := running.metrics())
            and m.select("dockernet_container_info", container_id=guest.id)
            and veth_rows(m, owner)
            and m
        ),
        what="both containers",
    )
    assert (
        m.get_value(
            "dockernet_container_info", container_id=guest.id, network_mode=f"container:{owner.id}"
        )
        == 1
    )
    assert counter_rows(m, owner) == ["eth0"]
    assert counter_rows(m, guest) == []
    assert veth_rows(m, guest) == []


def test_macvlan_counters_from_inside(containers, running):
    parent = "dnxmv0"
    sh("ip", "link", "add", parent, "type", "bridge")
    try:
        sh("ip", "link", "set", parent, "up")
        net = containers.network(
            driver="macvlan",
            options={"parent": parent},
            ipam={"Config": [{"Subnet": "198.19.250.0/24"}]},
        )
        a = containers.run(network=net.name)
        b = containers.run(network=net.name)
        b_ip = b.attrs["NetworkSettings"]["Networks"][net.name]["IPAddress"]
        assert a.exec_run(f"ping -c 3 -W 2 {b_ip}").exit_code == 0
        m = wait_for(
            lambda: (m := running.metrics()) and counter_rows(m, a) and m, what="macvlan counters"
        )
        assert counter_rows(m, a) == ["eth0"]
        inside = printed(a.exec_run("cat /proc/net/dev"))
        tx_packets = next(
            int(l.split(":")[1].split()[9])
            for l in inside.splitlines()
            if l.strip().startswith("eth0:")
        )
        got = m.get_value(
            "dockernet_container_transmit_packets_total", container_id=a.id, interface="eth0"
        )
        assert (
            tx_packets <= got <= tx_packets + 2
        )  # a neighbour solicitation may slip in between the two reads
        assert veth_rows(m, a) == []
    finally:
        containers.cleanup()
        sh("ip", "link", "del", parent, check=False)
