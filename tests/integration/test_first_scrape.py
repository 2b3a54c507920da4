"""The first scrape after a start: sent the moment the port answers, on a host with 1,000 extra
links (veths whose peers sit in a namespace of the test's own) and a few containers with published
ports, it waits for the first read of the runtimes and shows every container and binding."""

from __future__ import annotations

import socket
import time

import pytest
import requests
from test_faults import storm

from helpers import ExporterProcess, parse_metrics, sh, unique

EXTRA_LINKS = 1000


@pytest.fixture
def extra_links():
    prefix = unique("dfs")[:8]
    storm(prefix, EXTRA_LINKS)  # each pair: a host end and its peer in the namespace
    yield prefix
    sh("ip", "netns", "del", prefix, check=False)


def first_answer(p: ExporterProcess, timeout: float = 20.0) -> str:
    """/metrics, asked the moment the port accepts a connection."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert p.proc.poll() is None, p.log()
        try:
            socket.create_connection(("127.0.0.1", p.port), timeout=1).close()
        except OSError:
            time.sleep(0.005)
            continue
        return requests.get(p.url + "/metrics", timeout=15).text
    pytest.fail("the port never answered")


def test_a_scrape_sent_as_the_port_answers_shows_every_container_and_binding(
    containers, extra_links
):
    running = [containers.run(ports={"80/tcp": None}) for _ in range(3)]
    assert len(sh("ip", "-o", "link").splitlines()) > EXTRA_LINKS
    p = ExporterProcess()
    try:
        text = first_answer(p)
    finally:
        p.stop()
    log = p.log()
    m = parse_metrics(text)
    infos = {l["container_id"] for l, _ in m.get("dockernet_container_info", ())}
    ports = {l["container_id"] for l, _ in m.get("dockernet_published_port_info", ())}
    for c in running:
        assert c.id in infos, f"{c.name} missing from the first scrape:\n{log}"
        assert c.id in ports, f"{c.name}'s published port missing from the first scrape:\n{log}"
    assert m["dockernet_docker_up"] == [({}, 1.0)]
