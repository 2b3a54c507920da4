"""Per-namespace network health against real containers: each counter family moves by what
the test did in that namespace and equals the namespace's own files read in the same moment
(read during the scrape: interval 0); a shared namespace is counted once, a host-network
container not at all; Docker's isolation rule counts the packets it dropped. With the sampler,
the series are those of its latest sample, for the containers that exist now. Sockets the
busybox image cannot make are made by the host's Python inside the container's namespace
(nsenter --net)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time
from typing import TYPE_CHECKING

import pytest

from exporter.metrics.collectors.base import Context
from exporter.metrics.collectors.netstat import NetstatCollector
from exporter.sources.kernel import netstat
from exporter.sources.kernel.procfs import Procfs
from helpers import Containers, ExporterProcess, wait_for

if TYPE_CHECKING:
    from docker.models.containers import Container

NETSTAT = ("--collector.netstat.fields=all", "--collector.netstat.interval=0s")
FAILS = "dockernet_container_tcp_attempt_fails_total"


def pid_of(container: Container) -> int:
    container.reload()
    return container.attrs["State"]["Pid"]


def ip_of(container: Container, network: str) -> str:
    container.reload()
    return container.attrs["NetworkSettings"]["Networks"][network]["IPAddress"]


def in_netns(container: Container, code: str, timeout: float = 30) -> str:
    """Run Python code in the container's network namespace; its stdout."""
    return subprocess.run(
        [
            "nsenter",
            f"--net=/proc/{pid_of(container)}/ns/net",
            sys.executable,
            "-c",
            textwrap.dedent(code),
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=timeout,
    ).stdout


def own_snmp(container: Container, file: str = "snmp") -> dict:
    """{(section, field): value} of the container's /proc/net/<file>, parsed here by hand."""
    lines = open(f"/proc/{pid_of(container)}/net/{file}").read().splitlines()
    out = {}
    for names, values in zip(lines[0::2], lines[1::2], strict=True):
        section = names.split(":")[0]
        out.update(
            {
                (section, n): int(v)
                for n, v in zip(names.split()[1:], values.split()[1:], strict=True)
            }
        )
    return out


def value(e: ExporterProcess, metric: str, container: Container, **labels: object) -> float | None:
    return e.metrics().get_value(metric, container_id=container.id, **labels)


def wait_value(e: ExporterProcess, metric: str, container: Container, **labels: object) -> float:
    """The value once the series exists (the exporter has seen the container)."""
    wait_for(
        lambda: value(e, metric, container, **labels) is not None,
        what=f"{metric} of {container.name}",
    )
    return known(e, metric, container, **labels)


def known(e: ExporterProcess, metric: str, container: Container, **labels: object) -> float:
    """The value of a series the exporter serves by now."""
    v = value(e, metric, container, **labels)
    assert v is not None, f"no {metric} for {container.name}"
    return v


def two_on_a_network(containers: Containers) -> tuple:
    """A new network and two containers on it."""
    net = containers.network()
    return net, containers.run(network=net.name), containers.run(network=net.name)


CONNECT_CLOSED = """
    import socket
    for _ in range({n}):
        s = socket.socket()
        s.settimeout(5)
        try:
            s.connect(("{ip}", 1))
        except ConnectionRefusedError:
            pass
        s.close()
"""


def test_refused_connects_move_attempt_fails_and_resets_sent_by_exactly_n(containers, exporter):
    net, client, server = two_on_a_network(containers)
    e = exporter(*NETSTAT)
    fails = "dockernet_container_tcp_attempt_fails_total"
    resets = "dockernet_container_tcp_resets_sent_total"
    before = wait_value(e, fails, client), wait_value(e, resets, server)
    n = 10
    in_netns(client, CONNECT_CLOSED.format(n=n, ip=ip_of(server, net.name)))
    after = known(e, fails, client), known(e, resets, server)
    assert (after[0] - before[0], after[1] - before[1]) == (n, n)
    # every TCP family equals the namespace's own snmp, read before and after the scrape
    for _ in range(10):
        own = own_snmp(server)
        m = e.metrics()
        if own_snmp(server) == own:
            break
    for family, field in (
        ("tcp_active_opens", "ActiveOpens"),
        ("tcp_passive_opens", "PassiveOpens"),
        ("tcp_attempt_fails", "AttemptFails"),
        ("tcp_estab_resets", "EstabResets"),
        ("tcp_retransmitted_segments", "RetransSegs"),
        ("tcp_segments_received", "InSegs"),
        ("tcp_segments_sent", "OutSegs"),
        ("tcp_resets_sent", "OutRsts"),
        ("tcp_in_errors", "InErrs"),
    ):
        got = m.get_value(f"dockernet_container_{family}_total", container_id=server.id)
        assert got == own[("Tcp", field)], family
    assert (
        m.get_value("dockernet_container_tcp_connections_established", container_id=server.id)
        == own[("Tcp", "CurrEstab")]
    )
    assert (
        m.get_value("dockernet_container_udp_no_ports_total", container_id=server.id, family="ipv4")
        == own[("Udp", "NoPorts")]
    )


LISTEN_ZERO = """
    import socket, time
    listener = socket.socket()
    listener.bind(("0.0.0.0", 8080))
    listener.listen(0)
    clients = []
    for _ in range(20):
        c = socket.socket()
        c.setblocking(False)
        c.connect_ex(("127.0.0.1", 8080))
        clients.append(c)
    time.sleep(2)
    print("done")
"""


def test_an_overfilled_listen_queue_moves_listen_overflows_and_drops(containers, exporter):
    c = containers.run()
    e = exporter(*NETSTAT)
    overflows = "dockernet_container_tcp_listen_overflows_total"
    drops = "dockernet_container_tcp_listen_drops_total"
    before = wait_value(e, overflows, c), wait_value(e, drops, c)
    in_netns(c, LISTEN_ZERO)
    after = known(e, overflows, c), known(e, drops, c)
    assert after[0] > before[0] and after[1] >= after[0]
    own = own_snmp(c, "netstat")
    assert after == (own[("TcpExt", "ListenOverflows")], own[("TcpExt", "ListenDrops")])
    assert (
        value(e, "dockernet_container_tcp_syn_retransmits_total", c)
        == own[("TcpExt", "TCPSynRetrans")]
    )


UDP_TO = """
    import socket
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for _ in range({n}):
        s.sendto(b"x", ("{ip}", 9))
"""

UDP_FLOOD = """
    import socket
    r = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    r.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
    r.bind(("127.0.0.1", 9999))
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for _ in range(2000):
        s.sendto(b"x" * 1000, ("127.0.0.1", 9999))
"""


def test_udp_to_a_closed_port_and_a_full_receive_buffer(containers, exporter):
    net, sender, receiver = two_on_a_network(containers)
    e = exporter(*NETSTAT)
    no_ports = "dockernet_container_udp_no_ports_total"
    sent = "dockernet_container_udp_datagrams_sent_total"
    before = (
        wait_value(e, no_ports, receiver, family="ipv4"),
        wait_value(e, sent, sender, family="ipv4"),
    )
    n = 7
    in_netns(sender, UDP_TO.format(n=n, ip=ip_of(receiver, net.name)))
    got = wait_for(
        lambda: (known(e, no_ports, receiver, family="ipv4") - before[0] == n) or None,
        what="the receiver's no_ports",
    )
    assert got and known(e, sent, sender, family="ipv4") - before[1] == n
    buffer_errors = "dockernet_container_udp_receive_buffer_errors_total"
    in_errors = "dockernet_container_udp_in_errors_total"
    assert wait_value(e, buffer_errors, receiver, family="ipv4") == 0
    in_netns(receiver, UDP_FLOOD)
    errors = known(e, buffer_errors, receiver, family="ipv4")
    assert errors > 0 and known(e, in_errors, receiver, family="ipv4") >= errors
    assert errors == own_snmp(receiver)[("Udp", "RcvbufErrors")]
    assert value(e, "dockernet_container_udp_no_ports_total", receiver, family="ipv6") is not None


def test_shared_namespace_once_host_network_never_and_sockets(containers, exporter):
    owner = containers.run()
    guest = containers.run(network_mode=f"container:{owner.id}")
    host = containers.run(network_mode="host")
    e = exporter(*NETSTAT)
    wait_value(e, "dockernet_container_tcp_active_opens_total", owner)
    mine = [
        line
        for line in e.text().splitlines()
        if line.startswith(
            ("dockernet_container_tcp", "dockernet_container_udp", "dockernet_container_ip_")
        )
        or line.startswith(("dockernet_container_sockets", "dockernet_container_conntrack"))
    ]
    assert mine and not [line for line in mine if guest.id in line or host.id in line]
    m = e.metrics()
    assert len(m.select("dockernet_container_tcp_active_opens_total", container_id=owner.id)) == 1
    sockets = {
        (l["protocol"], l["state"]): v
        for l, v in m.select("dockernet_container_sockets", container_id=owner.id)
    }
    assert sockets == {
        ("tcp", "inuse"): 0,
        ("tcp", "tw"): 0,
        ("udp", "inuse"): 0,
        ("tcp6", "inuse"): 0,
        ("udp6", "inuse"): 0,
    }
    hold = """
        import socket, time
        s = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(3)]
        for x in s:
            x.bind(("127.0.0.1", 0))
        print("bound", flush=True)
        time.sleep(30)
    """
    proc = subprocess.Popen(
        [
            "nsenter",
            f"--net=/proc/{pid_of(owner)}/ns/net",
            sys.executable,
            "-c",
            textwrap.dedent(hold),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "bound"
        assert value(e, "dockernet_container_sockets", owner, protocol="udp", state="inuse") == 3
    finally:
        proc.kill()
        proc.wait()


def test_time_wait_sockets_are_counted_per_namespace(containers, exporter):
    c = containers.run()
    e = exporter(*NETSTAT)
    wait_value(e, "dockernet_container_sockets", c, protocol="tcp", state="tw")
    in_netns(
        c,
        """
        import socket
        l = socket.socket(); l.bind(("127.0.0.1", 8080)); l.listen(8)
        for _ in range(4):
            s = socket.create_connection(("127.0.0.1", 8080)); a, _ = l.accept()
            s.close(); a.close()  # the side closing first keeps the time-wait socket
        """,
    )
    own = {line.split(":")[0]: line.split() for line in open(f"/proc/{pid_of(c)}/net/sockstat")}[
        "TCP"
    ]
    tw = int(own[own.index("tw") + 1])
    assert tw >= 4
    assert value(e, "dockernet_container_sockets", c, protocol="tcp", state="tw") == tw


def test_conntrack_entries_of_a_namespace_with_its_own_rules_and_of_a_plain_one(
    containers, exporter
):
    # On the default bridge: no embedded-DNS rules of Docker's in the namespace, no conntrack.
    plain, tracked = containers.run(), containers.run()
    subprocess.run(
        [
            "nsenter",
            f"--net=/proc/{pid_of(tracked)}/ns/net",
            "iptables",
            "-A",
            "OUTPUT",
            "-m",
            "conntrack",
            "--ctstate",
            "NEW",
            "-j",
            "ACCEPT",
        ],
        check=True,
    )
    e = exporter(*NETSTAT)
    entries = "dockernet_container_conntrack_entries"
    assert wait_value(e, entries, plain) == 0
    in_netns(tracked, UDP_TO.format(n=3, ip=ip_of(plain, "bridge")))
    assert known(e, entries, tracked) >= 1
    assert value(e, entries, plain) == 0
    assert value(e, "dockernet_container_conntrack_insert_failed_total", tracked) == 0
    m = e.metrics()
    assert m.get_value("dockernet_conntrack_entries_limit") == int(
        open("/proc/sys/net/netfilter/nf_conntrack_max").read()
    )
    assert (
        m.get_value("dockernet_conntrack_entries") > 0
    )  # the host's table holds the bridged flows


def test_pings_across_two_networks_count_as_isolation_drops(containers, exporter):
    a_net, b_net = containers.network(), containers.network()
    a, b = containers.run(network=a_net.name), containers.run(network=b_net.name)
    e = exporter()  # the drops come from the rules the NAT collector reads, on by default
    bridge = "br-" + b_net.id[:12]
    dropped = "dockernet_firewall_dropped_packets_total"
    labels = {"network": b_net.name, "bridge": bridge, "reason": "isolation"}
    before = wait_for(
        lambda: e.metrics().get_value(dropped, **labels) is not None or None,
        what="the isolation drops of the new bridge",
    ) and e.metrics().get_value(dropped, **labels)
    n = 5
    ping = a.exec_run(f"ping -c {n} -i 0.1 -W 1 {ip_of(b, b_net.name)}")
    assert ping.exit_code != 0  # nothing came back
    assert e.metrics().get_value(dropped, **labels) - before == n


def test_sampled_series_are_the_latest_samples_of_the_containers_there_now(containers, exporter):
    e = exporter("--collector.netstat.interval=1h")  # on by default
    c = containers.run()  # new since the sampler's pass at start: read by a check
    before = wait_value(e, FAILS, c)
    first_seen = time.monotonic()  # the latest pass over every namespace began before this
    assert before == own_snmp(c)[("Tcp", "AttemptFails")]
    in_netns(c, CONNECT_CLOSED.format(n=5, ip="127.0.0.1"))
    assert own_snmp(c)[("Tcp", "AttemptFails")] == before + 5
    # A container started after the change is read by a later check, which reads new
    # namespaces only: the first keeps its reading until the next pass, within the hour.
    later = containers.run()
    wait_value(e, FAILS, later)
    asked = time.monotonic()
    m = e.metrics()
    assert m.get_value(FAILS, container_id=c.id) == before
    assert m.get_value("dockernet_netstat_sample_age_seconds") >= asked - first_seen
    assert m.get_value("dockernet_netstat_sample_duration_seconds") > 0
    c.remove(force=True)  # still in the sample until the next pass, gone from /metrics at once
    wait_for(lambda: c.id not in e.text(), what=f"the series of {c.name} gone")


def test_the_sampler_follows_counters_and_survives_namespaces_vanishing(containers, exporter):
    e = exporter("--collector.netstat.interval=20ms")
    c = containers.run()
    before = wait_value(e, FAILS, c)
    in_netns(c, CONNECT_CLOSED.format(n=5, ip="127.0.0.1"))
    wait_for(lambda: value(e, FAILS, c) == before + 5, what="the sample of the refused connects")
    # Ten containers removed at once while the sampler reads every namespace every 20 ms: some
    # go in the middle of a pass, some in the middle of their own read.
    doomed = [containers.run() for _ in range(10)]
    for d in doomed:
        wait_value(e, FAILS, d)
    seen: list[float | None] = []
    watching = threading.Event()

    def watch():
        while not watching.is_set():
            seen.append(value(e, FAILS, c))

    watcher = threading.Thread(target=watch)
    watcher.start()
    removers = [threading.Thread(target=d.remove, kwargs={"force": True}) for d in doomed]
    for r in removers:
        r.start()
    for r in removers:
        r.join()
    watching.set()
    watcher.join()
    assert seen and set(seen) == {before + 5}  # the survivor's series never went, nor moved
    late = containers.run()  # the sampler still runs: a new container is read
    first = wait_value(e, FAILS, late)
    in_netns(late, CONNECT_CLOSED.format(n=3, ip="127.0.0.1"))
    wait_for(  # and passes over every namespace go on (a check reads only new ones)
        lambda: value(e, FAILS, late) == first + 3, what="a later pass over the new container"
    )
    m = e.metrics()
    assert m.get_value("dockernet_scrape_collector_success", collector="netstat") == 1
    assert not [d for d in doomed if d.id in e.text()]
    assert e.stop() == 0
    assert "netstat_sample_failed" not in e.log() and "Traceback" not in e.log()


def held_files(e: ExporterProcess, pid: int) -> list[int]:
    """The exporter's descriptors open on the files of /proc/<pid>/net."""
    out = []
    for fd in os.listdir(f"/proc/{e.proc.pid}/fd"):
        try:
            target = os.readlink(f"/proc/{e.proc.pid}/fd/{fd}")
        except FileNotFoundError:
            continue
        if target.startswith(f"/proc/{pid}/net/"):
            out.append(int(fd))
    return out


def test_a_namespace_files_stay_open_until_its_process_exits(containers, exporter):
    e = exporter()  # on by default, sampled
    kept, killed = containers.run(), containers.run()
    pids = {c.id: pid_of(c) for c in (kept, killed)}
    for c in (kept, killed):
        wait_value(e, FAILS, c)
    files = len(NetstatCollector(Context(Procfs())).wanted)  # those the default fields need
    for c in (kept, killed):  # each open once
        fds = held_files(e, pids[c.id])
        assert len(fds) == files, c.name
    # Between passes (interval 15 s), the process exits and the container stays: its files
    # must not keep the namespace alive until the next pass, nor until the container goes.
    killed.kill()
    wait_for(lambda: not held_files(e, pids[killed.id]) or None, what="the files closed")
    assert len(held_files(e, pids[kept.id])) == files
    killed.remove(force=True)
    kept.remove(force=True)
    wait_for(lambda: not held_files(e, pids[kept.id]) or None, what="the files closed")
    assert e.stop() == 0


class Forced:
    """The sampler's clock and its waits, driven by the test: time moves only by each read
    (`read` seconds) and each wait, and the topology changes at given times, in a wait or in
    the middle of a pass. Every moment the served readings could change or age, it notes how
    old each is and when each new namespace's first reading is served."""

    def __init__(self, topology: dict, changes: list, read: float, end: float) -> None:
        self.now, self.read, self.end = 0.0, read, end
        self.wanted = dict(topology)
        self.changes = sorted(changes)  # (time, key, pid or None to drop it)
        self.added: dict = {}  # key -> when it appeared
        self.first: dict = {}  # key -> when its first reading was served
        self.dropped: dict = {}  # key -> when it went
        self.made: dict = {}  # id(reading) -> (reading, when its read began)
        self.oldest = 0.0
        self.sampler: netstat.Sampler | None = None

    def advance(self, seconds: float) -> None:
        target = self.now + seconds
        while self.changes and self.changes[0][0] <= target:
            at, key, pid = self.changes.pop(0)
            self.wanted = {k: v for k, v in self.wanted.items() if k != key}
            if pid is None:
                self.dropped[key] = at
            else:
                self.wanted[key], self.added[key] = pid, at
        self.now = target
        self.observe()

    def observe(self) -> None:
        assert self.sampler is not None
        latest = self.sampler.latest.readings
        for key in self.wanted:
            if key in latest:
                self.first.setdefault(key, self.now)
                _reading, when = self.made[id(latest[key])]
                self.oldest = max(self.oldest, self.now - when)


def forced_sampler(forced: Forced, interval: float) -> netstat.Sampler:
    fields = NetstatCollector(Context(Procfs())).wanted

    class Reader(netstat.NamespaceReader):
        def read(self, pid, opened=None):
            began = forced.now
            reading = super().read(pid, opened)
            forced.made[id(reading)] = (reading, began)
            forced.advance(forced.read)
            return reading

    class Sampler(netstat.Sampler):
        def wait(self, seconds):
            forced.observe()
            forced.advance(max(0.0, seconds))
            return forced.now >= forced.end

    s = Sampler(Reader("/proc", fields), lambda: forced.wanted, interval, clock=lambda: forced.now)
    forced.sampler = s
    return s


EPSILON = 1e-9  # the forced clock's sums of floats


@pytest.mark.parametrize(
    "read", [0.01, 0.4], ids=["passes shorter than the interval", "passes longer"]
)
def test_a_value_is_never_older_than_an_interval_and_a_pass(containers, read):
    """Real namespaces, the sampler's own loop; its clock forced. A namespace appears during a
    wait and another in the middle of a pass; one goes."""
    cs = [containers.run() for _ in range(5)]
    pids = {c.name: pid_of(c) for c in cs}
    first, appears_waiting, appears_reading = cs[:3], cs[3], cs[4]
    interval = 1.0
    pass_start = 3.0  # full passes begin at 0, 1, 2, 3 (back to back when longer)
    forced = Forced(
        {c.name: pids[c.name] for c in first},
        [
            (2.5 + 0.001, appears_waiting.name, pids[appears_waiting.name]),
            (pass_start + read * 1.5, appears_reading.name, pids[appears_reading.name]),
            (5.2, first[1].name, None),
        ],
        read,
        end=9.0,
    )
    sampler = forced_sampler(forced, interval)
    sampler.run()
    longest = read * 5  # a full pass over every namespace at most
    # Passes longer than the interval run back to back; a pass that falls due while a new
    # namespace is read begins after that one read.
    assert forced.oldest <= max(interval, longest) + longest + read + EPSILON
    assert forced.made and all(r is not None for r, _ in forced.made.values())
    for c in (appears_waiting, appears_reading):  # within the check, or after the pass it met
        waited = forced.first[c.name] - forced.added[c.name]
        assert waited <= max(netstat.NEW_CHECK, longest) + read + EPSILON, c.name
        if read * 5 < netstat.NEW_CHECK:
            assert waited <= 1.0
    assert first[1].name not in sampler.latest.readings
    assert sampler.open is None  # the run ended: every file closed
