"""Target 1: full /metrics wall time against node_exporter's netdev-only scrape, by veth count."""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from .checks import check, nearest
from .stats import linear_fit, median, superlinearity

if TYPE_CHECKING:
    from .load import Load
    from .procs import Exporter

MODES = (("plain", False), ("gzip", True))
# The veths collector's duration on a scrape that reuses the snapshot's rendered family (about 0.01 ms;
# rendering it takes milliseconds at a thousand veths).
SNAPSHOT_CACHED_MS = 0.5
QUIET_SECONDS = 2.5


def host_veths() -> int:
    out = subprocess.run(["ip", "-o", "link", "show", "type", "veth"], capture_output=True).stdout
    return len(out.splitlines())  # bytes: a link name need not be UTF-8


def collector_ms(text: str) -> dict:
    """Each collector's own duration on that scrape, as the exporter reports it."""
    found = re.findall(
        r'^dockernet_scrape_collector_duration_seconds\{collector="([^"]+)"\} (\S+)$', text, re.M
    )
    return {name: round(float(v) * 1000, 3) for name, v in found}


def veth_rows(text: str) -> int:
    return text.count("\ndockernet_veth_info{")


def grow(load: Load, ours: Exporter, veths: int, containers: int, foreign: int) -> None:
    """Containers first (each brings one veth), then synthetic veths up to `veths` host veths."""
    load.grow_containers(containers)
    load.grow_veths(veths - foreign - len(load.containers))
    settle(ours)


def events_seen(text: str) -> float:
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("dockernet_events_total{")
    )


def settle(ours: Exporter, timeout: float = 120.0, present: Callable[[], int] = host_veths) -> None:
    """Until the exporter shows every veth of the host, has taken no event for QUIET_SECONDS, and served
    the veth families from the snapshot's cache (rendered on an earlier scrape: the snapshot stopped
    changing). The kernel reports new links' carrier and operstate changes in batches once a second
    (linkwatch), so a burst goes on well after the last veth shows, with pauses in between."""
    deadline = time.monotonic() + timeout
    last, quiet_since = None, time.monotonic()
    while True:
        text = ours.text()
        shown, veths, events = veth_rows(text), present(), events_seen(text)
        if events != last:
            last, quiet_since = events, time.monotonic()
        cached = collector_ms(text).get("veths", 0.0) < SNAPSHOT_CACHED_MS
        if shown == veths and cached and time.monotonic() - quiet_since >= QUIET_SECONDS:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"the exporter shows {shown} veths, the host has {veths}, after {timeout:.0f}s"
            )
        time.sleep(0.5)


def measure(exporters: list, repeats: int) -> dict:
    """Interleaved: each round scrapes every exporter in every mode once."""
    times: dict = {(e.name, m): [] for e in exporters for m, _ in MODES}
    sizes: dict = {}
    for e in exporters:
        for _ in range(2):
            e.scrape()
    for _ in range(repeats):
        for mode, gz in MODES:
            for e in exporters:
                seconds, body = e.scrape(gzip=gz)
                times[(e.name, mode)].append(seconds)
                sizes[(e.name, mode)] = len(body)
    return {
        f"{name}_{mode}_ms": round(median(ts) * 1000, 3) for (name, mode), ts in times.items()
    } | {f"{name}_{mode}_bytes": n for (name, mode), n in sizes.items()}


def run(
    load: Load, ours: Exporter, node: Exporter, points: list, containers: int, repeats: int
) -> dict:
    foreign = host_veths()
    curve = []
    for n in sorted(points):
        c = round(containers * n / max(points))
        grow(load, ours, n, c, foreign)
        row: dict[str, object] = {"veths": host_veths(), "containers": len(load.containers)}
        row.update(measure([ours, node], repeats))
        text = ours.text()
        row.update(lines=text.count("\n"), collectors_ms=collector_ms(text))
        curve.append(row)
        print(
            f"  scrape at {row['veths']} veths: ours {row['dockernet-exporter_plain_ms']} ms, "
            f"node_exporter {row['node_exporter_plain_ms']} ms",
            flush=True,
        )
    return {"curve": curve, "foreign_veths": foreign, "checks": checks(curve)}


def checks(curve: list) -> list:
    at = nearest(curve, 1000)
    out = []
    for mode, _ in MODES:
        ours, node = at[f"dockernet-exporter_{mode}_ms"], at[f"node_exporter_{mode}_ms"]
        base = f"node_exporter netdev {node:.1f} ms"
        out.append(
            check(f"scrape {mode}, {at['veths']} veths", ours, "ms", "<= 20 ms", ours <= 20, base)
        )
        out.append(
            check(
                f"scrape {mode} ratio, {at['veths']} veths",
                round(ours / node, 3),
                "x",
                "<= 0.15x",
                ours / node <= 0.15,
                base,
            )
        )
    xs = [p["veths"] for p in curve]
    ys = [p["dockernet-exporter_plain_ms"] for p in curve]
    fit, nodefit = linear_fit(xs, ys), linear_fit(xs, [p["node_exporter_plain_ms"] for p in curve])
    ratio = superlinearity(xs, ys)
    out.append(
        check(
            "cost per veth (linear fit)",
            round(fit["slope"] * 1000, 2),
            "us",
            f"not worse than linear: {xs[-1]} veths <= 1.25x the line through the rest",
            ratio <= 1.25,
            f"node_exporter {nodefit['slope'] * 1000:.1f} us/veth; r2 {fit['r2']:.3f}; "
            f"{xs[-1]} veths at {ratio:.2f}x the line",
        )
    )
    return out
