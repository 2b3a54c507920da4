"""The one-shot commands, without the daemon, against the same ground truth:
the container's own view, `ip`/`bridge`, and `ip netns exec`."""

from __future__ import annotations

import json
import os
import subprocess
from typing import TYPE_CHECKING, Any

from test_addresses import inside
from test_bridges import bridge_ports, ipv6_network

from helpers import EXPORTER, ROOT, ip_json, printed, sh, unique

if TYPE_CHECKING:
    from docker.models.containers import Container

NO_DOCKER = "unix:///run/dnx-no-docker.sock"


def cli(*args: str, check: bool = True, user: str = "") -> subprocess.CompletedProcess:
    cmd = EXPORTER + list(args)
    if user:
        cmd = [
            "setpriv",
            f"--reuid={user}",
            f"--regid={user}",
            "--clear-groups",
            "--inh-caps=-all",
        ] + cmd
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=60)
    if check:
        assert done.returncode == 0, done.stderr
    return done


def cli_json(*args: str) -> Any:
    return json.loads(cli(*args, "-o", "json").stdout)


def iflink(container: Container, interface: str = "eth0") -> int:
    return int(printed(container.exec_run(f"cat /sys/class/net/{interface}/iflink")))


def brctl_show(bridge: str) -> tuple:
    """(bridge id, STP enabled, ports) as `brctl show` prints them."""
    first, *more = sh("brctl", "show", bridge).splitlines()[1:]
    _name, bridge_id, stp, *port = first.split()
    return bridge_id, stp, sorted(port + [line.strip() for line in more])


def test_veths_ips_and_bridges(containers):
    net = ipv6_network(containers)
    c = containers.run(network=net.name)
    containers.client.networks.get("bridge").connect(c)
    by_index = {l["ifindex"]: l["ifname"] for l in ip_json("link", "show", "type", "veth")}

    veths = [r for r in cli_json("veths") if r["container_id"] == c.id]
    assert {(r["interface"], r["veth"]) for r in veths} == {
        ("eth0", by_index[iflink(c, "eth0")]),
        ("eth1", by_index[iflink(c, "eth1")]),
    }
    assert {(r["interface"], r["bridge"], r["network"], r["netns"]) for r in veths} == {
        ("eth0", "br-" + net.short_id, net.name, ""),
        ("eth1", "docker0", "bridge", ""),
    }

    ips = {
        (r["interface"], r["family"], *r["address"].split("/"))
        for r in cli_json("ips")
        if r["container_id"] == c.id
    }
    assert ips == inside(c)

    kernel = bridge_ports()
    bridges = {b["bridge"]: b for b in cli_json("bridges")}
    for r in veths:
        (port,) = [p for p in bridges[r["bridge"]]["ports"] if p["port"] == r["veth"]]
        assert (r["bridge"], port["port_state"]) == kernel[r["veth"]]
        assert (port["container_name"], port["interface"]) == (c.name, r["interface"])
    mine = bridges["br-" + net.short_id]
    (link,) = ip_json("link", "show", mine["bridge"])
    assert mine["network"] == net.name and mine["state"] == link["operstate"].lower()
    assert brctl_show(mine["bridge"]) == (
        mine["id"],
        mine["stp"],
        sorted(p["port"] for p in mine["ports"]),
    )
    table = cli("bridges").stdout.splitlines()
    assert table[0].split()[:4] == ["BRIDGE", "NETNS", "BRIDGE", "ID"]
    assert mine["netns"] == mine["vni"] == "" and mine["vxlan"] is None  # the host's, no overlay
    assert any(c.name in line and r["veth"] in line for line in table for r in veths)


def test_orphans_command(hand):
    base = unique()
    pair = hand.pair(base + "a", base + "b", master="docker0")
    loose = hand.pair(base + "u", base + "v")
    found = {r["veth"]: r for r in cli_json("orphans", "--grace", "1s")}
    assert (found[pair]["reason"], found[pair]["bridge"]) == ("peer_in_host", "docker0")
    assert found[pair]["age_seconds"] >= 1
    assert loose not in found
    found = {r["veth"]: r["reason"] for r in cli_json("orphans", "--grace", "0s", "--scope", "all")}
    assert found[loose] == found[base + "v"] == "peer_in_host"
    hand.delete(pair)
    assert pair not in {r["veth"] for r in cli_json("orphans", "--grace", "0s")}


def test_source_flags_after_the_command_and_docker_unreachable(containers):
    c = containers.run()
    veth_name = {l["ifindex"]: l["ifname"] for l in ip_json("link", "show", "type", "veth")}[
        iflink(c)
    ]
    done = cli("veths", "--docker.host", NO_DOCKER, "--path.procfs", "/proc", "-o", "json")
    assert done.stderr.splitlines() == [
        f"warning: Docker is unreachable at {NO_DOCKER}; "
        "showing what the kernel knows, without container names"
    ]
    rows = {r["veth"]: r for r in json.loads(done.stdout)}
    assert rows[veth_name]["container_id"] == "" and rows[veth_name]["bridge"] == "docker0"
    # The same flag before the command still works, and one after it wins.
    assert (
        c.id[:12]
        in cli(
            "--docker.host", NO_DOCKER, "veths", "--docker.host", "unix:///var/run/docker.sock"
        ).stdout
    )
    done = cli("netns", "visible", c.name, "--docker.host", NO_DOCKER, check=False)
    assert done.returncode == 1 and len(done.stderr.splitlines()) == 1
    assert "Docker is unreachable" in done.stderr
    done = cli("ips", "--path.procfs", check=False)
    assert done.returncode == 2 and len(done.stderr.splitlines()) == 1


def test_commands_say_they_need_root():
    for command in (["ips"], ["bridges"], ["orphans"], ["netns", "visible"]):
        done = cli(*command, check=False, user="65534")
        assert done.returncode == 1, command
        assert (
            done.stderr.startswith("dockernet-exporter: error: needs root")
            and len(done.stderr.splitlines()) == 1
        )


def test_netns_visible_then_invisible(containers):
    a, b = containers.run(), containers.run()
    foreign = unique()
    sh("ip", "netns", "add", foreign)  # an `ip netns add` entry: never touched
    try:
        rows = cli_json("netns", "visible", a.name, b.name)
        assert {(r["name"], r["status"]) for r in rows} == {
            (a.name, "created"),
            (b.name, "created"),
        }
        for c in (a, b):
            got = sh("ip", "netns", "exec", c.name, "ip", "-o", "addr", "show", "eth0")
            c.reload()
            assert f"inet {c.attrs['NetworkSettings']['IPAddress']}/" in got
        assert {(r["name"], r["status"]) for r in cli_json("netns", "visible", a.name)} == {
            (a.name, "kept"),
            (b.name, "kept"),
        }
        assert a.name in sh("ip", "netns", "list")

        b.remove(force=True)  # its link goes stale: the next run removes it
        rows = cli_json("netns", "visible", a.name)
        assert {(r["name"], r["status"]) for r in rows} == {
            (b.name, "removed (container gone)"),
            (a.name, "kept"),
        }
        assert not os.path.lexists(f"/var/run/netns/{b.name}")

        before = set(os.listdir("/var/run/netns"))
        rows = cli_json("netns", "invisible")
        assert [(r["name"], r["status"]) for r in rows] == [(a.name, "removed")]
        assert set(os.listdir("/var/run/netns")) == before - {a.name}
        assert foreign in before and os.path.exists(f"/var/run/netns/{foreign}")
        assert cli_json("netns", "invisible") == []  # idempotent
    finally:
        cli("netns", "invisible", a.name, b.name, check=False)
        sh("ip", "netns", "del", foreign, check=False)


def test_a_reader_that_goes_away_is_no_error():
    p = subprocess.Popen(
        EXPORTER + ["bridges", "-o", "json"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert p.stdout is not None and p.stderr is not None
    p.stdout.close()  # as `| head -1` does once it has its line
    assert (p.wait(60), p.stderr.read()) == (0, "")
