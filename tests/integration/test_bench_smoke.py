"""The benchmark at a tiny size: it sets up its load, measures both exporters, writes its figures
and plot, and leaves nothing behind. No timing is asserted here (bench/README.md has the figures);
the figures it reports are held to what is known without it: the rules in the text it generates,
and what the kernel accounted to its whole process tree (getrusage of waited-for children)."""

from __future__ import annotations

import importlib.util
import json
import os
import resource
import signal
import subprocess
import sys
import uuid

import pytest

from bench.__main__ import SCENARIOS
from helpers import ROOT, ip_json, sh

TINY_NAT_RULES = 500  # bench/__main__.py's TINY["nat_rules"]

# bench/ is run as `python -m bench` from the checkout, not installed: load its text generator by path.
_spec = importlib.util.spec_from_file_location("bench_nattext", ROOT / "bench" / "nattext.py")
assert _spec is not None and _spec.loader is not None  # a .py file has a source loader
nattext = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(nattext)


def docker_nat_rules(text: str) -> int:
    """What the NAT collector must find in an `iptables-save` text, counted without its parser:
    one DNAT per published port, one MASQUERADE per subnet (`-s <subnet> ! -o <bridge>`; the
    hairpin MASQUERADE of a published port, `-s <ip>/32 -d <ip>/32`, serves no subnet, and
    kube-proxy's DNATs to an endpoint match no destination port)."""
    nat = text.split("*nat\n", 1)[1].split("\nCOMMIT\n", 1)[0].splitlines()
    dnat = [l for l in nat if " -j DNAT " in l and " --dport " in l]
    masquerade = [l for l in nat if l.endswith(" -j MASQUERADE") and " ! -o " in l]
    return len(dnat) + len(masquerade)


def children_cpu() -> tuple:
    """(CPU seconds, largest peak RSS in bytes) of the terminated children this process waited for,
    and of their own waited-for descendants."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime, r.ru_maxrss * 1024


def run_bench(args: list[str], timeout: float) -> subprocess.CompletedProcess:
    """`python -m bench` in its own process group. On timeout the group gets SIGTERM first, so
    that the bench removes the load and the exporters it started before it is killed."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            out, err = proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
        pytest.fail(f"the tiny bench took over {timeout:.0f} s:\n{out}{err}")
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def test_tiny_benchmark_runs_reports_and_cleans_up(docker_client, tmp_path):
    prefix = f"dnxb-{uuid.uuid4().hex[:4]}"
    cpu_before, _ = children_cpu()
    run = run_bench(
        ["--tiny", "--no-lock", "--prefix", prefix, "--out", str(tmp_path)],
        timeout=420,  # a loaded host takes minutes over the tiny run (a Swarm node among it)
    )
    cpu_tree, peak_rss_tree = children_cpu()
    cpu_tree -= cpu_before
    assert run.returncode == 0, run.stdout + run.stderr
    assert "targets met" in run.stdout and "compared to" in run.stdout

    results = json.loads((tmp_path / "results.json").read_text())
    assert list(results["results"]) == list(SCENARIOS)
    assert (
        results["machine"]["cores"] >= 1 and "node_exporter" in results["machine"]["node_exporter"]
    )
    r = results["results"]

    curve = r["curve"]["curve"]
    assert len(curve) == 2 and curve[0]["veths"] < curve[1]["veths"]
    for point in curve:
        for key in (
            "dockernet-exporter_plain",
            "dockernet-exporter_gzip",
            "node_exporter_plain",
            "node_exporter_gzip",
        ):
            assert point[f"{key}_ms"] > 0 and point[f"{key}_bytes"] > 0
        assert point["dockernet-exporter_gzip_bytes"] < point["dockernet-exporter_plain_bytes"]

    assert len(r["freshness"]["appear_ms"]) == len(r["freshness"]["vanish_ms"]) == 3
    assert all(0 < ms < 10_000 for ms in r["freshness"]["appear_ms"])
    # A removal can show before Docker's die event: the exporter sees the process exit first.
    assert all(-10_000 < ms < 10_000 for ms in r["freshness"]["vanish_ms"])
    assert r["podscrape"]["pods"] == 3 and r["podscrape"]["dockernet-exporter_plain_ms"] > 0
    assert len(r["pods"]["appear_ms"]) == len(r["pods"]["vanish_ms"]) == 3
    # The series may show (or go) before the CRI call returns: containerd's events come first.
    assert all(-10_000 < ms < 10_000 for ms in r["pods"]["appear_ms"] + r["pods"]["vanish_ms"])
    assert r["churn"]["missed"] == 0 and r["churn"]["stale"] == 0 and r["churn"]["cycles"] == 4
    assert (
        r["storm"]["alive"]
        and r["storm"]["settle_seconds"] < 30
        and r["storm"]["gone_seconds"] < 30
    )

    # The exporter's CPU time in the steady window is part of the CPU time the kernel accounted to
    # the benchmark's whole process tree, and at most all the cores for the whole window. (Its two
    # scrapes in 2 s cost about one clock tick: 0 is a possible figure. That /proc is read right is
    # tested against the kernel's own accounting in tests/unit/test_bench_stats.py.)
    steady = r["steady"]
    cpu_seconds = steady["cpu_percent"] / 100 * steady["seconds"]
    assert steady["seconds"] >= 2.0 and steady["scrapes"] >= 1  # --tiny: a 2 s window
    assert cpu_seconds <= cpu_tree, (steady, cpu_tree)
    assert steady["cpu_percent"] <= 100 * (os.cpu_count() or 1)
    # Its peak RSS was sampled from /proc: more than a bare Python's 10 MB, at most the largest peak
    # of any process of the tree (plus the rounding to 0.1 MB, and the few pages by which VmRSS and
    # getrusage's peak, summed from per-CPU counters at different moments, can differ).
    rss = steady["rss_mb"] * 2**20
    assert 10 * 2**20 < rss <= peak_rss_tree + 2**20, (steady, peak_rss_tree)
    (cpu_check,) = [c for c in results["checks"] if c["figure"].startswith("steady CPU")]
    assert cpu_check["value"] == steady["cpu_percent"]
    assert cpu_check["ok"] == (steady["cpu_percent"] <= 1)

    # One-shot start-up: `--help` imports argparse and more, so it cannot start faster than the
    # bare interpreter importing argparse and json; the ratio checked is the one of the two figures.
    start = r["startup"]
    assert start["containers"] >= 20
    assert 0 < start["bare_ms"] < start["help_ms"] and start["veths_ms"] > 0
    (help_check,) = [c for c in results["checks"] if c["figure"] == "--help start-up"]
    assert help_check["value"] == pytest.approx(start["help_ms"] / start["bare_ms"], abs=0.02)

    # The NAT parses ran on the texts the benchmark generates, and found what is in them.
    nat = r["nat"]
    text = nattext.iptables_save(TINY_NAT_RULES)
    assert (nat["rules"], nat["bytes"], nat["unparsed"]) == (TINY_NAT_RULES, len(text), 0)
    assert sum(1 for l in text.splitlines() if " -A " in l) == TINY_NAT_RULES
    assert nat["nat_rules_found"] == docker_nat_rules(text) > 0
    mixed = nat["with_kube_proxy"]
    text = nattext.iptables_save(TINY_NAT_RULES, mixed["share"])
    assert (mixed["bytes"], mixed["unparsed"]) == (len(text), 0)
    assert mixed["nat_rules_found"] == docker_nat_rules(text) > 0
    assert all({"figure", "value", "target", "ok"} <= set(c) for c in results["checks"])

    # The topology page was rendered from the synthetic snapshot the benchmark describes, and an
    # open page refreshed while /metrics was scraped.
    page = r["topology"]
    assert (page["veths"], page["containers"]) == (2000, 200)
    assert page["page_ms"] > 0 and page["metrics_ms"] > 0 and page["page_bytes"] > 100_000
    assert page["page_vs_metrics"] == pytest.approx(page["page_ms"] / page["metrics_ms"], abs=0.01)
    assert page["live"]["page_requests"] >= 5 and page["live"]["scrapes"] >= 2

    # The netstat figures: one row per size asked, every file measured, the sockets held.
    netstat = r["netstat"]
    assert [row["namespaces"] for row in netstat["namespaces"]] == [4]  # --tiny: 4 containers
    assert all(v > 0 for k, v in netstat["namespaces"][0].items() if k.endswith("_us"))
    assert [row["sockets"] for row in netstat["sockets"]] == [11, 201]
    scrape = netstat["scrape"]
    assert scrape["off_ms"] > 0 and scrape["now_ms"] > 0 and scrape["sampled_ms"] > 0
    # The sampler reads every workload namespace the exporter follows: the scenario's containers,
    # and any other workload on the host at that moment (the benchmark's socket holders among them).
    assert scrape["daemon_pass"]["namespaces"] >= scrape["containers"] > 0
    assert netstat["sampler"]["cpu_per_namespace_us"] > 0

    # The overlay scenario: both sides on the same node with as many containers and veths there,
    # the ratio checked is the one of the two figures; every start timed.
    ov = r["overlay"]
    bridge, over = ov["bridge_only"], ov["overlay"]
    assert bridge["containers"] == over["containers"] == 4 and over["networks"] == 1
    assert bridge["veths"] == over["veths"] >= 5 * 4  # four synthetic veths per container
    assert bridge["ms"] > 0 and over["ms"] > 0 and over["bytes"] > bridge["bytes"]
    (ratio,) = [c for c in results["checks"] if c["figure"].startswith("overlay: /metrics")]
    assert ratio["value"] == pytest.approx(over["ms"] / bridge["ms"], abs=0.001)
    assert len(ov["starts"]["appear_ms"]) == 3 and all(
        0 < ms < 10_000 for ms in ov["starts"]["appear_ms"]
    )

    assert (tmp_path / "scrape.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "table.md").read_text().startswith("| figure |")

    tag = prefix.replace("-", "")
    assert [l["ifname"] for l in ip_json("link") if l["ifname"].startswith(tag)] == []
    assert prefix not in sh("ip", "netns", "list")
    assert docker_client.containers.list(all=True, filters={"label": f"dnxb.bench={prefix}"}) == []
    assert docker_client.networks.list(filters={"label": f"dnxb.bench={prefix}"}) == []
