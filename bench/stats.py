"""Pure statistics for the benchmark figures."""

from __future__ import annotations

import math
from collections.abc import Sequence


def median(xs: Sequence[float]) -> float:
    return percentile(xs, 50)


def percentile(xs: Sequence[float], p: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    if not xs:
        return math.nan
    s = sorted(xs)
    k = (len(s) - 1) * p / 100
    lo, hi = math.floor(k), math.ceil(k)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def linear_fit(xs: Sequence[float], ys: Sequence[float]) -> dict:
    """Least squares y = slope * x + intercept, with r^2."""
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=False))
    slope = sxy / sxx if sxx else 0.0
    intercept = my - slope * mx
    ss_res = sum((y - (slope * x + intercept)) ** 2 for x, y in zip(xs, ys, strict=False))
    ss_tot = sum((y - my) ** 2 for y in ys)
    return {"slope": slope, "intercept": intercept, "r2": 1 - ss_res / ss_tot if ss_tot else 1.0}


def superlinearity(xs: Sequence[float], ys: Sequence[float]) -> float:
    """The largest size's cost over what the line through the smaller sizes predicts for it: about 1
    when the cost is linear, well above 1 when it grows faster. Unlike r^2, it does not punish a curve
    that is nearly flat, where noise weighs more than the slope."""
    if len(xs) < 3:
        return 1.0
    fit = linear_fit(xs[:-1], ys[:-1])
    predicted = fit["slope"] * xs[-1] + fit["intercept"]
    return ys[-1] / predicted if predicted > 0 else math.inf
