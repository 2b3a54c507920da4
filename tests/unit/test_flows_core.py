"""Attribution and counting of flows (exporter.core.flows), on entries as the kernel gives them."""

from __future__ import annotations

from exporter.core import flow_peers, flows, topology
from exporter.core.flow_peers import Attribution, Peer, packed
from exporter.core.flows import DESTROY, NEW, UPDATE, Entry, Flows
from exporter.core.model import Address, Endpoint, HostState, Link, Network, Workload

CLIENT, SERVER, POD = "198.18.0.2", "198.18.0.3", "198.18.5.2"
GATEWAY, HOST_IP, OUTSIDE = "198.18.0.1", "198.19.200.1", "198.19.99.9"
SUBNETS = ("198.18.0.0/24", "198.18.5.0/24")

web = Peer("web", "shop")
db = Peer("db", "shop")
pod = Peer("api-7d9", "prod")
SEEN_REPLY = flows.IPS_SEEN_REPLY


def attr(**extra: Peer) -> Attribution:
    workloads = {packed(CLIENT): web, packed(SERVER): db, packed(POD): pod}
    workloads.update({packed(a.replace("_", ".")): p for a, p in extra.items()})
    subnets = tuple(s for s in map(flow_peers.subnet, SUBNETS) if s)
    return Attribution(workloads, frozenset({packed(GATEWAY), packed(HOST_IP)}), subnets)


def entry(
    ident: int,
    src: str = CLIENT,
    dst: str = SERVER,
    dport: int = 5432,
    *,
    reply_src: str | None = None,
    reply_dst: str | None = None,
    reply_sport: int | None = None,
    protocol: int = 6,
    status: int = 0,
    counters: tuple[int, int, int, int] | None = None,
    tcp_state: int = 0,
) -> Entry:
    return Entry(
        ident,
        protocol,
        status,
        packed(src),
        packed(dst),
        40000,
        dport,
        packed(reply_src or dst),
        packed(reply_dst or src),
        reply_sport if reply_sport is not None else dport,
        40000,
        counters,
        tcp_state,
    )


def found(
    table: Flows, source: Peer = web, destination: Peer = db, proto: str = "tcp", port: str = "5432"
) -> list[int] | None:
    return table.series.get((source, destination, proto, port))


def row(
    table: Flows, source: Peer = web, destination: Peer = db, proto: str = "tcp", port: str = "5432"
) -> list[int]:
    """The series' counters, which must exist."""
    counters = found(table, source, destination, proto, port)
    assert counters is not None, (source, destination, proto, port)
    return counters


def test_a_connection_answered_and_closed():
    table, a = Flows(), attr()
    table.event(NEW, entry(1), 0.0, a)
    assert row(table)[flows.OPENED] == 1 and row(table)[flows.OPEN] == 1
    table.event(UPDATE, entry(1, status=SEEN_REPLY), 0.01, a)
    table.event(DESTROY, entry(1, status=SEEN_REPLY), 5.0, a)
    assert table.tick(10.0, a) is None
    assert row(table)[: flows.SENT_BYTES] == [1, 0, 0]


def test_unanswered_once_at_the_deadline_not_again_at_its_end():
    table, a = Flows(unanswered_after=3.0), attr()
    table.event(NEW, entry(1), 100.0, a)
    assert table.tick(102.9, a) == 103.0
    assert row(table)[flows.UNANSWERED] == 0
    table.tick(103.0, a)
    assert row(table)[flows.UNANSWERED] == 1
    table.event(DESTROY, entry(1, tcp_state=1), 220.0, a)
    assert row(table)[flows.UNANSWERED] == 1 and row(table)[flows.OPEN] == 0


def test_ended_without_a_reply_before_the_deadline():
    table, a = Flows(), attr()
    table.event(NEW, entry(1, protocol=17, dport=53), 0.0, a)
    table.event(DESTROY, entry(1, protocol=17, dport=53), 1.0, a)
    table.tick(10.0, a)
    assert row(table, proto="udp", port="53")[flows.UNANSWERED] == 1


def test_a_reset_answers_a_syn():
    """The kernel ends a refused connection without SEEN_REPLY, in TCP state CLOSE."""
    table, a = Flows(), attr()
    table.event(NEW, entry(1, dport=81), 0.0, a)
    table.event(DESTROY, entry(1, dport=81, tcp_state=8), 0.001, a)
    table.tick(10.0, a)
    assert row(table, port="81")[flows.UNANSWERED] == 0


def test_published_port_goes_to_the_container_behind_it():
    """DNAT: the host reaches HOST_IP:8080, the container answers from its port 80."""
    table, a = Flows(), attr()
    e = entry(1, HOST_IP, HOST_IP, 8080, reply_src=SERVER, reply_dst=HOST_IP, reply_sport=80)
    table.event(NEW, e, 0.0, a)
    assert row(table, flow_peers.HOST_PEER, db, port="80")[flows.OPENED] == 1


def test_masqueraded_connection_goes_to_the_container_that_opened_it():
    """SNAT: the reply comes back to the host's address, the opener is the original source."""
    table, a = Flows(), attr()
    e = entry(1, CLIENT, OUTSIDE, 443, reply_src=OUTSIDE, reply_dst=HOST_IP)
    table.event(NEW, e, 0.0, a)
    assert row(table, web, flow_peers.EXTERNAL_PEER, port="443")[flows.OPENED] == 1


def test_docker_proxy_leg_is_the_host():
    table, a = Flows(), attr()
    table.event(NEW, entry(1, GATEWAY, SERVER, 80), 0.0, a)
    assert row(table, flow_peers.HOST_PEER, db, port="80")[flows.OPENED] == 1


def test_connections_without_a_workload_are_not_kept():
    table, a = Flows(), attr()
    table.event(NEW, entry(1, "127.0.0.1", "127.0.0.1", 9100), 0.0, a)
    table.event(NEW, entry(2, HOST_IP, OUTSIDE, 443), 0.0, a)
    assert table.series == {} and table.conns == {}
    assert not a.involves_workload(entry(3, HOST_IP, OUTSIDE, 443))
    assert a.involves_workload(entry(4, HOST_IP, SERVER, 443))


def test_ephemeral_server_ports_are_dropped():
    table, a = Flows(ephemeral=(32768, 60999)), attr()
    table.event(NEW, entry(1, dport=45000), 0.0, a)
    table.event(NEW, entry(2, protocol=1, dport=0), 0.0, a)
    assert row(table, port="")[flows.OPENED] == 1
    assert row(table, proto="icmp", port="")[flows.OPENED] == 1


def test_max_peers_sends_the_rest_to_other():
    extra = {f"198_18_0_{10 + i}": Peer(f"peer{i}", "") for i in range(4)}
    table, a = Flows(max_peers=2), attr(**extra)
    for i in range(4):
        table.event(NEW, entry(i, CLIENT, f"198.18.0.{10 + i}", 80), 0.0, a)
    table.event(NEW, entry(9, CLIENT, "198.18.0.10", 80), 0.0, a)
    assert row(table, web, Peer("peer0", ""), port="80")[flows.OPENED] == 2
    assert row(table, web, Peer("peer1", ""), port="80")[flows.OPENED] == 1
    assert row(table, web, flow_peers.OTHER_PEER, port="80")[flows.OPENED] == 2


def test_a_workload_not_in_the_snapshot_yet_is_waited_for():
    table, before = Flows(grace=2.0), attr()
    newcomer = entry(1, CLIENT, "198.18.0.50", 80)
    table.event(NEW, newcomer, 0.0, before)
    assert table.series == {}
    after = attr(**{"198_18_0_50": Peer("late", "")})
    table.tick(0.5, after)
    assert row(table, web, Peer("late", ""), port="80")[flows.OPENED] == 1
    # One that nobody claims within the grace is external.
    table.event(NEW, entry(2, CLIENT, "198.18.0.51", 80), 1.0, after)
    assert table.tick(1.5, after) == 3.0
    table.tick(3.0, after)
    assert row(table, web, flow_peers.EXTERNAL_PEER, port="80")[flows.OPENED] == 1


def test_an_update_brings_in_a_connection_whose_opening_was_not_attributed():
    """A ping's one entry: its NEW came when nothing said its ends were workloads."""
    table = Flows()
    table.event(NEW, entry(1, "198.19.77.2", "198.19.77.3", protocol=1, dport=0), 0.0, attr())
    assert table.series == {}
    later = attr(**{"198_19_77_2": Peer("pinger", ""), "198_19_77_3": Peer("pinged", "")})
    update = entry(1, "198.19.77.2", "198.19.77.3", protocol=1, dport=0, status=SEEN_REPLY)
    table.event(UPDATE, update, 5.0, later)
    table.event(UPDATE, update, 5.2, later)
    opened = row(table, Peer("pinger", ""), Peer("pinged", ""), proto="icmp", port="")
    assert opened[: flows.SENT_BYTES] == [0, 0, 1]


def test_start_loads_open_connections_without_counting_them():
    table, a = Flows(), attr()
    table.start([entry(1), entry(2, status=SEEN_REPLY)], 0.0, a)
    table.tick(100.0, a)
    assert row(table)[: flows.SENT_BYTES] == [0, 0, 2]
    table.event(NEW, entry(1), 1.0, a)  # already known: not counted again
    assert row(table)[flows.OPENED] == 0


def test_resync_counts_what_was_missed_and_closes_what_is_gone():
    table, a = Flows(), attr()
    table.event(NEW, entry(1), 0.0, a)
    table.event(NEW, entry(2, status=SEEN_REPLY), 0.0, a)
    # Events lost: 1 got answered and 2 ended; 3 was opened.
    table.resync([entry(1, status=SEEN_REPLY), entry(3)], 1.0, a)
    assert row(table)[: flows.SENT_BYTES] == [3, 0, 2]
    table.event(DESTROY, entry(2, status=SEEN_REPLY), 1.1, a)  # its DESTROY came after all
    table.event(NEW, entry(3), 1.2, a)  # queued before the dump: counted once
    table.tick(10.0, a)
    assert row(table)[: flows.SENT_BYTES] == [3, 1, 2]  # 3 never answered


def test_counters_from_refresh_and_destroy():
    table, a = Flows(), attr()
    table.event(NEW, entry(1), 0.0, a)
    table.refresh([entry(1, counters=(3, 180, 2, 120)), entry(7, counters=(9, 9, 9, 9))])
    table.event(DESTROY, entry(1, status=SEEN_REPLY, counters=(10, 2180, 8, 5120)), 1.0, a)
    r = row(table)
    sent = (r[flows.SENT_BYTES], r[flows.SENT_PACKETS])
    received = (r[flows.RECEIVED_BYTES], r[flows.RECEIVED_PACKETS])
    assert (sent, received) == ((2180, 10), (5120, 8))


def test_counters_of_connections_open_at_start_count_from_then():
    table, a = Flows(), attr()
    table.start([entry(1, status=SEEN_REPLY, counters=(5, 500, 5, 500))], 0.0, a)
    table.event(DESTROY, entry(1, status=SEEN_REPLY, counters=(6, 600, 7, 900)), 1.0, a)
    assert row(table)[flows.SENT_BYTES] == 100 and row(table)[flows.RECEIVED_BYTES] == 400


def test_retain_drops_a_gone_workload_with_its_connections():
    table, a = Flows(), attr()
    table.event(NEW, entry(1), 0.0, a)
    table.event(NEW, entry(2, POD, SERVER, 5432), 0.0, a)
    table.retain(frozenset({db, pod}))
    assert found(table) is None and found(table, pod, db) is not None
    table.event(DESTROY, entry(1), 1.0, a)  # its connection's end brings nothing back
    assert found(table) is None and web not in table.admitted


def test_connections_of_one_series_share_its_key_which_goes_with_its_workload():
    table, a = Flows(), attr()
    for ident in (1, 2, 3):
        table.event(NEW, entry(ident), 0.0, a)
    held = [table.conns[i].key for i in (1, 2, 3)]
    assert held[0] is held[1] is held[2]  # one tuple, not one per connection
    table.retain(frozenset({db, pod}))
    assert not table.keys and not table.conns


def test_attribution_from_a_snapshot():
    state = HostState(runtimes_up={"docker": True, "containerd": True})
    state.networks = {
        "n1": Network("n1", "shop", "bridge", "br-1", (("198.18.0.0/24", GATEWAY),)),
    }
    state.containers = {
        "c1": Workload(
            "c1",
            "shop-web-1",
            compose_project="shop",
            netns_inode=11,
            nsid=1,
            endpoints=(Endpoint("shop", "n1", ipv4=CLIENT),),
        ),
        "c2": Workload("c2", "sidecar", netns_inode=11, network_mode="container:c1"),
        "p1": Workload(
            "p1",
            "sandbox",
            runtime="containerd",
            pod_name="api",
            pod_namespace="prod",
            netns_inode=12,
            nsid=2,
        ),
        "h1": Workload("h1", "hostnet", network_mode="host", netns_inode=1),
    }
    state.netns_addresses = {
        1: (Address(2, "ipv4", CLIENT, 24), Address(1, "ipv4", "127.0.0.1", 8)),
        2: (Address(2, "ipv4", POD, 24), Address(2, "ipv6", "fe80::1", 64)),
    }
    state.links = {7: Link(7, "br-new", kind="bridge"), 8: Link(8, "eth0")}
    snap = topology.build(state)
    host = [
        Address(7, "ipv4", "198.18.9.1", 24),  # the gateway of a network not in the snapshot yet
        Address(8, "ipv4", HOST_IP, 16),
        Address(1, "ipv4", "127.0.0.1", 8),
    ]
    a = flow_peers.attribution(snap, host)
    assert a.peer(packed(CLIENT)) == Peer("shop-web-1", "shop")
    assert a.peer(packed(POD)) == Peer("api", "prod")
    assert a.peer(packed("198.18.9.1")) == flow_peers.HOST_PEER
    assert a.peer(packed("198.18.9.7")) is None  # on the new bridge: maybe a workload
    assert (
        a.peer(packed("198.19.200.9")) == flow_peers.EXTERNAL_PEER
    )  # eth0's subnet is not a bridge's
    assert a.peer(packed("198.18.0.77")) is None  # in a workload network, held by nobody yet
    assert a.peer(packed(OUTSIDE)) == flow_peers.EXTERNAL_PEER
    assert flow_peers.live(snap) == {Peer("shop-web-1", "shop"), Peer("api", "prod")}
