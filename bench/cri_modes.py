"""The CRI source's event modes side by side, on the test containerd (scripts/cri-env.sh): with a
number of idle pods running, the exporter's CPU (and containerd's) while nothing happens, then the
freshness of pods run and stopped (bench/pods.py), for containerd's events service (what auto
picks on containerd) and for polling the CRI at two intervals (what a runtime without an event
stream gets). Not part of `make bench`:

    .venv/bin/python -m bench.cri_modes [--pods 20] [--idle 30] [--cycles 20]
"""

from __future__ import annotations

import argparse
import fcntl
import os
import tempfile
import time
from pathlib import Path

from . import pods as pod_freshness
from . import procs
from .cri_pods import CRI_SOCKET, CriPods

FIGURES = [f"{e}_{s}_ms" for e in ("appear", "vanish") for s in ("p50", "p99", "max")]
LOCK_PATH = "/run/dockernet-tests.lock"  # the test sessions' lock, held shared as they do
IDLE_NAMESPACE = "dnxidle"
MODES = {
    "events (auto)": (),
    "poll 1s": ("--cri.events=poll", "--cri.poll-interval=1s"),
    "poll 0.2s": ("--cri.events=poll", "--cri.poll-interval=0.2s"),
}


def containerd_pid() -> int:
    """The test containerd: the process listening on CRI_SOCKET's directory's config."""
    for pid in (p for p in os.listdir("/proc") if p.isdigit()):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if argv[0].endswith(b"containerd") and any(b"dockernet-cri" in a for a in argv):
            return int(pid)
    raise RuntimeError("the test containerd is not running (scripts/cri-env.sh)")


def cpu_of(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / procs.CLK_TCK


def measure(out: Path, flags: tuple, idle_pods: int, idle_s: float, cycles: int, tag: str) -> dict:
    ours = procs.ours(
        out, (f"--cri.endpoint={CRI_SOCKET}", "--docker.host=", "--podman.host=", *flags)
    ).wait_ready()
    try:
        deadline = time.monotonic() + 30
        while ours.text().count(f'dockernet_pod_info{{namespace="{IDLE_NAMESPACE}"') < idle_pods:
            if time.monotonic() > deadline:
                raise RuntimeError("the idle pods were not all mapped within 30 s")
            time.sleep(0.2)
        time.sleep(2.0)  # settled
        runtime = containerd_pid()
        ours_before, runtime_before, started = ours.cpu_seconds(), cpu_of(runtime), time.monotonic()
        time.sleep(idle_s)
        elapsed = time.monotonic() - started
        idle = {
            "exporter_cpu_pct": 100 * (ours.cpu_seconds() - ours_before) / elapsed,
            "containerd_cpu_pct": 100 * (cpu_of(runtime) - runtime_before) / elapsed,
        }
        fresh = pod_freshness.run(ours, tag, cycles)
        return idle | {k: fresh[k] for k in FIGURES}
    finally:
        ours.stop()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pods", type=int, default=20, help="idle pods running meanwhile")
    p.add_argument("--idle", type=float, default=30.0, help="seconds of idle CPU measured")
    p.add_argument("--cycles", type=int, default=20, help="pods run and stopped for freshness")
    args = p.parse_args()
    lock = os.open(LOCK_PATH, os.O_CREAT | os.O_RDWR, 0o644)
    fcntl.flock(lock, fcntl.LOCK_SH)
    out = Path(tempfile.mkdtemp(prefix="dnx-cri-modes-"))
    pods = CriPods()
    rows = {}
    try:
        for i in range(args.pods):
            pods.run(f"idle-{i}", IDLE_NAMESPACE)
        for n, (name, flags) in enumerate(MODES.items()):
            rows[name] = measure(out, flags, args.pods, args.idle, args.cycles, f"m{n}")
    finally:
        pods.cleanup()
    print(f"{args.pods} idle pods, {args.idle:g} s idle, {args.cycles} pods run and stopped")
    print(
        "| mode | exporter CPU idle | containerd CPU idle | run -> series p50 / p99 / max |"
        " stop -> gone p50 / p99 / max |"
    )
    print("| --- | --- | --- | --- | --- |")
    for name, r in rows.items():
        print(
            f"| {name} | {r['exporter_cpu_pct']:.2f} % | {r['containerd_cpu_pct']:.2f} % "
            f"| {r['appear_p50_ms']:.0f} / {r['appear_p99_ms']:.0f} / {r['appear_max_ms']:.0f} ms "
            f"| {r['vanish_p50_ms']:.0f} / {r['vanish_p99_ms']:.0f} / {r['vanish_max_ms']:.0f} ms |"
        )


if __name__ == "__main__":
    main()
