"""python -m grafana.mixin [--check]: write the generated files, or fail when they differ."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .build import DASHBOARD_DIR, outputs

ROOT = Path(__file__).resolve().parents[2]


def differences(files: dict) -> list:
    stale = [
        str(p.relative_to(ROOT))
        for p in (ROOT / DASHBOARD_DIR).glob("*.json")
        if str(p.relative_to(ROOT)) not in files
    ]
    changed = [
        path
        for path, text in files.items()
        if not (ROOT / path).exists() or (ROOT / path).read_text() != text
    ]
    return sorted(changed + stale)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m grafana.mixin", description=__doc__)
    parser.add_argument(
        "--check", action="store_true", help="only compare; exit 1 when anything differs"
    )
    args = parser.parse_args()
    files = outputs()
    if args.check:
        diff = differences(files)
        for path in diff:
            print(f"out of date: {path} (run `make dashboards`)", file=sys.stderr)
        return 1 if diff else 0
    for path, text in files.items():
        (ROOT / path).parent.mkdir(parents=True, exist_ok=True)
        (ROOT / path).write_text(text)
    print(f"wrote {len(files)} files")
    return 0


if __name__ == "__main__":
    sys.exit(main())
