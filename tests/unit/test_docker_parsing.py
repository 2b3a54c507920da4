"""Docker's inspect documents of containers and networks, as recorded, into the model."""

from __future__ import annotations

from recorded import by_name

from exporter.sources.runtimes.docker import parse_container, parse_network


def test_parse_container_from_inspect():
    doc = by_name()["t2"]
    c = parse_container(doc)
    assert c.id == doc["Id"] and len(c.id) == 64
    assert c.name == "t2" and c.image == "dockernet-test:busybox"
    assert c.pid == doc["State"]["Pid"] and c.network_mode == "tnet"
    assert [e.network for e in c.endpoints] == ["bridge", "tnet"]
    tnet = c.endpoints[1]
    assert tnet.ipv4.startswith("198.19.") and tnet.mac.startswith("02:42:")


def test_parse_container_ports_and_compose_labels():
    doc = {
        "Id": "f" * 64,
        "Name": "/web",
        "State": {"Pid": 7, "Running": True},
        "Config": {
            "Image": "nginx",
            "Labels": {"com.docker.compose.project": "shop", "com.docker.compose.service": "front"},
        },
        "HostConfig": {"NetworkMode": "default"},
        "NetworkSettings": {
            "Ports": {
                "80/tcp": [
                    {"HostIp": "0.0.0.0", "HostPort": "8080"},
                    {"HostIp": "::", "HostPort": "8080"},
                ],
                "53/udp": None,
            }
        },
    }
    c = parse_container(doc)
    assert (c.compose_project, c.compose_service) == ("shop", "front")
    assert [(p.protocol, p.container_port, p.host_ip, p.host_port) for p in c.ports] == [
        ("tcp", 80, "0.0.0.0", 8080),
        ("tcp", 80, "::", 8080),
    ]


def test_parse_network_bridge_names():
    docs: list[dict] = [
        {
            "Id": "a" * 64,
            "Name": "bridge",
            "Driver": "bridge",
            "Options": {"com.docker.network.bridge.name": "docker0"},
            "IPAM": {"Config": [{"Subnet": "198.18.0.0/24", "Gateway": "198.18.0.1"}]},
        },
        {
            "Id": "b968fc8dede5" + "0" * 52,
            "Name": "tnet",
            "Driver": "bridge",
            "Internal": True,
            "Options": {"com.docker.network.bridge.enable_ip_masquerade": "false"},
        },
        {"Id": "c" * 64, "Name": "host", "Driver": "host"},
    ]
    nets = {n.name: n for n in map(parse_network, docs)}
    assert nets["bridge"].bridge == "docker0" and nets["bridge"].subnets == (
        ("198.18.0.0/24", "198.18.0.1"),
    )
    assert (
        nets["tnet"].bridge == "br-b968fc8dede5"
        and nets["tnet"].internal
        and not nets["tnet"].masquerade
    )
    assert nets["host"].bridge == ""
