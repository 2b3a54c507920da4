"""Podman's Docker-compatible answers, where they differ from Docker's (shapes as Podman 4.3 with
netavark gives them): the mode on a user network, the libpod network list with its bridges, and
the remove events."""

from __future__ import annotations

from exporter.sources.runtimes import podman
from exporter.sources.runtimes.workloads import Effect


def inspect(networks: dict | None, mode: str = "bridge") -> dict:
    return {
        "Id": "c1",
        "Name": "/web",
        "Config": {"Image": "localhost/busybox"},
        "State": {"Pid": 42, "Running": True},
        "HostConfig": {"NetworkMode": mode},
        "NetworkSettings": {"Networks": networks, "Ports": {}},
    }


def endpoint(name: str) -> dict:
    return {"NetworkID": name, "MacAddress": "0a:00:00:00:00:01", "IPAddress": "198.18.160.2"}


def test_default_network_is_bridge_mode_a_user_network_is_named():
    default = podman.parse_podman_container(inspect({"podman": endpoint("podman")}))
    assert (default.runtime, default.network_mode) == ("podman", "bridge")
    assert default.endpoints[0].network_id == "podman"  # Podman's NetworkID is the name
    user = podman.parse_podman_container(inspect({"shop": endpoint("shop")}))
    assert user.network_mode == "shop"


def test_host_and_none_have_no_networks():
    for mode in ("host", "none"):
        c = podman.parse_podman_container(inspect(None, mode))
        assert c.network_mode == mode and c.endpoints == ()


def test_libpod_network_names_its_bridge():
    n = podman.parse_libpod_network(
        {
            "name": "podman",
            "id": "2f25",
            "driver": "bridge",
            "network_interface": "podman0",
            "subnets": [{"subnet": "198.18.160.0/24", "gateway": "198.18.160.1"}],
            "internal": False,
        }
    )
    assert (n.id, n.name, n.bridge) == ("2f25", "podman", "podman0")
    assert n.subnets == (("198.18.160.0/24", "198.18.160.1"),)
    assert n.masquerade and n.runtime == "podman"  # through netavark's chains


def test_remove_events():
    gone = podman.parse_podman_event(
        {"Type": "container", "Action": "remove", "Actor": {"ID": "c1"}}
    )
    assert (gone.effect, gone.workload_id) == (Effect.GONE, "c1")
    net = podman.parse_podman_event({"Type": "network", "Action": "remove", "Actor": {"ID": "n"}})
    assert net.effect is Effect.NETWORKS
    start = podman.parse_podman_event(
        {"Type": "container", "Action": "start", "Actor": {"ID": "c1"}}
    )
    assert start.effect is Effect.CHANGED
