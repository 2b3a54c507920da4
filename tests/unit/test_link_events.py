"""Link notifications as the kernel sends them around bridge ports and new
pairs (message layouts checked on this kernel with a RTMGRP_LINK socket)."""

from __future__ import annotations

import socket
import struct
from typing import TYPE_CHECKING, cast

from exporter.core.model import HostState, Link
from exporter.sources.kernel import link_monitor
from exporter.sources.kernel import netlink as nl
from exporter.sources.kernel.procfs import Procfs
from exporter.state.loader import StateLoader
from helpers import in_own_namespaces

if TYPE_CHECKING:
    from exporter.sources.kernel.netlink import Netlink


def message(msg_type: int, family: int, ifindex: int, *attrs: bytes) -> bytes:
    body = nl._IFINFOMSG.pack(family, 0, ifindex, 0, 0) + b"".join(attrs)
    return nl._NLMSGHDR.pack(nl._NLMSGHDR.size + len(body), msg_type, 0, 0, 0) + body


def name(text: str) -> bytes:
    return nl._attr(nl.IFLA_IFNAME, text.encode() + b"\0")


def u32(kind: int, value: int) -> bytes:
    return nl._attr(kind, struct.pack("=I", value))


def port_state(state: int) -> bytes:
    return nl._attr(nl.IFLA_PROTINFO | 0x8000, nl._attr(nl.IFLA_BRPORT_STATE, bytes([state])))


def received(*messages: bytes) -> list:
    """What LinkMonitor hands on for one datagram carrying these messages."""
    seen = []
    monitor = link_monitor.LinkMonitor(
        lambda action, link: seen.append((action, link)), lambda: None
    )
    monitor.sock.close()
    monitor.sock, sender = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    sender.send(b"".join(messages))
    monitor._receive()
    sender.close()
    monitor.stop()
    monitor.run()  # returns at once (stopping) and closes everything
    return seen


def test_bridge_port_messages_carry_only_the_port_state():
    seen = received(
        message(
            nl.RTM_NEWLINK,
            socket.AF_BRIDGE,
            12,
            name("dnx-p"),
            u32(nl.IFLA_MASTER, 5),
            port_state(3),
        ),
        message(nl.RTM_DELLINK, socket.AF_BRIDGE, 12, name("dnx-p"), u32(nl.IFLA_MASTER, 5)),
        message(nl.RTM_DELLINK, socket.AF_UNSPEC, 13, name("dnx-q")),
    )
    assert [(a, l.ifindex, l.master, l.port_state) for a, l in seen] == [
        ("port", 12, 5, 3),
        ("delete", 13, 0, None),
    ]


def link_reader() -> StateLoader:
    """A reader that applies link changes only: no socket, no runtime."""
    return StateLoader(cast("Netlink", None), (), Procfs())


def test_port_state_updates_the_known_port_and_keeps_its_kind():
    reader = link_reader()
    state = HostState(
        links={12: Link(12, "dnx-p", kind="veth", master=5, peer_ifindex=11, port_state=0)}
    )
    reader.apply_link(state, "port", Link(12, "dnx-p", master=5, port_state=3))
    assert state.links[12] == Link(
        12, "dnx-p", kind="veth", master=5, peer_ifindex=11, port_state=3
    )
    reader.apply_link(
        state, "port", Link(12, "dnx-p", master=9, port_state=1)
    )  # stale: another bridge
    assert state.links[12].port_state == 3


def test_first_end_of_a_new_pair_learns_its_peer():
    # The kernel announces the first end before the second exists, without IFLA_LINK.
    reader = link_reader()
    state = HostState()
    reader.apply_link(state, "add", Link(20, "dnx-b", kind="veth"))
    reader.apply_link(state, "add", Link(21, "dnx-a", kind="veth", peer_ifindex=20))
    assert state.links[20].peer_ifindex == 21


def stats_message(ifindex: int, rx_packets: int, rx_dropped: int, rx_missed: int) -> bytes:
    stats = [0] * 24
    stats[0], stats[2], stats[6], stats[15] = rx_packets, rx_packets * 100, rx_dropped, rx_missed
    stats[1], stats[3], stats[7] = 7, 700, 1  # tx packets, bytes, dropped
    body = nl._IFSTATSMSG.pack(0, ifindex, 1) + nl._attr(
        nl.IFLA_STATS_LINK_64, struct.pack("=24Q", *stats)
    )
    return (
        nl._NLMSGHDR.pack(nl._NLMSGHDR.size + len(body), nl.RTM_NEWSTATS, nl.NLM_F_MULTI, 0, 0)
        + body
    )


def test_stats_rows_decode_the_wanted_links_as_proc_net_dev_counts_them():
    done = nl._NLMSGHDR.pack(20, nl.NLMSG_DONE, nl.NLM_F_MULTI, 0, 0) + b"\0" * 4
    data = (
        stats_message(3, 10, 2, 1) + stats_message(4, 99, 0, 0) + stats_message(5, 1, 0, 0) + done
    )
    rows: dict = {}
    end = nl._stats_rows(data, {3, 5, 6}, rows)
    # rx bytes, packets, errors, dropped (+ missed, as /proc/net/dev adds them),
    # tx bytes, packets, errors, dropped
    assert rows == {3: (1000, 10, 0, 3, 700, 7, 0, 1), 5: (100, 1, 0, 0, 700, 7, 0, 1)}
    assert data[end:] == done


# In a namespace of its own (user and network: no privilege needed), with 1,100 files open first so
# that every socket opened next is numbered above 1023, which select() cannot wait on: the link
# monitor hears a veth pair made there, and a request socket dumps it.
HIGH_DESCRIPTORS = r"""
import json, os, resource, subprocess, threading
from exporter.sources.kernel.link_monitor import LinkMonitor
from exporter.sources.kernel.netlink import Netlink

soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 4096)), hard))
held = [os.open("/dev/null", os.O_RDONLY) for _ in range(1100)]
heard, made = [], threading.Event()

def on_link(action, link):
    heard.append([action, link.name])
    if link.name == "hi-b":
        made.set()

monitor = LinkMonitor(on_link, lambda: None)
fds = [monitor.sock.fileno()]
watching = threading.Thread(target=monitor.run)
watching.start()
subprocess.run(["ip", "link", "add", "hi-a", "type", "veth", "peer", "name", "hi-b"], check=True)
made.wait(10)
monitor.stop()
watching.join(10)
with Netlink() as request:
    fds.append(request.sock.fileno())
    dumped = sorted(l.name for l in request.links())
print(json.dumps({"fds": fds, "heard": heard, "dumped": dumped, "alive": watching.is_alive()}))
"""


def test_the_monitor_and_requests_work_on_descriptors_select_cannot_wait_on():
    result = in_own_namespaces(HIGH_DESCRIPTORS)
    assert min(result["fds"]) >= 1024
    assert ["add", "hi-b"] in result["heard"] and ["add", "hi-a"] in result["heard"]
    assert result["dumped"] == ["hi-a", "hi-b", "lo"] and not result["alive"]
