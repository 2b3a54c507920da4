"""Target 6: parse a 10,000-rule `iptables-save -c` text (exporter.nat.parse_iptables_save)."""

from __future__ import annotations

import importlib
import time

from .checks import check
from .nattext import iptables_save
from .stats import median


def run(rules: int, repeats: int = 7) -> dict:
    try:
        parse = importlib.import_module("exporter.nat").parse_iptables_save
    except (ImportError, AttributeError):
        return {
            "available": False,
            "checks": [
                check(
                    f"NAT parse, {rules} rules",
                    float("nan"),
                    "ms",
                    "<= 50 ms",
                    False,
                    "exporter.nat.parse_iptables_save not available",
                )
            ],
        }
    text = iptables_save(rules)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        result = parse(text)
        times.append(time.perf_counter() - started)
    ms = round(median(times) * 1000, 2)
    return {
        "available": True,
        "rules": rules,
        "bytes": len(text),
        "median_ms": ms,
        "nat_rules_found": len(getattr(result, "rules", ())),
        "unparsed": getattr(result, "unparsed", None),
        "checks": [
            check(
                f"NAT parse, {rules} rules",
                ms,
                "ms",
                "<= 50 ms",
                ms <= 50,
                f"{len(text) / 1e6:.1f} MB text",
            )
        ],
    }
