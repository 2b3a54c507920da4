"""A figure, what it is compared to, and whether it meets its target."""

from __future__ import annotations


def check(figure: str, value: float, unit: str, target: str, ok: bool, baseline: str = "") -> dict:
    return {
        "figure": figure,
        "value": value,
        "unit": unit,
        "baseline": baseline,
        "target": target,
        "ok": bool(ok),
    }


def nearest(points: list, veths: int) -> dict:
    return min(points, key=lambda p: abs(p["veths"] - veths))
