"""`python -m bench`: set up the load, measure both exporters side by side, report, clean up."""

from __future__ import annotations

import argparse
import fcntl
import os
import platform
import signal
import subprocess
import sys
import time
import traceback
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from . import (
    churn,
    flows,
    freshness,
    natparse,
    netstat,
    overlay,
    pageload,
    pods,
    podscrape,
    procs,
    report,
    scrape_curve,
    startup,
    steady,
    storm,
    topology,
)
from .cri_pods import CRI_SOCKET
from .load import Load

if TYPE_CHECKING:
    from docker import DockerClient

    from .procs import Exporter

LOCK_PATH = "/run/dockernet-tests.lock"
# NAT parse is pure: it runs first, on the idle host (after the storm, the kernel's cleanup of a thousand
# namespaces shared the cores with it: 55 ms against 28 to 31 ms alone).
# The pods' scrape runs before the curve and removes its load again: the curve grows from the host
# as it was. The overlay scenario runs on a Swarm node of its own, last.
SCENARIOS = (
    "nat",
    "flows",
    "startup",
    "podscrape",
    "curve",
    "topology",
    "pageload",
    "steady",
    "freshness",
    "pods",
    "churn",
    "storm",
    "netstat",
    "overlay",
)
TINY = {
    "veths": "16,24",
    "containers": 4,
    "repeats": 3,
    "freshness": 3,
    "pods": 3,
    "pod_count": 3,
    "pod_veths": 24,
    "churn": 4,
    "steady": 2.0,
    "storm": 20,
    "nat_rules": 500,
    "topology_seconds": 2.0,
    "pageload_seconds": 2.0,
    "flow_entries": 1000,
    "flow_rate": 100,
    "flow_seconds": 3.0,
}


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"bench: error: {message} (see --help)\n")
        raise SystemExit(2)


def counts(text: str) -> list:
    try:
        values = sorted(int(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid list {text!r}: use e.g. 100,250,500") from None
    if not values or values[0] <= 0:
        raise argparse.ArgumentTypeError(f"invalid list {text!r}: positive numbers")
    return values


def build_parser() -> Parser:
    p = Parser(
        prog="python -m bench",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Benchmark dockernet-exporter against node_exporter (netdev only) on a loaded host.",
    )
    p.add_argument(
        "--veths", type=counts, default="100,250,500,1000,2000", help="scrape curve points"
    )
    p.add_argument(
        "--containers", type=int, default=200, help="real containers at the largest point"
    )
    p.add_argument(
        "--repeats", type=int, default=21, help="scrapes per exporter and mode at each point"
    )
    p.add_argument(
        "--freshness", type=int, default=100, help="container starts (and removals) timed"
    )
    p.add_argument("--pods", type=int, default=50, help="pods run and stopped through the CRI")
    p.add_argument(
        "--pod-count", type=int, default=110, help="pods at once for the pods' scrape time"
    )
    p.add_argument(
        "--pod-veths", type=int, default=1000, help="host veths for the pods' scrape time"
    )
    p.add_argument(
        "--cri-endpoint",
        default=CRI_SOCKET,
        help="CRI socket of the test containerd (scripts/cri-env.sh), for the pods scenario",
    )
    p.add_argument("--churn", type=int, default=1000, help="create/remove cycles while scraping")
    p.add_argument("--steady", type=float, default=300.0, help="seconds of the steady-state window")
    p.add_argument(
        "--steady-interval", type=float, default=15.0, help="scrape interval in that window"
    )
    p.add_argument("--storm", type=int, default=1000, help="veth pairs created at once")
    p.add_argument("--nat-rules", type=int, default=10000, help="rules in the iptables-save text")
    p.add_argument(
        "--topology-veths",
        type=int,
        default=topology.VETHS,
        help="veths of the synthetic snapshot the topology page is rendered from",
    )
    p.add_argument(
        "--topology-seconds",
        type=float,
        default=20.0,
        help="seconds of /metrics scrapes alone, then as long with the topology page open",
    )
    p.add_argument(
        "--pageload-seconds",
        type=float,
        default=20.0,
        help="seconds of /metrics scrapes idle, then as long while visitors reload /topology",
    )
    p.add_argument("--flow-entries", type=int, default=100_000, help="entries added to conntrack")
    p.add_argument("--flow-rate", type=int, default=2000, help="new connections a second")
    p.add_argument(
        "--flow-seconds", type=float, default=60.0, help="seconds of that rate, and idle"
    )
    p.add_argument(
        "--only",
        default=",".join(SCENARIOS),
        help="scenarios to run, in this order: " + ",".join(SCENARIOS),
    )
    p.add_argument(
        "--tiny", action="store_true", help="tiny sizes: proves the benchmark works, in seconds"
    )
    p.add_argument("--image", default=os.environ.get("TEST_IMAGE", "dockernet-test:busybox"))
    p.add_argument(
        "--out", type=Path, default=Path("bench/out"), help="directory for JSON, PNG, logs"
    )
    p.add_argument(
        "--prefix", default="", help="name prefix of everything created (default dnxb-<random>)"
    )
    p.add_argument(
        "--exporter-flag",
        dest="exporter_flags",
        action="append",
        default=[],
        metavar="FLAG",
        help="extra flag for dockernet-exporter, e.g. --exporter-flag=--collector.nat.cache=30s",
    )
    p.add_argument(
        "--no-lock",
        dest="lock",
        action="store_false",
        help=f"do not take {LOCK_PATH} exclusively (the caller holds it)",
    )
    return p


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = build_parser()
    args = p.parse_args(argv)
    if args.tiny:
        p.set_defaults(**{k: (counts(str(v)) if k == "veths" else v) for k, v in TINY.items()})
        args = p.parse_args(argv)
    args.only = [s for s in args.only.split(",") if s]
    unknown = set(args.only) - set(SCENARIOS)
    if unknown:
        p.error(f"unknown scenario {', '.join(sorted(unknown))}: choose from {','.join(SCENARIOS)}")
    if not args.prefix:
        args.prefix = f"dnxb-{uuid.uuid4().hex[:4]}"
    if not (args.prefix.startswith("dnxb-") and len(args.prefix) <= 9):
        p.error(
            "--prefix must look like dnxb-xxxx (at most 9 characters: it starts 15-character link names)"
        )
    return args


def machine() -> dict:
    model = next(
        (l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")),
        "",
    )
    ver = subprocess.run([procs.NODE_EXPORTER, "--version"], capture_output=True, text=True)
    docker = subprocess.run(
        ["docker", "version", "-f", "{{.Server.Version}}"], capture_output=True, text=True
    )
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "memory_gb": round(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 2**30, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "docker": docker.stdout.strip(),
        "node_exporter": (ver.stdout + ver.stderr).split("\n")[0].strip(),
    }


def scenarios(
    args: argparse.Namespace, client: DockerClient, load: Load, ours: Exporter, node: Exporter
) -> dict:
    """Each scenario in the order asked; the load only grows, so the later ones run at the largest."""
    runs = {
        "curve": lambda: scrape_curve.run(
            load, ours, node, args.veths, args.containers, args.repeats
        ),
        "steady": lambda: steady.run(ours, node, args.steady, args.steady_interval),
        "freshness": lambda: freshness.run(client, load, ours, args.freshness),
        "pods": lambda: pods.run(ours, args.prefix, args.pods),
        "podscrape": lambda: podscrape.run(
            load, ours, node, args.pod_count, args.pod_veths, args.repeats
        ),
        "churn": lambda: churn.run(load, ours, args.churn),
        "storm": lambda: storm.run(load, ours, args.storm),
        "nat": lambda: natparse.run(args.nat_rules),
        "startup": lambda: startup.run(load),
        "topology": lambda: topology.run(
            ours,
            args.topology_veths,
            args.topology_veths // 10,
            args.repeats,
            args.topology_seconds,
        ),
        "pageload": lambda: pageload.run(
            load, ours, max(args.veths), args.containers, args.pageload_seconds
        ),
        "netstat": lambda: netstat.run(
            client, load, ours, args.out, args.containers, args.repeats, args.tiny
        ),
        "flows": lambda: flows.run(
            client,
            args.image,
            args.out,
            args.flow_entries,
            args.flow_rate,
            args.flow_seconds,
            args.flow_seconds,
            min(args.repeats, 5),
            flags=exporter_flags(args),
        ),
        "overlay": lambda: overlay.run(
            args.image, args.prefix, args.containers, args.repeats, args.freshness
        ),
    }
    results = {}
    for name in args.only:
        print(f"bench: {name} ...", flush=True)
        if name not in ("nat", "flows", "startup", "podscrape", "overlay"):
            scrape_curve.settle(ours)
        started = time.monotonic()
        results[name] = runs[name]()
        results[name]["elapsed_seconds"] = round(time.monotonic() - started, 1)
        if not ours.alive():
            raise RuntimeError(
                f"dockernet-exporter died during {name}; see {args.out}/dockernet-exporter.log"
            )
    return results


def exporter_flags(args: argparse.Namespace) -> tuple:
    """The flags asked for, and the CRI socket where the pods scenario runs."""
    cri = (f"--cri.endpoint={args.cri_endpoint}",) if {"pods", "podscrape"} & set(args.only) else ()
    return (*cri, *args.exporter_flags)


def run(args: argparse.Namespace) -> dict:
    import docker

    client = docker.from_env(timeout=120)
    client.images.get(args.image)
    load = Load(client, args.prefix, args.image)
    exporters = []
    try:
        exporters += [
            procs.ours(args.out, exporter_flags(args)).wait_ready(),
            procs.node_exporter(args.out).wait_ready(),
        ]
        results = {
            "machine": machine(),
            "args": {k: v for k, v in vars(args).items() if k != "out"},
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        results["results"] = scenarios(args, client, load, *exporters)
        return results
    finally:
        for e in exporters:
            e.stop()
        problems = load.cleanup()
        if problems:
            sys.stderr.write("bench: warning: could not remove: " + "; ".join(problems) + "\n")


def publish(results: dict, out: Path) -> None:
    checks = [c for r in results["results"].values() for c in r["checks"]]
    results["checks"] = checks
    report.write_json(results, out / "results.json")
    (out / "table.md").write_text(report.markdown(checks) + "\n")
    curve = results["results"].get("curve", {}).get("curve")
    if curve:
        m = results["machine"]
        report.plot(
            curve, out / "scrape.png", f"{m['cores']} cores, {m['cpu']}, kernel {m['kernel']}"
        )
    print(report.table(checks))
    print(
        f"bench: {sum(c['ok'] for c in checks)}/{len(checks)} targets met; figures in {out}/results.json"
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if os.geteuid() != 0:
        sys.stderr.write(
            "bench: error: must run as root (creates namespaces, veths and containers)\n"
        )
        return 1
    args.out.mkdir(parents=True, exist_ok=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    lock = os.open(LOCK_PATH, os.O_CREAT | os.O_RDWR, 0o644)
    if args.lock:
        print(f"bench: waiting for the exclusive lock {LOCK_PATH}", flush=True)
        fcntl.flock(lock, fcntl.LOCK_EX)
    try:
        publish(run(args), args.out)
        return 0
    except Exception as exc:
        (args.out / "error.log").write_text(traceback.format_exc())
        sys.stderr.write(f"bench: error: {exc} (traceback in {args.out}/error.log)\n")
        return 1
    finally:
        os.close(lock)


if __name__ == "__main__":
    sys.exit(main())
