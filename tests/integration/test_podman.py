"""Rootful Podman through its Docker-compatible socket (scripts/podman-env.sh), beside the real
dockerd and the test containerd: the exact map on the default and a user network, host and none
modes, the bridges under their networks' names, a published port, removal, all three runtimes at
once, and a missing socket."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from cri_helpers import CRI_SOCKET, CriPods, cri_ready
from helpers import Metrics, sh, wait_for
from podman_helpers import PODMAN_SOCKET, host_ifindex

if TYPE_CHECKING:
    from docker.models.containers import Container

PODMAN = f"--podman.host=unix://{PODMAN_SOCKET}"


def veths_of(m: Metrics, c: Container) -> list[dict]:
    return [l for l, _ in m.select("dockernet_veth_info", container_id=c.id)]


def test_default_and_user_network_map_exactly_host_and_none_have_no_veth(exporter, podman):
    e = exporter(PODMAN)
    net = podman.network()
    default = podman.run(ports={"80/tcp": None})
    user = podman.run(network=net.name)
    host = podman.run(network_mode="host")
    none = podman.run(network_mode="none")

    def all_known():
        m = e.metrics()
        known = {l["container_id"] for l, _ in m.select("dockernet_container_info")}
        both = veths_of(m, default) and veths_of(m, user)
        return both and {default.id, user.id, host.id, none.id} <= known and m

    m = wait_for(all_known, what="the Podman containers mapped")
    for c, network in ((default, "podman"), (user, net.name)):
        (veth,) = veths_of(m, c)
        assert int(veth["ifindex"]) == host_ifindex(c)
        assert (veth["interface"], veth["network"]) == ("eth0", network)
        assert (veth["namespace"], veth["pod"]) == ("", "")
        bridges = {l["bridge"]: l["network"] for l, _ in m.select("dockernet_bridge_info")}
        assert bridges[veth["bridge"]] == network
    modes = {
        l["container_id"]: (l["runtime"], l["network_mode"])
        for l, _ in m.select("dockernet_container_info")
    }
    assert modes[default.id] == ("podman", "bridge")
    assert modes[user.id] == ("podman", net.name)
    assert modes[host.id] == ("podman", "host") and modes[none.id] == ("podman", "none")
    assert not veths_of(m, host) and not veths_of(m, none)
    (port,) = m.select("dockernet_published_port_info", container_id=default.id)
    assert (port[0]["container_port"], port[0]["protocol"]) == ("80", "tcp")
    assert m.get_value("dockernet_runtime_up", runtime="podman") == 1


def test_published_port_and_masquerade_in_netavarks_chains(exporter, podman):
    """Podman's NAT is netavark's: the port's DNAT rule in its chains and the network's
    masquerade found present, and the binding missing while its rule is deleted."""
    e = exporter(PODMAN)
    c = podman.run(ports={"80/tcp": None})
    c.reload()
    address = c.attrs["NetworkSettings"]["IPAddress"]
    (binding,) = c.attrs["NetworkSettings"]["Ports"]["80/tcp"]
    host_port = binding["HostPort"]

    def judged_and_mapped():
        m = e.metrics()
        got = m.select("dockernet_published_port_rule_present", container_id=c.id)
        return got and veths_of(m, c) and m

    m = wait_for(judged_and_mapped, what="the Podman binding judged and its veth mapped")
    (port,) = m.select("dockernet_published_port_rule_present", container_id=c.id)
    assert port[0]["host_port"] == host_port and port[1] == 1
    (veth,) = veths_of(m, c)
    (masq,) = m.select("dockernet_masquerade_rule_present", bridge=veth["bridge"])
    assert masq[1] == 1
    line = next(
        line
        for line in sh("iptables-save", "-t", "nat").splitlines()
        if line.startswith("-A NETAVARK-DN-") and f"--to-destination {address}:80" in line
    )
    _, chain, spec = line.split(" ", 2)
    rule = spec.split()
    sh("iptables", "-t", "nat", "-D", chain, *rule)
    try:
        missing = e.metrics().select("dockernet_published_port_rule_present", container_id=c.id)
        assert missing[0][1] == 0
    finally:
        sh("iptables", "-t", "nat", "-A", chain, *rule)


def test_removed_container_drops_its_series(exporter, podman):
    e = exporter(PODMAN)
    keep, gone = podman.run(), podman.run()
    wait_for(lambda: (m := e.metrics()) and veths_of(m, keep) and veths_of(m, gone), what="mapped")
    gone.remove(force=True)
    text = wait_for(lambda: (t := e.text()) and gone.id not in t and t, what="series gone")
    assert keep.id in text


def test_docker_podman_and_containerd_at_once(exporter, podman, containers):
    if not cri_ready():
        pytest.fail(f"no CRI at {CRI_SOCKET}; run `make test-env` (as root) first")
    pods = CriPods()
    try:
        e = exporter(PODMAN, f"--cri.endpoint={CRI_SOCKET}")
        d, p = containers.run(), podman.run()
        pod = pods.run(containers=())

        def all_mapped():
            m = e.metrics()
            own = m.select("dockernet_veth_info", pod=pod.name)
            return veths_of(m, d) and veths_of(m, p) and own and m

        m = wait_for(all_mapped, what="a container of each runtime mapped")
        runtimes = {
            l["container_id"]: l["runtime"] for l, _ in m.select("dockernet_container_info")
        }
        assert (runtimes[d.id], runtimes[p.id]) == ("docker", "podman")
        (pv,) = m.select("dockernet_pod_info", pod=pod.name)
        assert pv[0]["runtime"] == "containerd"
        veths = {veths_of(m, d)[0]["veth"], veths_of(m, p)[0]["veth"]}
        veths.add(m.select("dockernet_veth_info", pod=pod.name)[0][0]["veth"])
        assert len(veths) == 3
        for runtime in ("docker", "podman", "containerd"):
            assert m.get_value("dockernet_runtime_up", runtime=runtime) == 1
    finally:
        pods.cleanup()


def test_missing_podman_socket_is_down_and_the_rest_works(exporter, containers):
    e = exporter("--podman.host=unix:///run/dockernet-podman/absent.sock")
    c = containers.run()
    m = wait_for(lambda: (m := e.metrics()) and veths_of(m, c) and m, what="the container mapped")
    assert m.get_value("dockernet_runtime_up", runtime="podman") == 0
    assert m.get_value("dockernet_runtime_up", runtime="docker") == 1
