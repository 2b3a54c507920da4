"""The benchmark's load for the flows figures (bench/flows.py): entries written into the host's
conntrack table with ctnetlink (IPCTNL_MSG_CT_NEW, between addresses of 198.19.250.0/23 that no
workload holds, removed after), and TCP connections opened at a steady rate between two
containers, counted against what an exporter reports."""

from __future__ import annotations

import socket
import struct
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from exporter.sources.kernel import conntrack as ct
from exporter.sources.kernel.netlink import NLM_F_REQUEST

if TYPE_CHECKING:
    from docker import DockerClient

    from .procs import Exporter

NLA_F_NESTED = 0x8000
CTA_TIMEOUT = 7
NLM_F_CREATE = 0x400
BASE = socket.inet_aton("198.19.250.0")


def _nla(kind: int, payload: bytes) -> bytes:
    data = struct.pack("=HH", 4 + len(payload), kind) + payload
    return data + b"\0" * (-len(data) % 4)


def _tuple(kind: int, src: bytes, dst: bytes, sport: int, dport: int) -> bytes:
    ip = _nla(ct.CTA_IP_V4_SRC, src) + _nla(ct.CTA_IP_V4_DST, dst)
    proto = (
        _nla(ct.CTA_PROTO_NUM, bytes([6]))
        + _nla(ct.CTA_PROTO_SRC_PORT, struct.pack(">H", sport))
        + _nla(ct.CTA_PROTO_DST_PORT, struct.pack(">H", dport))
    )
    return _nla(
        kind | NLA_F_NESTED,
        _nla(ct.CTA_TUPLE_IP | NLA_F_NESTED, ip) + _nla(ct.CTA_TUPLE_PROTO | NLA_F_NESTED, proto),
    )


def _message(msg_type: int, flags: int, i: int, timeout: int) -> bytes:
    src = (int.from_bytes(BASE, "big") + 1 + i % 250).to_bytes(4, "big")
    dst = (int.from_bytes(BASE, "big") + 256 + 1 + i % 250).to_bytes(4, "big")
    sport, dport = 1024 + i // 250, 80
    body = struct.pack("=BBH", socket.AF_INET, 0, 0) + _tuple(
        ct.CTA_TUPLE_ORIG, src, dst, sport, dport
    )
    body += _tuple(ct.CTA_TUPLE_REPLY, dst, src, dport, sport)
    if msg_type == ct.CT_NEW:
        body += _nla(CTA_TIMEOUT, struct.pack(">I", timeout))
        tcp = _nla(ct.CTA_PROTOINFO_TCP_STATE, bytes([3]))
        body += _nla(
            ct.CTA_PROTOINFO | NLA_F_NESTED, _nla(ct.CTA_PROTOINFO_TCP | NLA_F_NESTED, tcp)
        )
    return struct.pack("=IHHII", 16 + len(body), msg_type, NLM_F_REQUEST | flags, i + 1, 0) + body


def _batches(msg_type: int, flags: int, n: int, timeout: int) -> Iterator[bytes]:
    for start in range(0, n, 100):
        yield b"".join(
            _message(msg_type, flags, i, timeout) for i in range(start, min(n, start + 100))
        )


def write_entries(n: int, timeout: int = 600) -> None:
    """n established TCP entries (at most 250 x 64,000), expiring after `timeout` seconds."""
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, ct.NETLINK_NETFILTER) as sock:
        sock.bind((0, 0))
        for batch in _batches(ct.CT_NEW, NLM_F_CREATE, n, timeout):
            sock.send(batch)


def delete_entries(n: int) -> None:
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, ct.NETLINK_NETFILTER) as sock:
        sock.bind((0, 0))
        for batch in _batches(ct.CT_DELETE, 0, n, 0):
            sock.send(batch)


def count_table() -> int:
    return int(open("/proc/sys/net/netfilter/nf_conntrack_count").read())


# Two server ports: 2,000 connections a second for a minute from one client address would reuse
# its 4-tuples within the minute, and the kernel may take a reused tuple for its old entry.
PORTS = (80, 81)
ACCEPT = """
import selectors, socket
sel = selectors.DefaultSelector()
for port in (80, 81):
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("0.0.0.0", port))
    srv.listen(4096)
    sel.register(srv, selectors.EVENT_READ)
while True:
    for key, _ in sel.select():
        key.fileobj.accept()[0].close()
"""

GENERATE = """
import socket, sys, time
host, rate, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
made, start = 0, time.monotonic()
while (now := time.monotonic()) - start < seconds:
    due = int((now - start) * rate)
    while made < due:
        s = socket.socket()
        s.connect((host, 80 + made % 2))
        s.close()
        made += 1
    time.sleep(0.005)
print(made)
"""


def flow_value(exporter: Exporter, name: str, **labels: str) -> float | None:
    """A sample of the exporter's /metrics, by name and (some of) its labels."""
    wanted = [f'{k}="{v}"' for k, v in labels.items()]
    for line in exporter.text().splitlines():
        if line.startswith((name + "{", name + " ")) and all(w in line for w in wanted):
            return float(line.rsplit(" ", 1)[1])
    return None


def rate_figure(
    client: DockerClient, image: str, exporter: Exporter, rate: int, seconds: float
) -> dict:
    prefix = f"dnxbflow-{uuid.uuid4().hex[:6]}"
    net = client.networks.create(prefix)
    made, accepting = [], None
    try:
        server, opener = (
            client.containers.run(
                image, "sleep 3600", detach=True, network=net.name, name=f"{prefix}-{role}"
            )
            for role in ("server", "client")
        )
        made = [server, opener]
        for c in made:
            c.reload()
        address = server.attrs["NetworkSettings"]["Networks"][net.name]["IPAddress"]
        server_ns = f"--net=/proc/{server.attrs['State']['Pid']}/ns/net"
        accepting = subprocess.Popen(["nsenter", server_ns, sys.executable, "-c", ACCEPT])
        until(lambda: f'container_name="{opener.name}"' in exporter.text(), 30)
        time.sleep(2)
        cpu0, rss0 = exporter.cpu_seconds(), exporter.rss_bytes()
        started = time.monotonic()
        pid = opener.attrs["State"]["Pid"]
        # 2,000 a second for a minute is more than the default ephemeral ports, each held in
        # TIME_WAIT for a minute: the client's namespace gets them all, and reuses them.
        for setting in ("net.ipv4.ip_local_port_range=1024 65535", "net.ipv4.tcp_tw_reuse=1"):
            subprocess.run(
                ["nsenter", f"--net=/proc/{pid}/ns/net", "sysctl", "-qw", setting], check=True
            )
        made_by = subprocess.run(
            ["nsenter", f"--net=/proc/{pid}/ns/net", sys.executable, "-c", GENERATE]
            + [address, str(rate), str(seconds)],
            capture_output=True,
            text=True,
        )
        if made_by.returncode != 0:
            raise RuntimeError(f"the connection generator failed: {made_by.stderr.strip()}")
        generated = int(made_by.stdout)
        labels = {"source": str(opener.name), "destination": str(server.name)}
        name = "dockernet_flow_connections_opened_total"

        def opened() -> float:
            return sum(flow_value(exporter, name, **labels, port=str(p)) or 0 for p in PORTS)

        until(lambda: opened() == generated, 30)
        window = time.monotonic() - started
        cpu1, rss1 = exporter.cpu_seconds(), exporter.rss_bytes()
        counted = opened()
        lost = flow_value(exporter, "dockernet_flow_events_lost_total")
    finally:
        if accepting is not None:
            accepting.kill()
            accepting.wait()
        for c in made:
            c.remove(force=True)
        net.remove()
    return {
        "rate": rate,
        "seconds": seconds,
        "generated": generated,
        "counted": counted,
        "events_lost": lost,
        "cpu_share_of_a_core": round((cpu1 - cpu0) / window, 4),
        "rss_growth_mb": round((rss1 - rss0) / 1e6, 1),
    }


def until(ok: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not ok() and time.monotonic() < deadline:
        time.sleep(0.2)
