"""The text exposition format: escaping, static families rendered once, values as Prometheus reads them."""

from __future__ import annotations

import math

from prometheus_client.parser import text_string_to_metric_families

from exporter.metrics.exposition import Family, labels, render, sample_head, sample_lines


def test_exposition_escapes_label_values_and_help():
    odd = 'we"ird\\name\nnext ünïcode'
    text = render(
        [
            Family("x_info", "gauge", "help with \\ and\nnewline").add(labels(name=odd), 1),
            Family("y_total", "counter", "c").add("", 3).add(labels(a="1"), 2.5),
        ]
    )
    (x, y) = list(text_string_to_metric_families(text))
    assert x.samples[0].labels == {"name": odd}
    assert [s.value for s in y.samples] == [3, 2.5]


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


def test_sample_lines_render_as_the_samples_do_and_texts_after_follow():
    label_sets = [labels(veth="veth0"), labels(veth='we"ird')]
    by_samples = Family("x_total", "counter", "h")
    for ls, v in zip(label_sets, (7, 2**70), strict=True):
        by_samples.add(ls, v)
    heads = [sample_head("x_total", ls) for ls in label_sets]
    by_lines = Family("x_total", "counter", "h", lines=sample_lines(heads, (7, 2**70)))
    assert render([by_lines]) == render([by_samples])
    assert render([by_lines], "# EOF\n") == render([by_samples]) + "# EOF\n"
