"""Bridge metrics against the kernel's own view (`bridge -j link`, `ip -j
link`) and Docker's (`docker network inspect`)."""

from __future__ import annotations

from helpers import bridge_ports, ip_json, ipv6_network, sh, unique, wait_for


def test_bridges_ports_and_states_match_the_kernel_and_docker(exporter, containers, hand):
    net = ipv6_network(containers)
    a, b = containers.run(network=net.name), containers.run(network=net.name)
    solo = containers.run()
    bridge = "br-" + net.short_id
    running = exporter()
    base = unique()  # made while the exporter runs: known from link notifications only
    own = hand.bridge(base + "br")
    port = hand.pair(base + "p", base + "q", master=own)

    def mapped():
        m = running.metrics()
        return all(m.select("dockernet_veth_info", container_id=c.id) for c in (a, b, solo)) and m

    m = wait_for(
        lambda: (
            mapped()
            and running.metrics().get_value("dockernet_bridge_ports", bridge=own) == 1
            and mapped()
        ),
        what="the containers' veths and the hand-made port",
    )
    kernel = bridge_ports()
    ours = {
        l["veth"]
        for c in (a, b, solo)
        for l, _ in m.select("dockernet_veth_info", container_id=c.id)
    }
    assert len(ours) == 3
    for veth in ours | {port}:
        master, state = kernel[veth]
        assert (
            m.get_value("dockernet_bridge_port_state", bridge=master, veth=veth, state=state) == 1
        ), veth
    assert kernel[port] == (own, "disabled")
    assert (
        m.get_value("dockernet_bridge_ports", bridge=bridge)
        == len(ip_json("link", "show", "master", bridge))
        == 2
    )
    assert m.get_value("dockernet_bridge_ports", bridge=own) == 1

    inspect = containers.client.api.inspect_network(net.id)
    expected = {(c["Subnet"], c.get("Gateway", "")) for c in inspect["IPAM"]["Config"]}
    assert len(expected) == 2
    got = {(l["subnet"], l["gateway"]) for l, _ in m.select("dockernet_bridge_info", bridge=bridge)}
    assert got == expected
    assert {
        (l["network"], l["driver"]) for l, _ in m.select("dockernet_bridge_info", bridge=bridge)
    } == {(net.name, "bridge")}
    assert m.select("dockernet_bridge_info", bridge=own) == [
        ({"bridge": own, "network": "", "driver": "", "subnet": "", "gateway": ""}, 1.0)
    ]
    for br in (bridge, own, "docker0"):
        (link,) = ip_json("link", "show", br)
        assert m.get_value("dockernet_bridge_up", bridge=br) == int(link["operstate"] == "UP"), br

    # A port that comes up goes to forwarding: the kernel says so in a bridge (AF_BRIDGE) message only.
    sh("ip", "link", "set", own, "up")
    sh("ip", "link", "set", base + "q", "up")
    sh("ip", "link", "set", port, "up")
    wait_for(
        lambda: bridge_ports()[port] == (own, "forwarding"),
        what="the kernel to forward on the port",
    )
    wait_for(
        lambda: (
            running.metrics().get_value(
                "dockernet_bridge_port_state", bridge=own, veth=port, state="forwarding"
            )
            == 1
        ),
        what="the port's new state",
    )
    wait_for(
        lambda: running.metrics().get_value("dockernet_bridge_up", bridge=own) == 1,
        what="the bridge up",
    )
