"""NAT rule metrics against the real kernel and the real dockerd: published ports and
masquerading, connection counters, rules deleted and restored by hand, the legacy
iptables backend, Docker 29's nftables layout loaded with nft -f, and the faults."""

from __future__ import annotations

import argparse
import json
import os
import random
import shlex
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

import docker.types
import pytest

from exporter.app.flags import default_docker_host as default_host
from exporter.commands.base import read_snapshot
from exporter.metrics.collectors.nat import NatCollector
from exporter.metrics.exposition import render
from exporter.sources.firewall.attribution import wanted_families
from exporter.sources.firewall.netfilter import Netfilter
from exporter.sources.firewall.rules import IPV6
from helpers import (
    EXPORTER,
    ROOT,
    TEST_IMAGE,
    Containers,
    Metrics,
    parse_metrics,
    printed,
    sh,
    unique,
    wait_for,
)

if TYPE_CHECKING:
    from docker import DockerClient
    from docker.models.containers import Container

FIXTURES = ROOT / "tests" / "fixtures" / "nat"
HTTPD = "httpd -p 80 -h /tmp; exec sleep 3600"
DOCKERD = [
    "/usr/sbin/dockerd",
    "--bip",
    "198.18.0.1/24",
    "--default-address-pool",
    "base=198.19.0.0/16,size=24",
]
DOCKERD_LOG = "/var/log/dockernet-test-dockerd.log"


# -- helpers ---------------------------------------------------------------------------------


def free_port_range(n: int) -> int:
    """The first of n consecutive free TCP ports."""
    for _ in range(50):
        base = random.randrange(30000, 39000)
        socks = []
        try:
            for port in range(base, base + n):
                s = socket.socket()
                socks.append(s)
                s.bind(("0.0.0.0", port))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    pytest.fail("no free port range")


def run_published(
    containers: Containers, *publish: str, network: str = "bridge", command: str = HTTPD
) -> Container:
    """A container started with the docker CLI (so that -p ranges are expanded as users see them)."""
    name = unique()
    containers.names.append(name)
    args = [a for p in publish for a in ("-p", p)]
    sh(
        "docker",
        "run",
        "-d",
        "--name",
        name,
        "--network",
        network,
        *args,
        TEST_IMAGE,
        "sh",
        "-c",
        command,
    )
    return containers.client.containers.get(name)


def bindings(c: Container) -> list[tuple[str, str, int, int]]:
    """(protocol, host_ip, host_port, container_port) as Docker reports them."""
    out = []
    for key, binds in (c.attrs["NetworkSettings"]["Ports"] or {}).items():
        port, proto = key.split("/")
        out += [(proto, b["HostIp"], int(b["HostPort"]), int(port)) for b in binds or ()]
    return sorted(out)


def port_values(m: Metrics, name: str, c: Container) -> dict:
    """(protocol, host_ip, host_port) -> value of one published-port metric for container c."""
    return {
        (l["protocol"], l["host_ip"], int(l["host_port"])): v
        for l, v in m.select(name, container_id=c.id)
    }


def present(m: Metrics, c: Container) -> dict:
    return port_values(m, "dockernet_published_port_rule_present", c)


def connections(m: Metrics, c: Container, key: tuple[str, str, int]) -> float:
    return port_values(m, "dockernet_published_port_connections_total", c)[key]


def gateway(client: DockerClient, network: str = "bridge") -> str:
    return client.networks.get(network).attrs["IPAM"]["Config"][0]["Gateway"]


def wait_listening(c: Container, port: int = 80) -> None:
    """Until the container's httpd listens (a connection refused would still count, but fail the test)."""

    def listening():
        rows = [
            l.split() for l in printed(c.exec_run("cat /proc/net/tcp /proc/net/tcp6")).splitlines()
        ]
        return any(
            r[1].endswith(f":{port:04X}") and r[3] == "0A"
            for r in rows
            if len(r) > 3 and r[0] != "sl"
        )

    wait_for(listening, what="httpd listening")


def tcp_connections(host: str, port: int, n: int) -> None:
    for _ in range(n):
        with socket.create_connection((host, port), timeout=5):
            pass


def masquerade(m: Metrics, bridge: str) -> tuple:
    return (
        m.get_value("dockernet_masquerade_rule_present", bridge=bridge),
        m.get_value("dockernet_masquerade_connections_total", bridge=bridge),
    )


def dnat_spec(bridge: str, proto: str, host_port: int, ip: str, port: int) -> list[str]:
    """Docker 20.10-27's DNAT rule for a 0.0.0.0 binding, as `iptables -t nat -S` prints it."""
    return [
        "DOCKER",
        "!",
        "-i",
        bridge,
        "-p",
        proto,
        "-m",
        proto,
        "--dport",
        str(host_port),
        "-j",
        "DNAT",
        "--to-destination",
        f"{ip}:{port}",
    ]


# -- published ports on the live host ---------------------------------------------------------------


def test_published_ports_rules_and_connection_counter(
    containers, exporter, docker_client, tmp_path
):
    base = free_port_range(3)
    c = run_published(containers, "80", "127.0.0.1::81/udp", f"{base}-{base + 2}:90-92")
    p = exporter()
    expected = {(proto, ip, hp) for proto, ip, hp, _ in bindings(c) if ip != "::"}
    assert len(expected) == 5
    m = wait_for(
        lambda: (m := p.metrics()) and set(present(m, c)) == expected and m, what="five DNAT rules"
    )
    assert set(present(m, c).values()) == {1}
    info = port_values(m, "dockernet_published_port_info", c)
    assert set(info) == {(proto, ip, hp) for proto, ip, hp, _ in bindings(c)}  # IPv6 bindings too
    assert {
        l["container_port"]
        for l, _ in m.select("dockernet_published_port_info", container_id=c.id, host_port=base + 1)
    } == {"91"}
    assert m.get_value("dockernet_netfilter_info", backend="iptables-nft") == 1
    assert m.get_value("dockernet_scrape_collector_success", collector="nat") == 1
    assert m.get_value("dockernet_netfilter_rules", table="ip nat", chain="DOCKER") >= 5

    (tcp80,) = [k for k in expected if k[0] == "tcp" and k[2] not in range(base, base + 3)]
    before = connections(m, c, tcp80)
    wait_listening(c)
    tcp_connections(gateway(docker_client), tcp80[2], 5)  # OUTPUT -> DOCKER -> DNAT
    counted = connections(p.metrics(), c, tcp80)
    assert counted == before + 5

    # Paths the DNAT counter does not see: loopback (docker-proxy) and containers on a bridge (RETURN).
    tcp_connections("127.0.0.1", tcp80[2], 3)
    client = containers.run()
    out = client.exec_run(
        [
            "sh",
            "-c",
            f"for i in 1 2 3; do echo | nc -w 5 {gateway(docker_client)} {tcp80[2]}"
            f" >/dev/null && echo ok; done",
        ]
    ).output.decode()
    assert out.split() == ["ok"] * 3
    final = p.metrics()
    assert connections(final, c, tcp80) == counted
    assert "connections to 127.0.0.1" in p.text()

    path = tmp_path / "metrics.txt"
    path.write_text(p.text())
    lint = subprocess.run(
        ["promtool", "check", "metrics"], stdin=path.open(), capture_output=True, text=True
    )
    assert lint.returncode == 0, lint.stdout + lint.stderr


def test_deleted_dnat_rule_is_reported_for_that_binding_only(containers, exporter):
    c = run_published(containers, "80", "81")
    ip = c.attrs["NetworkSettings"]["Networks"]["bridge"]["IPAddress"]
    ports = {cp: hp for proto, host_ip, hp, cp in bindings(c) if host_ip == "0.0.0.0"}
    p = exporter()
    wait_for(
        lambda: set(present(p.metrics(), c).values()) == {1} and len(present(p.metrics(), c)) == 2,
        what="both rules present",
    )
    spec = dnat_spec("docker0", "tcp", ports[80], ip, 80)
    sh("iptables", "-t", "nat", "-D", *spec)
    try:
        m = p.metrics()
        assert present(m, c) == {("tcp", "0.0.0.0", ports[80]): 0, ("tcp", "0.0.0.0", ports[81]): 1}
    finally:
        sh("iptables", "-t", "nat", "-A", *spec)
    assert present(p.metrics(), c) == {
        ("tcp", "0.0.0.0", ports[80]): 1,
        ("tcp", "0.0.0.0", ports[81]): 1,
    }


def test_steady_scrapes_run_only_the_save_command_of_dockers_backend(containers):
    """After one read of every backend, a scrape runs only the chosen backend's iptables-save (and its
    IPv6 twin where Docker has IPv6) and still sees a DNAT rule deleted since the scrape before."""
    c = run_published(containers, "80")
    ip = c.attrs["NetworkSettings"]["Networks"]["bridge"]["IPAddress"]
    (port,) = [hp for proto, host_ip, hp, _ in bindings(c) if host_ip == "0.0.0.0"]
    snap = read_snapshot(
        argparse.Namespace(docker_host=default_host(), docker_timeout=30, procfs="/proc"),
        warn=False,
    )
    netfilter = Netfilter()
    collector = NatCollector(netfilter=netfilter)

    def scrape() -> tuple[dict, str]:
        got = parse_metrics(render(collector.collect(snap)))
        (backend,) = [l["backend"] for l, _ in got["dockernet_netfilter_info"]]
        return {
            int(l["host_port"]): v
            for l, v in got["dockernet_published_port_rule_present"]
            if l["container_id"] == c.id
        }, backend

    assert scrape() == ({port: 1}, "iptables-nft")
    assert ("iptables-legacy-save", "-c") in netfilter.last_commands and (
        "nft",
        "-j",
        "list",
        "tables",
    ) in netfilter.last_commands
    steady = [("iptables-nft-save", "-c")]
    if IPV6 in wanted_families([v.container for v in snap.containers], snap.networks.values()):
        steady.append(
            ("ip6tables-nft-save", "-c")
        )  # another test's IPv6 network on the shared host
    assert scrape() == ({port: 1}, "iptables-nft") and netfilter.last_commands == steady
    spec = dnat_spec("docker0", "tcp", port, ip, 80)
    sh("iptables", "-t", "nat", "-D", *spec)
    try:
        assert scrape() == ({port: 0}, "iptables-nft") and netfilter.last_commands == steady
    finally:
        sh("iptables", "-t", "nat", "-A", *spec)
    assert scrape() == ({port: 1}, "iptables-nft")


def test_rules_changing_between_scrapes_never_hide_a_stable_binding(containers, exporter):
    """Rules inserted and deleted around a binding's rule shift every position; attribution is by
    address and port, so the stable binding reads present on every scrape."""
    c = run_published(containers, "80")
    p = exporter()
    wait_for(lambda: set(present(p.metrics(), c).values()) == {1}, what="rule present")
    churn = [
        "DOCKER",
        "-p",
        "tcp",
        "-m",
        "tcp",
        "--dport",
        str(free_port_range(1)),
        "-j",
        "DNAT",
        "--to-destination",
        "198.18.0.254:9",
    ]
    stop = threading.Event()

    def flap():
        while not stop.is_set():
            sh("iptables", "-t", "nat", "-I", *churn[:1], "1", *churn[1:])
            sh("iptables", "-t", "nat", "-D", *churn)

    t = threading.Thread(target=flap, daemon=True)
    t.start()
    try:
        seen = [set(present(p.metrics(), c).values()) for _ in range(15)]
    finally:
        stop.set()
        t.join()
        sh("iptables", "-t", "nat", "-D", *churn, check=False)
    assert seen == [{1}] * 15


def test_masquerade_counter_and_flushed_postrouting(containers, exporter, host_exclusive):
    net = containers.network()
    net.reload()
    bridge = "br-" + net.id[:12]
    c = containers.run(network=net.name)
    ns, host_if, ns_if = unique("dnxns"), unique("dnxh")[:15], unique("dnxp")[:15]
    third = random.randrange(128, 250)
    host_addr, ns_addr = f"198.18.{third}.1", f"198.18.{third}.2"
    sh("ip", "netns", "add", ns)
    postrouting = []
    try:
        sh("ip", "link", "add", host_if, "type", "veth", "peer", "name", ns_if)
        sh("ip", "link", "set", ns_if, "netns", ns)
        sh("ip", "addr", "add", f"{host_addr}/30", "dev", host_if)
        sh("ip", "link", "set", host_if, "up")
        sh("ip", "netns", "exec", ns, "ip", "addr", "add", f"{ns_addr}/30", "dev", ns_if)
        sh("ip", "netns", "exec", ns, "ip", "link", "set", ns_if, "up")
        p = exporter()
        before = wait_for(
            lambda: masquerade(p.metrics(), bridge)[0] == 1 and masquerade(p.metrics(), bridge),
            what="masquerade rule of the new network",
        )
        for _ in range(4):  # each ping is a new ICMP id, so a new connection through POSTROUTING
            assert c.exec_run(f"ping -c 1 -W 2 {ns_addr}").exit_code == 0
        assert masquerade(p.metrics(), bridge) == (1, before[1] + 4)

        postrouting = [  # shlex: other tools' rules carry quoted comments (CNI's pods)
            shlex.split(l)[1:]
            for l in sh("iptables", "-t", "nat", "-S", "POSTROUTING").splitlines()
            if l.startswith("-A ")
        ]
        sh("iptables", "-t", "nat", "-F", "POSTROUTING")
        m = p.metrics()
        assert masquerade(m, bridge)[0] == 0 and masquerade(m, "docker0")[0] == 0
        for rule in postrouting:
            sh("iptables", "-t", "nat", "-A", *rule)
        postrouting = []
        assert masquerade(p.metrics(), bridge)[0] == 1
    finally:
        for rule in postrouting:
            sh("iptables", "-t", "nat", "-A", *rule)
        sh("ip", "link", "del", host_if, check=False)
        sh("ip", "netns", "del", ns, check=False)


def test_removed_network_is_no_longer_judged(containers, exporter):
    """A network removed from Docker leaves the state at its event: no masquerade expected of
    it (a stale network would read as a missing rule until the next full resync)."""
    keep, gone = containers.network(), containers.network()
    p = exporter()
    bridges = {n: "br-" + n.id[:12] for n in (keep, gone)}
    for net in (keep, gone):
        containers.run(network=net.name).remove(force=True)  # the bridge exists once used
    wait_for(
        lambda: all(masquerade(p.metrics(), b)[0] == 1 for b in bridges.values()),
        what="both networks judged",
    )
    gone.remove()
    containers.networks.remove(gone)
    wait_for(
        lambda: (
            (m := p.metrics()).get_value("dockernet_masquerade_rule_present", bridge=bridges[gone])
            is None
            and masquerade(m, bridges[keep])[0] == 1
        ),
        what="the removed network no longer judged, the other still",
    )


# -- Docker 29's nftables layout, loaded in a namespace of our own --------------------------------


def test_docker29_nftables_layout_live(containers, docker_client):
    pool4 = docker.types.IPAMPool(subnet=f"198.19.{random.randrange(200, 250)}.0/24")
    pool6 = docker.types.IPAMPool(subnet=f"2001:2:0:{random.randrange(0x100, 0xFFF):x}::/64")
    net = containers.network(
        enable_ipv6=True, ipam=docker.types.IPAMConfig(pool_configs=[pool4, pool6])
    )
    net.reload()
    bridge = "br-" + net.id[:12]
    c = run_published(containers, "80", "127.0.0.1::81/udp", network=net.name)
    ep = c.attrs["NetworkSettings"]["Networks"][net.name]
    (tcp,) = {hp for proto, ip, hp, _ in bindings(c) if proto == "tcp" and ip == "0.0.0.0"}
    (tcp6,) = {
        hp for proto, ip, hp, _ in bindings(c) if proto == "tcp" and ip == "::"
    }  # may differ from tcp
    (udp,) = {hp for proto, ip, hp, _ in bindings(c) if proto == "udp"}
    ruleset4, sep, ruleset6 = (
        (FIXTURES / "docker29.nft").read_text().partition("table ip6 docker-bridges")
    )
    ruleset = ruleset4 + sep + ruleset6.replace("dport 8080", f"dport {tcp6}")
    for old, new in (
        ("bridge1", bridge),
        ("198.19.7.2", ep["IPAddress"]),
        ("198.19.7.0/24", pool4["Subnet"]),
        ("2001:2:0:7::2", ep["GlobalIPv6Address"]),
        ("2001:2:0:7::/64", pool6["Subnet"]),
        ("dport 8080", f"dport {tcp}"),
        ("dport 8081", f"dport {udp}"),
    ):
        assert old in ruleset
        ruleset = ruleset.replace(old, new)
    ns = unique("dnxns")
    sh("ip", "netns", "add", ns)
    try:
        subprocess.run(
            ["ip", "netns", "exec", ns, "nft", "-f", "-"], input=ruleset, text=True, check=True
        )
        out = subprocess.run(
            ["ip", "netns", "exec", ns, *EXPORTER, "nat", "--output", "json"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        sh("ip", "netns", "del", ns)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["backend"] == "nftables" and report["unparsed_rules"] == 0
    mine = {
        (r["protocol"], r["host_ip"], r["host_port"]): (r["rule"], r["connections"])
        for r in report["published_ports"]
        if r["container_id"] == c.id
    }
    assert mine == {
        ("tcp", "0.0.0.0", tcp): ("present", 12),
        ("tcp", "::", tcp6): ("present", 4),
        ("udp", "127.0.0.1", udp): ("present", 0),
    }
    masq = {
        r["subnet"]: (r["rule"], r["connections"])
        for r in report["masquerade"]
        if r["bridge"] == bridge
    }
    assert masq == {pool4["Subnet"]: ("present", 5), pool6["Subnet"]: ("present", 2)}


# -- faults ------------------------------------------------------------------------------------------


def test_no_firewall_tools_is_one_log_line_and_the_rest_works(exporter, tmp_path):
    p = exporter(env={"PATH": str(tmp_path)})
    for _ in range(3):
        m = p.metrics()
    assert m.get_value("dockernet_scrape_collector_success", collector="nat") == 0
    assert m.get_value("dockernet_scrape_collector_success", collector="containers") == 1
    lines = [l for l in p.log().splitlines() if "collector=nat" in l]
    assert len(lines) == 1 and "neither iptables-save nor nft found" in lines[0], p.log()
    assert "Traceback" not in p.log()
    cmd = subprocess.run(
        EXPORTER + ["nat"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env=dict(os.environ, PATH=str(tmp_path)),
    )
    assert cmd.returncode == 1 and len(cmd.stderr.strip().splitlines()) == 1, cmd.stderr
    assert "cannot read the firewall rules" in cmd.stderr


def test_failing_tool_is_one_log_line_even_when_another_backend_answers(exporter, tmp_path):
    """iptables-nft-save fails, nft answers but holds no Docker table: Docker's rules may be in the
    backend that failed, so the collector fails instead of calling every rule missing."""
    tool = tmp_path / "iptables-nft-save"
    tool.write_text(
        "#!/bin/sh\necho 'iptables-nft-save v1.8.9 (nf_tables): Could not fetch rule set generation id: "
        "Permission denied (you must be root)' >&2\nexit 4\n"
    )
    tool.chmod(0o755)
    (tmp_path / "nft").symlink_to(sh("sh", "-c", "command -v nft").strip())
    p = exporter(env={"PATH": str(tmp_path)})
    for _ in range(3):
        m = p.metrics()
    assert m.get_value("dockernet_scrape_collector_success", collector="nat") == 0
    assert "dockernet_published_port_rule_present" not in m
    lines = [l for l in p.log().splitlines() if "collector=nat" in l]
    assert len(lines) == 1 and "Permission denied" in lines[0], p.log()
    assert "Traceback" not in p.log()


def test_hanging_tool_is_bounded_by_the_timeout(exporter, tmp_path):
    slow = tmp_path / "nft"
    slow.write_text("#!/bin/sh\nexec sleep 30\n")
    slow.chmod(0o755)
    p = exporter("--collector.nat.timeout=0.5s", env={"PATH": f"{tmp_path}:/bin:/usr/bin"})
    started = time.monotonic()
    for _ in range(2):
        m = p.metrics()
    assert time.monotonic() - started < 5
    assert m.get_value("dockernet_scrape_collector_success", collector="nat") == 0
    lines = [l for l in p.log().splitlines() if "collector=nat" in l]
    assert len(lines) == 1 and "did not answer within 0.5s" in lines[0], p.log()
    children = sh("ps", "--ppid", str(p.proc.pid), "-o", "args=", check=False).splitlines()
    assert not [l for l in children if l.startswith("sleep")], (
        children
    )  # timed-out commands are killed


# -- the legacy iptables backend ----------------------------------------------------------------------


def alternative(name: str) -> tuple[str, str]:
    """(status, value) of an iptables alternative."""
    query = dict(
        l.split(": ", 1)
        for l in sh("update-alternatives", "--query", name).splitlines()
        if ": " in l
    )
    return query["Status"], query["Value"]


def restore_alternative(name: str, saved: tuple[str, str]) -> None:
    if saved[0] == "auto":
        sh("update-alternatives", "--auto", name)
    else:
        sh("update-alternatives", "--set", name, saved[1])


def restart_dockerd(docker_client: DockerClient) -> None:
    """Stop dockerd and start it exactly as scripts/test-env.sh does; wait until it answers."""
    pid = int(Path("/var/run/docker.pid").read_text())
    os.kill(pid, signal.SIGTERM)
    wait_for(
        lambda: not Path(f"/proc/{pid}").exists(), timeout=60, interval=0.2, what="dockerd to stop"
    )
    Path("/var/run/docker.pid").unlink(missing_ok=True)
    # Through a shell that exits at once, as test-env.sh does: dockerd is nobody's child here.
    sh("sh", "-c", f'setsid "$@" >>{DOCKERD_LOG} 2>&1 </dev/null &', "sh", *DOCKERD)

    def answers():
        try:
            return docker_client.ping()
        except Exception:
            return False

    wait_for(answers, timeout=60, interval=0.5, what="dockerd to answer")


def legacy_tables() -> list[str]:
    return Path("/proc/net/ip_tables_names").read_text().split()


def test_legacy_backend(containers, exporter, docker_client, host_exclusive):
    saved = {name: alternative(name) for name in ("iptables", "ip6tables")}
    legacy_before = sh("iptables-legacy-save")
    try:
        for name in saved:
            sh("update-alternatives", "--set", name, f"/usr/sbin/{name}-legacy")
        restart_dockerd(docker_client)
        c = run_published(containers, "80", "127.0.0.1::81/udp")
        p = exporter()
        m = wait_for(
            lambda: (m := p.metrics()) and len(present(m, c)) == 2 and m, what="legacy rules"
        )
        assert m.get_value("dockernet_netfilter_info", backend="iptables-legacy") == 1
        assert set(present(m, c).values()) == {1}
        assert masquerade(m, "docker0")[0] == 1
        assert (
            m.get_value(
                "dockernet_netfilter_rules",
                backend="iptables-legacy",
                table="ip nat",
                chain="DOCKER",
            )
            >= 2
        )
        (tcp80,) = [k for k in present(m, c) if k[0] == "tcp"]
        before = connections(m, c, tcp80)
        wait_listening(c)
        tcp_connections(gateway(docker_client), tcp80[2], 3)
        assert connections(p.metrics(), c, tcp80) == before + 3
        containers.cleanup()
        containers.names.clear()
    finally:
        for name, value in saved.items():
            restore_alternative(name, value)
        restart_dockerd(docker_client)
        for table in legacy_tables():  # what this dockerd left in the legacy tables
            sh("iptables-legacy", "-t", table, "-F")
            sh("iptables-legacy", "-t", table, "-X")
        if legacy_before.strip():
            subprocess.run(["iptables-legacy-restore"], input=legacy_before, text=True, check=True)
    assert alternative("iptables") == saved["iptables"]
    assert sh("iptables-legacy-save").count("-A ") == legacy_before.count("-A ")
