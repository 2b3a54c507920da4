"""Pure parsers: docker inspect documents, /proc/net/dev, the exposition format, durations."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families
from recorded import by_name

from exporter.app.flags import duration, parse_listen_address
from exporter.metrics.exposition import Family, labels, render
from exporter.sources.kernel import netlink
from exporter.sources.kernel.procfs import parse_net_dev
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


def test_parse_net_dev():
    text = (
        b"Inter-|   Receive                                                |  Transmit\n"
        b" face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo "
        b"colls carrier compressed\n"
        b"    lo:     100       2    0    0    0     0          0         0      100       2    0    0    0"
        b"     0       0          0\n"
        b"veth1234:  1  2  3  4  5  6  7  8  9 10 11 12 13 14 15 16\n"
    )
    dev = parse_net_dev(text)
    assert dev["veth1234"] == (1, 2, 3, 4, 9, 10, 11, 12) and dev["lo"][0] == 100


def test_a_name_that_is_not_utf8_is_escaped_alike_by_netlink_and_proc_net_dev():
    raw = b"e\xff\\x"  # as `ip link set eth0 name "$(printf 'e\377\\x')"` makes it
    msg = netlink._IFINFOMSG.pack(0, 0, 7, 0, 0) + netlink._attr(netlink.IFLA_IFNAME, raw + b"\0")
    link = netlink.parse_link(memoryview(msg), 0, len(msg))
    dev = parse_net_dev(b"head\nhead\n  " + raw + b": " + b" ".join(b"%d" % i for i in range(16)))
    assert link.name == r"e\xff\x5cx" and list(dev) == [link.name]
    text = render([Family("x_info", "gauge", "h").add(labels(interface=link.name), 1)])
    text.encode("utf-8")  # strict, as the web server sends it
    (fam,) = text_string_to_metric_families(text)
    assert fam.samples[0].labels["interface"] == link.name


def test_exposition_escapes_label_values_and_help():
    odd = 'we"ird\\name\nnext ünïcode'
    text = render(
        [
            Family("x_info", "gauge", "help with \\ and\nnewline").add(labels(name=odd), 1),
            Family("y_total", "counter", "c").add("", 3).add(labels(a="1"), 2.5),
        ]
    )
    (x, y) = list(text_string_to_metric_families(text))
    assert x.samples[0].labels == {"name": odd}
    assert [s.value for s in y.samples] == [3, 2.5]


@pytest.mark.parametrize(
    "text,seconds",
    [("300", 300), ("30s", 30), ("5m", 300), ("1h", 3600), ("1.5s", 1.5), ("250ms", 0.25)],
)
def test_duration(text, seconds):
    assert duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "text,parsed",
    [(":9917", ("", 9917)), ("127.0.0.1:80", ("127.0.0.1", 80)), ("[::1]:9917", ("::1", 9917))],
)
def test_listen_address(text, parsed):
    assert parse_listen_address(text) == parsed


@pytest.mark.parametrize("text", ["9917", "host:", ":0", ":70000", "localhost:http"])
def test_listen_address_rejects(text):
    with pytest.raises(ValueError):
        parse_listen_address(text)
