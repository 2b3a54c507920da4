"""/proc/<pid>/net/dev: rows by interface name with the eight counters, names escaped as netlink's."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from exporter.metrics.exposition import Family, labels, render
from exporter.sources.kernel import netlink
from exporter.sources.kernel.procfs import parse_net_dev

NET_DEV = (
    b"Inter-|   Receive                                                |  Transmit\n"
    b" face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo "
    b"colls carrier compressed\n"
    b"    lo:  123456     789    0    0    0     0          0         0   123456     789    0    0    0"
    b"     0       0          0\n"
    b"veth3c62f33: 8862 97 0 0 0 0 0 0 1702 21 0 0 0 0 0 0\n"
    b"  eth0:  1  2  3  4  5  6  7  8  9 10 11 12 13 14 15 16\n"
    b"vethcaf\xc3\xa9:  9  9  9  9  9  9  9  9  9  9  9  9  9  9  9  9\n"
)


def test_net_dev_rows_by_name_with_the_eight_counters():
    full = parse_net_dev(NET_DEV)
    assert set(full) == {"lo", "veth3c62f33", "eth0", "vethcafé"}
    assert full["veth3c62f33"] == (8862, 97, 0, 0, 1702, 21, 0, 0)
    assert full["vethcafé"] == (9,) * 8


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
