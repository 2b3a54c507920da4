"""Concurrent scrapes and one firewall read: scrapes that arrive while a read runs share it.

With every firewall tool hanging, 4 concurrent scrapes each answer within the NAT timeout
(plus a margin) with nat success 0 and the other collectors unaffected, and the hung tools
are killed, a wrapper script's children included. With the real tools, concurrent scrapes
get the right NAT series, from one read when they overlap.
"""

from __future__ import annotations

import shutil
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

import requests

from helpers import Metrics, parse_metrics, sh, wait_for

TOOLS = (
    "iptables-save",
    "iptables-nft-save",
    "iptables-legacy-save",
    "ip6tables-save",
    "ip6tables-nft-save",
    "ip6tables-legacy-save",
    "nft",
)
TIMEOUT = 2.0
MARGIN = 1.0


def fake_tools(directory: Path, then: str) -> Path:
    """Each firewall tool as a shell script that logs its command line to ``calls`` and runs
    ``then`` (``{tool}``: the real tool). A script, not ``exec``: its children hold the pipes too."""
    calls = directory / "calls"
    for tool in TOOLS:
        real = shutil.which(tool)
        if real is None and "{tool}" in then:
            continue
        path = directory / tool
        path.write_text(f'#!/bin/sh\necho "{tool} $*" >> {calls}\n{then.format(tool=real)}\n')
        path.chmod(0o755)
    return calls


def concurrent_scrapes(url: str, n: int = 4) -> list[tuple[float, Metrics | None]]:
    """(seconds, metrics) of n scrapes started at once; metrics None when one got no answer."""
    barrier = threading.Barrier(n)
    results: list[tuple[float, Metrics | None]] = [(0.0, None)] * n

    def scrape(i: int) -> None:
        barrier.wait()
        started = time.monotonic()
        try:
            r = requests.get(url + "/metrics", timeout=TIMEOUT + 5)
            r.raise_for_status()
            results[i] = (time.monotonic() - started, Metrics(parse_metrics(r.text)))
        except requests.RequestException:
            results[i] = (time.monotonic() - started, None)

    threads = [threading.Thread(target=scrape, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def success(m: Metrics) -> dict[str, float]:
    return {l["collector"]: v for l, v in m.get("dockernet_scrape_collector_success", ())}


def test_concurrent_scrapes_share_one_hung_read_and_answer_within_the_timeout(exporter, tmp_path):
    sleep = f"sleep 60.{uuid.uuid4().int % 10**6:06d}"  # to find what is left of the tools
    calls = fake_tools(tmp_path, sleep)
    p = exporter(f"--collector.nat.timeout={TIMEOUT:g}s", env={"PATH": f"{tmp_path}:/usr/bin:/bin"})
    results = concurrent_scrapes(p.url)
    seconds = [round(s, 2) for s, _ in results]
    assert all(s <= TIMEOUT + MARGIN for s in seconds), seconds
    for _, m in results:
        assert m is not None
        ok = success(m)
        assert ok.pop("nat") == 0 and ok and set(ok.values()) == {1}, success(m)
        assert "dockernet_published_port_rule_present" not in m
    # One read for the four scrapes: no command ran twice. And none is left running.
    assert max(Counter(calls.read_text().splitlines()).values()) == 1, calls.read_text()
    assert sh("pgrep", "-fx", sleep, check=False) == ""
    assert f"did not answer within {TIMEOUT:g}s" in p.log() and "Traceback" not in p.log()


def published(m: Metrics, container_id: str) -> dict[tuple[str, str], float]:
    return {
        (l["protocol"], l["host_port"]): v
        for l, v in m.select("dockernet_published_port_rule_present", container_id=container_id)
    }


def test_concurrent_scrapes_with_the_real_tools_get_the_right_series(
    containers, exporter, tmp_path
):
    c = containers.run(ports={"80/tcp": None, "81/udp": None})
    expected = {
        (key.split("/")[1], b["HostPort"]): 1
        for key, binds in c.attrs["NetworkSettings"]["Ports"].items()
        for b in binds or ()
        if ":" not in b["HostIp"]  # IPv6 bindings of an IPv4-only container expect no rule
    }
    assert len(expected) == 2, c.attrs["NetworkSettings"]["Ports"]
    plain = exporter()
    wait_for(lambda: published(plain.metrics(), c.id) == expected, what="both DNAT rules")
    for _ in range(3):
        for _, m in concurrent_scrapes(plain.url):
            assert m is not None and success(m)["nat"] == 1 and published(m, c.id) == expected

    # The real tools half a second slow: the four scrapes overlap, and share one read.
    calls = fake_tools(tmp_path, 'sleep 0.5; exec {tool} "$@"')
    slow = exporter(env={"PATH": f"{tmp_path}:/usr/sbin:/usr/bin:/sbin:/bin"})
    wait_for(lambda: published(slow.metrics(), c.id) == expected, what="both DNAT rules, slowly")
    calls.write_text("")
    for _, m in concurrent_scrapes(slow.url):
        assert m is not None and success(m)["nat"] == 1 and published(m, c.id) == expected
    assert calls.read_text() and max(Counter(calls.read_text().splitlines()).values()) == 1, (
        calls.read_text()
    )
