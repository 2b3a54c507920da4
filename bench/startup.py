"""One-shot commands' start-up: `dockernet-exporter --help` against the start of a
bare interpreter that imports argparse and json (measured in the same run, on the
same interpreter), and `dockernet-exporter veths` with at least 20 containers
running."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from .checks import check
from .stats import median

if TYPE_CHECKING:
    from .load import Load

CONTAINERS = 20
HELP_RATIO_TARGET = 4.0
VETHS_TARGET_S = 0.3
EXPORTER = [sys.executable, "-m", "exporter"]
PACKAGE = str(Path(__file__).resolve().parent.parent / "exporter")


def timed(argv: list, repeats: int) -> float:
    """Median wall time of `repeats` runs; each must succeed."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
        times.append(time.perf_counter() - started)
    return median(times)


def run(load: Load, repeats: int = 15) -> dict:
    """Runs before the scrape curve: its containers are removed again, so that the curve's points
    hold only the veths they ask for."""
    own = [load.run_container(f"{load.prefix}-s{i}") for i in range(CONTAINERS)]
    try:
        # As an installed package has it: bytecode written, whatever PYTHONDONTWRITEBYTECODE says.
        subprocess.run([sys.executable, "-m", "compileall", "-q", PACKAGE], check=True)
        timed(EXPORTER + ["--help"], 2)  # warm the page cache
        bare = timed([sys.executable, "-c", "import argparse, json"], repeats)
        help_s = timed(EXPORTER + ["--help"], repeats)
        veths_s = timed(EXPORTER + ["veths"], repeats)
    finally:
        for container_id in own:
            load.remove_container(container_id)
    ratio = help_s / bare
    return {
        "containers": len(own),
        "bare_ms": round(bare * 1000, 1),
        "help_ms": round(help_s * 1000, 1),
        "veths_ms": round(veths_s * 1000, 1),
        "checks": [
            check(
                "--help start-up",
                round(ratio, 2),
                "x",
                f"<= {HELP_RATIO_TARGET:g}x",
                ratio <= HELP_RATIO_TARGET,
                f"{help_s * 1000:.0f} ms against a bare start's {bare * 1000:.0f} ms",
            ),
            check(
                f"veths with {len(own)} containers",
                round(veths_s, 3),
                "s",
                f"<= {VETHS_TARGET_S:g} s",
                veths_s <= VETHS_TARGET_S,
            ),
        ],
    }
