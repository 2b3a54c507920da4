"""The table on the terminal, the raw figures as JSON, and the plot."""

from __future__ import annotations

import json
import math
from pathlib import Path


def fmt(v: object) -> str:
    if isinstance(v, float):
        return "n/a" if math.isnan(v) else f"{v:g}"
    return str(v)


def table(checks: list) -> str:
    rows = [("figure", "value", "compared to", "target", "met")]
    rows += [
        (
            c["figure"],
            f"{fmt(c['value'])} {c['unit']}".strip(),
            c["baseline"],
            c["target"],
            "yes" if c["ok"] else "NO",
        )
        for c in checks
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=False)).rstrip() for r in rows
    )


def markdown(checks: list) -> str:
    lines = ["| figure | value | compared to | target | met |", "| --- | --- | --- | --- | --- |"]
    lines += [
        f"| {c['figure']} | {fmt(c['value'])} {c['unit']} | {c['baseline']} | {c['target']} | "
        f"{'yes' if c['ok'] else '**no**'} |"
        for c in checks
    ]
    return "\n".join(lines)


def write_json(results: dict, path: Path) -> None:
    path.write_text(json.dumps(results, indent=1, default=str) + "\n")


def plot(curve: list, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs = [p["veths"] for p in curve]
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    for key, label, style in (
        ("dockernet-exporter_plain", "dockernet-exporter, full /metrics", "o-"),
        ("dockernet-exporter_gzip", "dockernet-exporter, gzip", "o--"),
        ("node_exporter_plain", "node_exporter 1.5, netdev only", "s-"),
        ("node_exporter_gzip", "node_exporter 1.5, netdev only, gzip", "s--"),
    ):
        ax.plot(xs, [p[f"{key}_ms"] for p in curve], style, label=label)
    ax.axhline(20, color="grey", linewidth=0.8, linestyle=":", label="20 ms target")
    ax.set_xlabel("veths on the host")
    ax.set_ylabel("median scrape wall time (ms)")
    ax.set_yscale("log")
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
