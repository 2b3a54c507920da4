"""The ctnetlink parser on messages recorded from the kernel (tests/fixtures/record_conntrack.py)."""

from __future__ import annotations

import json
import socket
import struct
from pathlib import Path

import pytest

from exporter.core.flows import DESTROY, NEW, UPDATE
from exporter.sources.kernel import conntrack as ct
from exporter.sources.kernel import conntrack_events as ct_events
from exporter.sources.kernel.netlink import NetlinkError

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "conntrack"
LOOPBACK = socket.inet_aton("127.0.0.1")
LOOPBACK6 = socket.inet_pton(socket.AF_INET6, "::1")


def made(suffix: str = "") -> dict[str, int]:
    return json.loads((FIXTURES / f"made{suffix}.json").read_text())


def events(suffix: str = "") -> list[tuple[str, ct.Entry]]:
    data, offset = (FIXTURES / f"events{suffix}.bin").read_bytes(), 0
    out: list = []
    while offset < len(data):
        (length,) = struct.unpack_from("=I", data, offset)
        out += ct.parse_datagram(data[offset + 4 : offset + 4 + length])
        offset += 4 + length
    return out


def test_dump_gives_both_tuples_status_and_counters():
    ports = made()
    by_port = {e.dport: e for _kind, e in ct.parse_datagram((FIXTURES / "dump.bin").read_bytes())}
    tcp = by_port[ports["tcp_answered"]]
    assert (tcp.protocol, tcp.src, tcp.dst, tcp.reply_src, tcp.reply_dst) == (
        6,
        LOOPBACK,
        LOOPBACK,
        LOOPBACK,
        LOOPBACK,
    )
    assert tcp.reply_sport == ports["tcp_answered"] and tcp.reply_dport == tcp.sport
    assert tcp.answered and tcp.status & ct_assured()
    # 1,000 bytes of payload the recorder sent, plus headers; the reply side sent none.
    assert tcp.counters is not None
    sent_packets, sent_bytes, received_packets, received_bytes = tcp.counters
    assert sent_bytes > 1000 and received_bytes < 1000 and sent_packets >= 3
    assert received_packets >= 2
    udp = by_port[ports["udp_closed"]]
    assert udp.protocol == 17 and not udp.answered and udp.counters == (1, 33, 0, 0)
    assert tcp.id != udp.id and tcp.id > 0


def ct_assured() -> int:
    from exporter.core.flows import IPS_ASSURED

    return IPS_ASSURED


def test_events_new_update_destroy_in_order():
    ports = made()
    answered = [(k, e) for k, e in events() if e.dport == ports["tcp_answered"]]
    assert answered[0][0] == NEW and not answered[0][1].answered
    assert answered[0][1].counters is None  # events other than DESTROY carry no counters
    assert {k for k, _e in answered[1:-1]} == {UPDATE}
    assert answered[1][1].answered  # the SYN-ACK: the first update sees the reply
    assert answered[-1][0] == DESTROY and answered[-1][1].counters is not None
    assert len({e.id for _k, e in answered}) == 1


def test_refused_connection_is_answered_by_its_reset():
    ports = made()
    refused = [(k, e) for k, e in events() if e.dport == ports["tcp_refused"]]
    assert [k for k, _e in refused] == [NEW, DESTROY]
    assert refused[-1][1].answered


def test_udp_to_a_closed_port_ends_unanswered():
    ports = made()
    udp = [(k, e) for k, e in events() if e.dport == ports["udp_closed"]]
    assert [k for k, _e in udp] == [NEW, DESTROY]
    assert not udp[-1][1].answered and udp[-1][1].counters == (1, 33, 0, 0)


def test_truncated_and_foreign_messages_are_skipped():
    dump = (FIXTURES / "dump.bin").read_bytes()
    length = struct.unpack_from("=I", dump)[0]
    # The first message cut after its first attribute header: no tuple, no entry.
    cut = struct.pack("=I", 24) + dump[4:24]
    assert list(ct.parse_datagram(cut)) == []
    assert len(list(ct.parse_datagram(dump[:length]))) == 1
    other = struct.pack("=IHHII", 20, 0x0105, 0, 1, 0) + b"\0" * 4  # an expectation message
    assert list(ct.parse_datagram(other)) == []


def test_an_error_message_raises():
    error = struct.pack("=IHHII", 36, 2, 0, 1, 0) + struct.pack("=i", -1) + b"\0" * 16
    with pytest.raises(NetlinkError):
        list(ct.parse_datagram(error))


def test_event_kinds():
    assert ct.event_kind(ct.CT_NEW, ct.NLM_F_CREATE) == NEW
    assert ct.event_kind(ct.CT_NEW, 0) == UPDATE
    assert ct.event_kind(ct.CT_DELETE, 0) == DESTROY
    assert ct.event_kind(3, 0) is None


def test_socket_drops_read_from_proc_net_netlink(tmp_path):
    with socket.socket(socket.AF_UNIX) as sock:
        inode = __import__("os").fstat(sock.fileno()).st_ino
        table = tmp_path / "netlink"
        table.write_text(
            "sk               Eth Pid        Groups   Rmem     Wmem     Dump  Locks    Drops    Inode\n"
            f"0000000000000000 12  123        00000007 0        0        0     2        41       {inode}\n"
        )
        assert ct_events.socket_drops(sock, str(table)) == 41
        assert ct_events.socket_drops(sock, str(tmp_path / "missing")) is None


def recorded_messages(suffix: str = "") -> list:
    """(buffer, nfgenmsg offset, end) of every conntrack message recorded: the dump's, the events'."""
    datagrams = [(FIXTURES / f"dump{suffix}.bin").read_bytes()]
    data, offset = (FIXTURES / f"events{suffix}.bin").read_bytes(), 0
    while offset < len(data):
        (length,) = struct.unpack_from("=I", data, offset)
        datagrams.append(data[offset + 4 : offset + 4 + length])
        offset += 4 + length
    return [
        (buf, start, end)
        for datagram in datagrams
        for kind, _flags, buf, start, end in nl_messages(datagram)
        if kind in (ct.CT_NEW, ct.CT_DELETE)
    ]


def family(buf: bytes | memoryview, start: int) -> ct._Family:
    return ct._FAMILIES[buf[start]]


@pytest.mark.parametrize("suffix", ["", "6"])
def test_the_common_layouts_are_read_in_one_go_and_agree_with_the_walk(suffix):
    messages = recorded_messages(suffix)
    assert len(messages) > 10
    for buf, start, end in messages:
        fast = ct._common(buf, start + 4, end, family(buf, start))
        assert fast is not None and fast == ct._general(buf, start + 4, end, None)
        assert ct.parse(bytes(buf[start:end]), 0, end - start) == fast  # bytes as a memoryview
        # The same message with its first attribute header's flag cleared: not a common layout,
        # read by the general walk, to the same entry.
        slow = bytearray(buf[start:end])
        slow[4 + 3] &= 0x7F
        assert ct._common(bytes(slow), 4, len(slow), family(buf, start)) is None
        assert ct.parse(memoryview(bytes(slow)), 0, len(slow)) == fast


def without(message: bytes, kind: int) -> bytes:
    """A conntrack message (from its nfgenmsg) without its top-level attributes of that kind."""
    out, offset = bytearray(message[:4]), 4
    while offset < len(message):
        length, found = struct.unpack_from("=HH", message, offset)
        if found & 0x3FFF != kind:
            out += message[offset : offset + ((length + 3) & ~3)]
        offset += (length + 3) & ~3
    return bytes(out)


@pytest.mark.parametrize("suffix", ["", "6"])
def test_a_dump_without_marks_takes_the_plain_layout(suffix):
    """A kernel built without conntrack marks puts the id right after the status."""
    dump = (FIXTURES / f"dump{suffix}.bin").read_bytes()
    messages = [m for m in nl_messages(dump) if m[0] == ct.CT_NEW]
    assert messages
    for _kind, _flags, buf, start, end in messages:
        message = without(bytes(buf[start:end]), ct.CTA_MARK)
        assert len(message) == end - start - 8
        found = family(buf, start)
        dump_tcp, dump_layout, _event, plain = found.layouts
        only = [found._replace(layouts=(layout,)) for layout in (dump_tcp, dump_layout, plain)]
        assert ct._common(message, 4, len(message), only[0]) is None
        assert ct._common(message, 4, len(message), only[1]) is None
        assert ct._common(message, 4, len(message), only[2]) == ct.parse(buf, start, end)
        assert ct.parse(message, 0, len(message)) == ct.parse(buf, start, end)


@pytest.mark.parametrize("suffix", ["", "6"])
def test_a_dumped_tcp_entry_takes_the_layout_with_its_state(suffix):
    """TCP entries, most of a large table, have their state read with the rest in one go; the
    other dumped entries (UDP here) take the dump's layout without it."""
    dump = (FIXTURES / f"dump{suffix}.bin").read_bytes()
    protocols = set()
    for _kind, _flags, buf, start, end in [m for m in nl_messages(dump) if m[0] == ct.CT_NEW]:
        found = family(buf, start)
        tcp_only = found._replace(layouts=found.layouts[:1])
        entry = ct.parse(buf, start, end)
        assert entry is not None
        protocols.add(entry.protocol)
        via_tcp = ct._common(buf, start + 4, end, tcp_only)
        assert via_tcp == (entry if entry.protocol == 6 else None)
    assert protocols == {6, 17}


def test_ipv6_dump_and_events():
    ports = made("6")
    by_port = {e.dport: e for _kind, e in ct.parse_datagram((FIXTURES / "dump6.bin").read_bytes())}
    tcp, udp = by_port[ports["tcp_answered"]], by_port[ports["udp_closed"]]
    assert {tcp.src, tcp.dst, tcp.reply_src, tcp.reply_dst} == {LOOPBACK6}
    assert tcp.protocol == 6 and tcp.answered and tcp.reply_sport == ports["tcp_answered"]
    assert tcp.counters is not None and tcp.counters[1] > 1000  # the 1,000 bytes sent
    assert udp.protocol == 17 and not udp.answered and udp.counters == (1, 53, 0, 0)
    answered = [(k, e) for k, e in events("6") if e.dport == ports["tcp_answered"]]
    assert answered[0][0] == NEW and answered[-1][0] == DESTROY and len(answered) >= 3
    assert [k for k, e in events("6") if e.dport == ports["tcp_refused"]] == [NEW, DESTROY]
    kept = ct.parse_datagram(
        (FIXTURES / "dump6.bin").read_bytes(), keep=lambda src, reply_src: src != LOOPBACK6
    )
    assert kept == []


def test_keep_skips_the_entries_of_no_interest():
    data = (FIXTURES / "dump.bin").read_bytes()
    assert list(ct.parse_datagram(data, keep=lambda src, reply_src: False)) == []
    kept = list(ct.parse_datagram(data, keep=lambda src, reply_src: src == LOOPBACK))
    assert len(kept) == len(list(ct.parse_datagram(data)))


def nl_messages(data: bytes) -> list:
    from exporter.sources.kernel.netlink import iter_messages

    return list(iter_messages(data))


def run_bpf(program: bytes, packet: bytes) -> int:
    """The classic BPF instructions the filter uses, run as the kernel runs them."""
    code = [struct.unpack_from("=HBBI", program, i) for i in range(0, len(program), 8)]
    a = pc = 0
    while True:
        op, jt, jf, k = code[pc]
        if op in (ct_events.BPF_LD_H_ABS, ct_events.BPF_LD_W_ABS):
            a = int.from_bytes(packet[k : k + (2 if op == ct_events.BPF_LD_H_ABS else 4)], "big")
            pc += 1
        elif op in (ct_events.BPF_JEQ_K, ct_events.BPF_JSET_K):
            hit = a == k if op == ct_events.BPF_JEQ_K else bool(a & k)
            pc += 1 + (jt if hit else jf)
        else:
            assert op == ct_events.BPF_RET_K
            return k


@pytest.mark.parametrize("suffix", ["", "6"])
def test_the_event_filter_drops_only_the_updates_of_assured_connections(suffix):
    program = ct_events.assured_update_filter()
    data, offset = (FIXTURES / f"events{suffix}.bin").read_bytes(), 0
    passed: list = []
    dropped: list = []
    while offset < len(data):
        (length,) = struct.unpack_from("=I", data, offset)
        datagram = data[offset + 4 : offset + 4 + length]
        offset += 4 + length
        ((kind, entry),) = ct.parse_datagram(datagram)
        (passed if run_bpf(program, datagram) else dropped).append((kind, entry.status))
    assert {k for k, _status in dropped} == {UPDATE}
    assert all(status & ct_events.IPS_ASSURED_BIT for _k, status in dropped) and len(dropped) == 4
    assert all(k != UPDATE or not status & ct_events.IPS_ASSURED_BIT for k, status in passed)
    # Another layout (here the dump's: the status right after the tuples) always passes.
    dump = (FIXTURES / f"dump{suffix}.bin").read_bytes()
    assert run_bpf(program, dump) != 0
