"""Pure statistics for the benchmark figures."""
from __future__ import annotations

import math
from typing import Sequence


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
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys))
    slope = sxy / sxx if sxx else 0.0
    intercept = my - slope * mx
    ss_res = sum((y - (slope * x + intercept)) ** 2 for x, y in zip(xs, ys))
    ss_tot = sum((y - my) ** 2 for y in ys)
    return {"slope": slope, "intercept": intercept, "r2": 1 - ss_res / ss_tot if ss_tot else 1.0}


def superlinearity(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Marginal cost of the last segment over the slope of the whole fit: about 1 when linear."""
    if len(xs) < 3:
        return 1.0
    fit = linear_fit(xs, ys)
    last = (ys[-1] - ys[-2]) / (xs[-1] - xs[-2])
    return last / fit["slope"] if fit["slope"] > 0 else math.inf
