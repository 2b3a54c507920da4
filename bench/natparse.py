"""Target 6: parse a 10,000-rule `iptables-save -c` text
(exporter.sources.firewall.iptables_save.parse_iptables_save): Docker's rules alone, then with
kube-proxy's share (bench/nattext.py)."""

from __future__ import annotations

import time

from exporter.sources.firewall.iptables_save import parse_iptables_save

from .checks import check
from .nattext import iptables_save
from .stats import median

KUBE_PROXY_SHARE = 0.4
TARGET_MS = 50


def run(rules: int, repeats: int = 7) -> dict:
    docker = measure(iptables_save(rules), repeats)
    mixed = measure(iptables_save(rules, KUBE_PROXY_SHARE), repeats)
    return {
        "rules": rules,
        **docker,
        "with_kube_proxy": dict(mixed, share=KUBE_PROXY_SHARE),
        "checks": [
            _check(f"NAT parse, {rules} rules", docker),
            _check(f"NAT parse, {rules} rules, {KUBE_PROXY_SHARE:.0%} of them kube-proxy's", mixed),
        ],
    }


def measure(text: str, repeats: int) -> dict:
    """Median wall time of `repeats` parses of `text`, and what the parse found."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        result = parse_iptables_save(text)
        times.append(time.perf_counter() - started)
    return {
        "bytes": len(text),
        "median_ms": round(median(times) * 1000, 2),
        "nat_rules_found": len(result.rules),
        "unparsed": result.unparsed,
    }


def _check(figure: str, m: dict) -> dict:
    ms = m["median_ms"]
    return check(
        figure, ms, "ms", f"<= {TARGET_MS} ms", ms <= TARGET_MS, f"{m['bytes'] / 1e6:.1f} MB text"
    )
