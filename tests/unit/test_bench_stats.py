"""The benchmark's linearity check (a linear or flat cost passes, one growing faster does not),
and its CPU and memory readings against the kernel's own accounting."""

from __future__ import annotations

import importlib.util
import os
import resource
import sys
import time
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


def load(name: str) -> ModuleType:
    """bench/ is run as `python -m bench` from the checkout, not installed: load a module of it that
    imports nothing of bench by path."""
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    assert spec is not None and spec.loader is not None  # a .py file has a source loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


stats, procs = load("stats"), load("procs")
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


BURN = """
import sys, time
held = b"x" * (64 << 20)  # resident: every page written
started = time.process_time()
while time.process_time() - started < 0.3:
    pass
print("burnt", flush=True)
time.sleep(60)
"""


def test_cpu_and_rss_readings_agree_with_getrusage_of_the_reaped_process(tmp_path):
    """The steady-state figures come from /proc/<pid>/stat and /status (bench/procs.py): for a child
    that burns 0.3 s of CPU and holds 64 MiB, they agree with what the kernel accounts for it once
    it is reaped (RUSAGE_CHILDREN)."""
    log = tmp_path / "burn.log"
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    child = procs.Exporter("burn", [sys.executable, "-c", BURN], log, port=0)
    try:
        deadline = time.monotonic() + 30
        while "burnt" not in log.read_text():
            assert child.alive() and time.monotonic() < deadline, log.read_text()
            time.sleep(0.02)
        cpu, rss = child.cpu_seconds(), child.rss_bytes()
    finally:
        child.stop()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    accounted = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    tick = 1 / os.sysconf("SC_CLK_TCK")
    assert cpu >= 0.3 - tick
    assert cpu == pytest.approx(accounted, abs=3 * tick)  # only sleeping after the reading
    # VmRSS and the peak that getrusage reports sum per-CPU counters at different moments: a few
    # pages apart.
    assert 64 << 20 <= rss <= after.ru_maxrss * 1024 + (1 << 20)
