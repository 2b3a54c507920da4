"""Flows between workloads on the real kernel, the real dockerd and real traffic.

Ground truth: the connections each test makes itself (from the containers' own namespaces, with
the host's Python under nsenter), and `conntrack -L` listing the same tuples. Addresses are the
test dockerd's (198.18.0.0/15) and loopback; traffic only between the test's own containers.
"""

from __future__ import annotations

import json
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from flow_helpers import (
    CONNECT,
    Named,
    address,
    connect,
    conntrack,
    drop_syns,
    flow,
    in_netns,
    known,
    netns,
    settled,
    start_exporter,
)
from test_cri import CRI, pods  # noqa: F401 (a fixture)

from helpers import Hand, ipv6_network, sh, unique, wait_for

if TYPE_CHECKING:
    pass

ACCT = Path("/proc/sys/net/netfilter/nf_conntrack_acct")
FLOW = "dockernet_flow_connections_opened_total"
UNANSWERED = "dockernet_flow_connections_unanswered_total"
OPEN = "dockernet_flow_connections"

UDP = """
import socket, sys
for _ in range(int(sys.argv[3])):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(b"ping", (sys.argv[1], int(sys.argv[2])))
"""

# Reads until the client's end of stream, answers with argv[2] bytes.
SERVE = """
import socket, sys
with socket.socket() as srv:
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("0.0.0.0", int(sys.argv[1])))
    srv.listen()
    print("ready", flush=True)
    conn, _ = srv.accept()
    while conn.recv(65536):
        pass
    conn.sendall(b"r" * int(sys.argv[2]))
    conn.close()
"""

# Sends argv[3] bytes, then reads the answer to its end; prints how much it got.
SEND = """
import socket, sys
with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10) as s:
    s.sendall(b"s" * int(sys.argv[3]))
    s.shutdown(socket.SHUT_WR)
    got = 0
    while chunk := s.recv(65536):
        got += len(chunk)
print(got)
"""


@pytest.fixture(scope="module", autouse=True)
def conntrack_tools():
    if shutil.which("conntrack") is None:
        pytest.fail("no `conntrack` (conntrack-tools) for the ground truth: run `make test-env`")


@pytest.fixture(scope="module")
def flow_exporter(docker_client):
    exporter = start_exporter()
    yield exporter
    exporter.stop()


@pytest.fixture
def net(containers):
    return containers.network(unique("dnxflow"))


def test_tcp_between_two_containers_on_one_bridge(flow_exporter, containers, net):
    server = containers.run(command="httpd -f -p 80", network=net.name)
    client = containers.run(network=net.name)
    known(flow_exporter, server, client)
    server_ip, client_ip = address(server, net), address(client, net)
    assert connect(client, server_ip, 80, 5) == 5
    m = settled(flow_exporter, FLOW, client, server, 80, 5)
    entries = conntrack("-p", "tcp", "-s", client_ip, "-d", server_ip, "--dport", "80")
    assert len(entries) == 5
    assert flow(m, OPEN, client, server, 80) == len(entries)
    assert flow(m, UNANSWERED, client, server, 80) == 0
    bridge = "br-" + net.id[:12]
    assert m.get_value("dockernet_flow_visibility", bridge=bridge) == 1
    # Raw addresses are never label values of the flows.
    lines = [l for l in flow_exporter.text().splitlines() if l.startswith("dockernet_flow")]
    assert not [l for l in lines if server_ip in l or client_ip in l]


def test_connections_of_containers_just_started_on_a_network_just_made(flow_exporter, containers):
    """The first packets may come before the exporter's snapshot has the network or the
    containers: they wait for them, and are not taken for the host's or external traffic."""
    net = containers.network(unique("dnxflow"))
    server = containers.run(command="httpd -f -p 80", network=net.name)
    client = containers.run(network=net.name)
    assert connect(client, address(server, net), 80, 2) == 2
    settled(flow_exporter, FLOW, client, server, 80, 2)


def test_syns_dropped_by_the_server_are_unanswered(flow_exporter, containers, net):
    server = containers.run(network=net.name)
    client = containers.run(network=net.name)
    drop_syns(server, 81)
    known(flow_exporter, server, client)
    server_ip = address(server, net)
    assert connect(client, server_ip, 81, 3, timeout=0.3) == 0
    m = settled(flow_exporter, UNANSWERED, client, server, 81, 3)
    assert flow(m, FLOW, client, server, 81) == 3
    unreplied = conntrack("-p", "tcp", "-d", server_ip, "--dport", "81")
    assert len(unreplied) == 3 and all("[UNREPLIED]" in l for l in unreplied)


def test_a_closed_port_answers_with_a_reset(flow_exporter, containers, net):
    server = containers.run(network=net.name)
    client = containers.run(network=net.name)
    known(flow_exporter, server, client)
    assert connect(client, address(server, net), 82, 4) == 0
    m = settled(flow_exporter, FLOW, client, server, 82, 4)
    # Past the unanswered delay (1s here), and after the events of a later connection.
    assert connect(client, address(server, net), 82, 1) == 0
    m = settled(flow_exporter, FLOW, client, server, 82, 5)
    assert flow(m, UNANSWERED, client, server, 82) == 0


def test_udp_to_a_closed_port_is_unanswered(flow_exporter, containers, net):
    server = containers.run(network=net.name)
    client = containers.run(network=net.name)
    known(flow_exporter, server, client)
    server_ip = address(server, net)
    in_netns(client, UDP, server_ip, 5353, 3)
    m = settled(flow_exporter, UNANSWERED, client, server, 5353, 3, proto="udp")
    assert flow(m, FLOW, client, server, 5353, "udp") == 3
    assert len(conntrack("-p", "udp", "-d", server_ip, "--dport", "5353")) == 3


def test_published_port_from_the_host_goes_to_the_container(flow_exporter, containers, net):
    """Through docker-proxy (127.0.0.1) and through DNAT (the bridge's gateway): both are the host
    reaching the container's port 80."""
    net.reload()
    gateway = net.attrs["IPAM"]["Config"][0]["Gateway"]
    proxied, nated = free_ports(2)
    server = containers.run(
        command="httpd -f -p 80",
        network=net.name,
        ports={"80/tcp": [("127.0.0.1", proxied), (gateway, nated)]},
    )
    known(flow_exporter, server)
    host = Named("host")
    wait_for(
        lambda: sh("ss", "-Hltn", f"sport = :{proxied}").strip(), 10, what="docker-proxy listening"
    )
    for target in (("127.0.0.1", proxied), (gateway, nated)):
        assert int(sh(sys.executable, "-c", CONNECT, *map(str, target), "3", "2")) == 3
    m = settled(flow_exporter, FLOW, host, server, 80, 6)
    server_ip = address(server, net)
    assert len(conntrack("-p", "tcp", "--reply-src", server_ip, "--reply-port-src", "80")) == 6
    assert (
        flow(m, FLOW, host, server, proxied) is None and flow(m, FLOW, host, server, nated) is None
    )


def test_isolated_networks_make_no_flow(flow_exporter, containers, net):
    """Docker drops traffic between two networks in FORWARD, before conntrack confirms an entry:
    the table has none, and neither has the exporter."""
    other = containers.network(unique("dnxflow"))
    server = containers.run(command="httpd -f -p 80", network=other.name)
    client = containers.run(network=net.name)
    known(flow_exporter, server, client)
    server_ip = address(server, other)
    assert connect(client, server_ip, 80, 2, timeout=0.3) == 0
    # A connection that does get through, after the dropped ones: its count proves the exporter
    # has read past them.
    helper = containers.run(network=other.name)
    known(flow_exporter, helper)
    assert connect(helper, server_ip, 80, 1) == 1
    m = settled(flow_exporter, FLOW, helper, server, 80, 1)
    assert (
        conntrack("-p", "tcp", "-d", server_ip, "--dport", "80", "-s", address(client, net)) == []
    )
    assert flow(m, FLOW, client, server, 80) is None


@pytest.fixture
def accounting(request):
    """nf_conntrack_acct set to the test's value, restored after."""
    before = ACCT.read_text()
    ACCT.write_text(str(request.param))
    yield request.param
    ACCT.write_text(before)


@pytest.mark.parametrize("accounting", [1], indirect=True)
def test_bytes_with_accounting(flow_exporter, containers, net, accounting):
    server = containers.run(network=net.name)
    client = containers.run(network=net.name)
    known(flow_exporter, server, client)
    server_ip, client_ip = address(server, net), address(client, net)
    serving = subprocess.Popen(
        ["nsenter", netns(server), sys.executable, "-c", SERVE, "9000", "50000"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert serving.stdout is not None and serving.stdout.readline().strip() == "ready"
        assert int(in_netns(client, SEND, server_ip, 9000, 100000)) == 50000
    finally:
        serving.wait(10)
    (line,) = conntrack("-p", "tcp", "-s", client_ip, "-d", server_ip, "--dport", "9000")
    packets = [int(v) for v in re.findall(r"packets=(\d+)", line)]
    octets = [int(v) for v in re.findall(r"bytes=(\d+)", line)]
    m = settled(flow_exporter, "dockernet_flow_sent_bytes_total", client, server, 9000, octets[0])
    assert flow(m, "dockernet_flow_received_bytes_total", client, server, 9000) == octets[1]
    assert flow(m, "dockernet_flow_sent_packets_total", client, server, 9000) == packets[0]
    assert flow(m, "dockernet_flow_received_packets_total", client, server, 9000) == packets[1]
    # What the test transferred, plus 40 to 60 bytes of IPv4 and TCP headers per packet.
    for payload, count, total in ((100000, packets[0], octets[0]), (50000, packets[1], octets[1])):
        assert 40 * count <= total - payload <= 60 * count
    assert m.get_value("dockernet_flow_accounting_enabled") == 1


@pytest.mark.parametrize("accounting", [0], indirect=True)
def test_no_byte_families_without_accounting(flow_exporter, containers, net, accounting):
    server = containers.run(command="httpd -f -p 80", network=net.name)
    client = containers.run(network=net.name)
    known(flow_exporter, server, client)
    assert connect(client, address(server, net), 80, 1) == 1
    m = settled(flow_exporter, FLOW, client, server, 80, 1)
    assert m.get_value("dockernet_flow_accounting_enabled") == 0
    assert not [n for n in m if n.startswith(("dockernet_flow_sent", "dockernet_flow_received"))]


def test_lost_events_are_counted_and_the_table_read_again(containers, net):
    """A receive buffer of a few events, and the exporter stopped while 200 connections are made:
    the kernel drops events; once it runs again, the exporter counts them and reads the table."""
    exporter = start_exporter("--collector.flows.rcvbuf=4096")
    try:
        server = containers.run(command="httpd -f -p 80", network=net.name)
        client = containers.run(network=net.name)
        known(exporter, server, client)
        server_ip, client_ip = address(server, net), address(client, net)
        exporter.proc.send_signal(signal.SIGSTOP)
        try:
            assert connect(client, server_ip, 80, 200) == 200
        finally:
            exporter.proc.send_signal(signal.SIGCONT)
        m = settled(exporter, FLOW, client, server, 80, 200)
        assert (m.get_value("dockernet_flow_events_lost_total") or 0) > 0
        entries = conntrack("-p", "tcp", "-s", client_ip, "-d", server_ip, "--dport", "80")
        assert flow(m, OPEN, client, server, 80) == len(entries) == 200
        assert "flows_events_lost" in exporter.log()
    finally:
        exporter.stop()


def test_series_of_a_removed_workload_are_dropped(flow_exporter, containers, net):
    server = containers.run(command="httpd -f -p 80", network=net.name)
    client = containers.run(network=net.name)
    known(flow_exporter, server, client)
    assert connect(client, address(server, net), 80, 2) == 2
    settled(flow_exporter, FLOW, client, server, 80, 2)
    client.remove(force=True)
    wait_for(
        lambda: (
            not [
                l
                for n, rows in flow_exporter.metrics().items()
                if n.startswith("dockernet_flow")
                for l, _v in rows
                if client.name in (l.get("source"), l.get("destination"))
            ]
        ),
        15,
        what="the removed container's flow series gone",
    )


def test_max_peers_puts_the_rest_under_other(containers, net):
    exporter = start_exporter("--collector.flows.max-peers=2")
    try:
        servers = [containers.run(command="httpd -f -p 80", network=net.name) for _ in range(4)]
        client = containers.run(network=net.name)
        known(exporter, client, *servers)
        for server in servers:  # one at a time: the first two are the destinations kept apart
            assert connect(client, address(server, net), 80, 1) == 1
            if server in servers[:2]:
                settled(exporter, FLOW, client, server, 80, 1)
        m = settled(exporter, FLOW, client, Named("other"), 80, 2)
        assert [flow(m, FLOW, client, s, 80) for s in servers] == [1, 1, None, None]
    finally:
        exporter.stop()


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def test_the_kernel_filters_the_updates_of_assured_connections():
    """The event filter runs in the kernel: of a TCP connection's updates, a socket with it gets
    only the one that shows the reply; a socket without it gets them all."""
    import select

    from exporter.sources.kernel import conntrack as ct
    from exporter.sources.kernel import conntrack_events as ct_events

    def subscribed(filtered: bool) -> socket.socket:
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, ct.NETLINK_NETFILTER)
        sock.setsockopt(socket.SOL_SOCKET, ct_events.SO_RCVBUFFORCE, 16 << 20)
        if filtered:
            ct_events.attach_filter(sock, ct_events.assured_update_filter())
        sock.bind((0, ct.GROUP_NEW | ct.GROUP_UPDATE))
        return sock

    plain, filtered = subscribed(False), subscribed(True)
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port)):
            server.accept()[0].close()

    def updates(sock: socket.socket) -> list[int]:
        """The connection's updates that reached the socket within a second (the host's other
        connections' events keep coming)."""
        seen, deadline = [], time.monotonic() + 1
        while (left := deadline - time.monotonic()) > 0 and select.select([sock], [], [], left)[0]:
            try:
                data = sock.recv(1 << 20)
            except OSError:  # the host's other traffic overflowed it: what came before counts
                continue
            seen += [
                e.status for k, e in ct.parse_datagram(data) if k == "update" and e.dport == port
            ]
        sock.close()
        return seen

    everything, kept = updates(plain), updates(filtered)
    assert len(everything) >= 3 and any(s & ct_events.IPS_ASSURED_BIT for s in everything)
    assert len(kept) == 1 and not kept[0] & ct_events.IPS_ASSURED_BIT and kept[0] & 2


# -- across runtimes, through the host's routing and NAT, and bridges conntrack does not see

LISTEN = """
import socket, sys
host = sys.argv[2]
srv = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind((host, int(sys.argv[1])))
srv.listen(64)
print("ready", flush=True)
while True:
    srv.accept()[0].close()
"""


@contextmanager
def listening(netns_path: str, port: int, host: str = "0.0.0.0") -> Iterator[None]:
    """A TCP listener (the host's Python) in that namespace, for the test's duration."""
    proc = subprocess.Popen(
        ["nsenter", f"--net={netns_path}", sys.executable, "-c", LISTEN, str(port), host],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        yield
    finally:
        proc.kill()
        proc.wait()


def connect_from(netns_path: str, host: str, port: int, n: int) -> int:
    """n connections from that namespace; how many were accepted."""
    return int(
        sh(
            "nsenter",
            f"--net={netns_path}",
            sys.executable,
            "-c",
            CONNECT,
            host,
            str(port),
            str(n),
            "2",
        )
    )


@contextmanager
def iptables_rule(chain: str, *rule: str, command: str = "iptables") -> Iterator[None]:
    """A filter rule of the test's own at the head of a chain, removed after."""
    sh(command, "-I", chain, *rule)
    try:
        yield
    finally:
        sh(command, "-D", chain, *rule)


def test_a_pod_talking_to_a_docker_container(pods, containers, net):  # noqa: F811
    """A pod on the test containerd's CNI bridge connects to a Docker container on a network of
    its own: routed by the host (Docker's FORWARD policy drops it but for the test's own rule) and
    masqueraded by the CNI bridge's rules. The flow is the pod's (its name and Kubernetes
    namespace) to the container's port."""
    exporter = start_exporter(CRI)
    try:
        server = containers.run(command="httpd -f -p 80", network=net.name)
        pod = pods.run(namespace="dnxflows")
        netns_path = pods.status(pod).netns_path
        (eth0,) = json.loads(
            sh("nsenter", f"--net={netns_path}", "ip", "-j", "-4", "addr", "show", "eth0")
        )
        pod_ip, server_ip = eth0["addr_info"][0]["local"], address(server, net)
        known(exporter, server)
        wait_for(
            lambda: exporter.metrics().select(
                "dockernet_pod_info", namespace=pod.namespace, pod=pod.name
            ),
            30,
            what="the exporter knowing the pod",
        )
        with iptables_rule("DOCKER-USER", "-s", pod_ip, "-d", server_ip, "-j", "ACCEPT"):
            assert connect_from(netns_path, server_ip, 80, 3) == 3
        entries = conntrack("-p", "tcp", "-s", pod_ip, "-d", server_ip, "--dport", "80")
        assert len(entries) == 3
        m = settled(exporter, FLOW, Named(pod.name), server, 80, 3)
        ((labels, _v),) = m.select(FLOW, source=pod.name, destination=server.name, port=80)
        assert labels["source_namespace"] == pod.namespace and labels["destination_namespace"] == ""
    finally:
        exporter.stop()


def test_masqueraded_traffic_to_an_address_outside_the_bridges(
    flow_exporter, containers, net, hand
):
    """A container connects to an address that no bridge holds: a namespace of the test's own,
    behind a veth the host routes to. Docker masquerades it (the reply goes to the host's address
    on that veth); the flow is still the container's, to `external`, on the server's port."""
    ns = hand.named_netns(unique("dnxext"))
    base = f"198.18.{random.randint(224, 239)}.{4 * random.randint(0, 63)}"
    prefix, last = base.rsplit(".", 1)
    host_ip, outside_ip = f"{prefix}.{int(last) + 1}", f"{prefix}.{int(last) + 2}"
    link = hand.pair(unique("dnxe"), "eth0", netns=ns)
    sh("ip", "addr", "add", f"{host_ip}/30", "dev", link)
    sh("ip", "link", "set", link, "up")
    sh("ip", "-n", ns, "addr", "add", f"{outside_ip}/30", "dev", "eth0")
    sh("ip", "-n", ns, "link", "set", "eth0", "up")
    client = containers.run(network=net.name)
    known(flow_exporter, client)
    client_ip = address(client, net)
    with listening(f"/run/netns/{ns}", 9090):
        assert connect(client, outside_ip, 9090, 3) == 3
    entries = conntrack("-p", "tcp", "-s", client_ip, "-d", outside_ip, "--dport", "9090")
    assert len(entries) == 3
    assert all(f"src={outside_ip} dst={host_ip} sport=9090" in l for l in entries)  # masqueraded
    m = settled(flow_exporter, FLOW, client, Named("external"), 9090, 3)
    assert flow(m, FLOW, client, Named("host"), 9090) is None


BRIDGE_NF = Path("/proc/sys/net/bridge/bridge-nf-call-iptables")


def on_bridge(hand: Hand, bridge: str, address: str) -> str:
    """A namespace with one port on that bridge, holding that address (/24); its path."""
    ns = hand.named_netns(unique("dnxv"))
    link = hand.pair(unique("dnxv"), "eth0", netns=ns, master=bridge)
    sh("ip", "link", "set", link, "up")
    sh("ip", "-n", ns, "addr", "add", f"{address}/24", "dev", "eth0")
    sh("ip", "-n", ns, "link", "set", "eth0", "up")
    return f"/run/netns/{ns}"


def test_a_bridge_that_br_netfilter_does_not_hand_to_iptables(host_exclusive, hand):
    """With bridge-nf-call-iptables off for the host (restored after), a bridge is seen only where
    its own nf_call_iptables is on: two bridges of the test's own, one with it, one without. Their
    visibility says so, and the kernel agrees: connections across the unseen one leave no entry in
    the host's conntrack, those across the seen one do."""
    exporter = start_exporter()
    unseen, seen = hand.bridge(unique("dnxv")), hand.bridge(unique("dnxv"))
    Path(f"/sys/class/net/{seen}/bridge/nf_call_iptables").write_text("1")
    subnets = random.sample(range(208, 224), 2)
    ends = {}
    for bridge, third in zip((unseen, seen), subnets, strict=True):
        sh("ip", "link", "set", bridge, "up")
        server, client = f"198.18.{third}.2", f"198.18.{third}.3"
        ends[bridge] = (
            on_bridge(hand, bridge, server),
            server,
            on_bridge(hand, bridge, client),
            client,
        )

    def visibility() -> dict:
        m = exporter.metrics()
        return {b: m.get_value("dockernet_flow_visibility", bridge=b) for b in (unseen, seen)}

    try:
        wait_for(lambda: visibility() == {unseen: 1, seen: 1}, 15, what="both bridges seen")
        before = BRIDGE_NF.read_text()
        BRIDGE_NF.write_text("0")
        try:
            wait_for(lambda: visibility() == {unseen: 0, seen: 1}, 15, what="visibility 0 and 1")
            # What iptables sees is dropped by Docker's FORWARD policy but for this rule.
            with iptables_rule("DOCKER-USER", "-i", seen, "-o", seen, "-j", "ACCEPT"):
                for server_ns, server, client_ns, _client in ends.values():
                    with listening(server_ns, 9091):
                        assert connect_from(client_ns, server, 9091, 2) == 2
        finally:
            BRIDGE_NF.write_text(before)
        for bridge, (_s, server, _c, client) in ends.items():
            entries = conntrack("-p", "tcp", "-s", client, "-d", server, "--dport", "9091")
            assert len(entries) == (2 if bridge == seen else 0), (bridge, entries)
    finally:
        exporter.stop()


def test_ipv6_between_two_containers(flow_exporter, containers):
    """IPv6 connections between two containers of a dual-stack network, where the host tracks
    IPv6: Docker 20.10 leaves ip6tables alone, so a rule of the test's own (accepting what the
    policy accepts anyway) makes the kernel track the network's IPv6 while it is there."""
    net = ipv6_network(containers)
    server, client = containers.run(network=net.name), containers.run(network=net.name)
    known(flow_exporter, server, client)
    net.reload()
    (subnet6,) = [c["Subnet"] for c in net.attrs["IPAM"]["Config"] if ":" in c["Subnet"]]
    server.reload()
    server6 = server.attrs["NetworkSettings"]["Networks"][net.name]["GlobalIPv6Address"]
    tracked = ("-s", subnet6, "-m", "conntrack", "--ctstate", "NEW", "-j", "ACCEPT")
    with iptables_rule("FORWARD", *tracked, command="ip6tables"):
        with listening(f"/proc/{server.attrs['State']['Pid']}/ns/net", 9092, "::"):
            assert connect(client, server6, 9092, 3) == 3
        entries = conntrack("-f", "ipv6", "-p", "tcp", "-d", server6, "--dport", "9092")
    assert len(entries) == 3
    m = settled(flow_exporter, FLOW, client, server, 9092, 3)
    assert flow(m, UNANSWERED, client, server, 9092) == 0
