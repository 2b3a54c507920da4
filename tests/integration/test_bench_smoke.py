"""The benchmark at a tiny size: it sets up its load, measures both exporters, writes its figures
and plot, and leaves nothing behind. No timing is asserted here (bench/README.md has the figures)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import uuid

from helpers import ROOT, ip_json, sh

SCENARIOS = ("nat", "curve", "steady", "freshness", "churn", "storm")


def test_tiny_benchmark_runs_reports_and_cleans_up(docker_client, tmp_path):
    prefix = f"dnxb-{uuid.uuid4().hex[:4]}"
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "--tiny",
            "--no-lock",
            "--prefix",
            prefix,
            "--out",
            str(tmp_path),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
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
    assert r["churn"]["missed"] == 0 and r["churn"]["stale"] == 0 and r["churn"]["cycles"] == 4
    assert (
        r["storm"]["alive"]
        and r["storm"]["settle_seconds"] < 30
        and r["storm"]["gone_seconds"] < 30
    )
    assert r["steady"]["cpu_percent"] >= 0 and r["steady"]["rss_mb"] > 0
    assert r["nat"]["available"] == (importlib.util.find_spec("exporter.nat") is not None)
    assert all({"figure", "value", "target", "ok"} <= set(c) for c in results["checks"])

    assert (tmp_path / "scrape.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "table.md").read_text().startswith("| figure |")

    tag = prefix.replace("-", "")
    assert [l["ifname"] for l in ip_json("link") if l["ifname"].startswith(tag)] == []
    assert prefix not in sh("ip", "netns", "list")
    assert docker_client.containers.list(all=True, filters={"label": f"dnxb.bench={prefix}"}) == []
    assert docker_client.networks.list(filters={"label": f"dnxb.bench={prefix}"}) == []
