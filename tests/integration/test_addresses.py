"""Container addresses against the container's own `ip -o addr`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from helpers import Metrics, inside, ipv6_network, wait_for

if TYPE_CHECKING:
    from docker.models.containers import Container


def exported(m: Metrics, container: Container) -> set:
    return {
        (l["interface"], l["family"], l["address"], l["prefix_length"])
        for l, _ in m.select("dockernet_container_address_info", container_id=container.id)
    }


def test_every_address_of_every_interface_as_the_kernel_has_it(exporter, containers):
    net = ipv6_network(containers)
    c = containers.run(network=net.name, cap_add=["NET_ADMIN"])
    containers.client.networks.get("bridge").connect(c)
    running = exporter("--resync.interval=1s")
    m = wait_for(
        lambda: (m := running.metrics()) and exported(m, c) == inside(c) and m,
        what="the container's addresses",
    )
    got = exported(m, c)
    assert {(i, f) for i, f, _, _ in got} >= {("eth0", "ipv4"), ("eth0", "ipv6"), ("eth1", "ipv4")}
    c.reload()
    settings = c.attrs["NetworkSettings"]["Networks"]
    assert (
        "eth0",
        "ipv4",
        settings[net.name]["IPAddress"],
        str(settings[net.name]["IPPrefixLen"]),
    ) in got
    assert (
        "eth0",
        "ipv6",
        settings[net.name]["GlobalIPv6Address"],
        str(settings[net.name]["GlobalIPv6PrefixLen"]),
    ) in got
    assert (
        "eth1",
        "ipv4",
        settings["bridge"]["IPAddress"],
        str(settings["bridge"]["IPPrefixLen"]),
    ) in got
    labels = {
        l["interface"]: l
        for l, _ in m.select("dockernet_container_address_info", container_id=c.id)
    }
    assert (labels["eth0"]["network"], labels["eth0"]["mac"]) == (
        net.name,
        settings[net.name]["MacAddress"],
    )
    assert (labels["eth1"]["network"], labels["eth1"]["mac"]) == (
        "bridge",
        settings["bridge"]["MacAddress"],
    )

    # An address Docker does not know: the kernel wins.
    subnet = settings[net.name]["IPAddress"].rsplit(".", 1)[0]
    assert c.exec_run(f"ip addr add {subnet}.250/24 dev eth0").exit_code == 0
    m = wait_for(
        lambda: (
            (m := running.metrics())
            and ("eth0", "ipv4", f"{subnet}.250", "24") in exported(m, c)
            and m
        ),
        what="the hand-added address after a resync",
    )
    assert exported(m, c) == inside(c)
