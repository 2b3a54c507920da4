"""The scrape path's shortcuts give the same answers as the plain way."""

from __future__ import annotations

import math

from prometheus_client.parser import text_string_to_metric_families

from exporter.metrics.exposition import Family, labels, render
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


def test_static_family_renders_once_and_identically():
    def family(static: bool) -> Family:
        fam = Family("x_info", "gauge", "h", static=static)
        for i in range(3):
            fam.add(labels(veth=f"veth{i}", bridge='we"ird'), 1)
        return fam

    static = family(True)
    first = render([static])
    assert first == render([family(False)])
    static.samples.clear()  # a cached family is never changed; if it were, the cache would show
    assert render([static]) == first


def test_values_of_every_type_render_as_prometheus_reads_them():
    fam = Family("y", "gauge", "h")
    for i, v in enumerate((7, 2**70, 2.5, 1e-06, math.inf, -math.inf, math.nan, 0)):
        fam.add(labels(i=i), v)
    parsed = [s.value for f in text_string_to_metric_families(render([fam])) for s in f.samples]
    assert parsed[:6] == [7, 2**70, 2.5, 1e-06, math.inf, -math.inf] and math.isnan(parsed[6])
    assert parsed[7] == 0
    assert 'y{i="0"} 7\n' in render([fam])
