"""The benchmark's linearity check: a linear or flat cost passes, one growing faster does not."""

from __future__ import annotations

import importlib.util
from pathlib import Path

# bench/ is run as `python -m bench` from the checkout, not installed: load its pure helpers by path.
_spec = importlib.util.spec_from_file_location(
    "bench_stats", Path(__file__).resolve().parents[2] / "bench" / "stats.py"
)
stats = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(stats)
linear_fit, superlinearity = stats.linear_fit, stats.superlinearity

SIZES = [100, 250, 500, 1000, 2000]


def test_linear_and_flat_costs_sit_on_the_line_through_the_smaller_sizes():
    assert abs(superlinearity(SIZES, [5 + 0.003 * x for x in SIZES]) - 1) < 1e-9
    assert (
        superlinearity(SIZES, [7.0, 7.2, 6.9, 7.1, 7.0]) < 1.05
    )  # flat and noisy: r2 says nothing
    assert linear_fit(SIZES, [7.0, 7.2, 6.9, 7.1, 7.0])["r2"] < 0.5


def test_a_cost_growing_faster_than_linear_stands_out():
    assert superlinearity(SIZES, [1e-5 * x * x for x in SIZES]) > 1.5
    assert (
        superlinearity(SIZES, [5 + 0.003 * x for x in SIZES[:-1]] + [2 * (5 + 0.003 * 2000)]) > 1.9
    )
