"""A runtime that vanishes briefly, hangs, or never answers, against the real
exporter and the real dockerd behind a proxy socket that the test controls
(helpers.DockerSocketProxy: the real dockerd goes on serving every other test),
and the real test containerd stopped for outages of several lengths."""

from __future__ import annotations

import signal
import socket
import threading
import time
from typing import TYPE_CHECKING

import pytest
import requests
import test_cri

from cri_helpers import CRI_SOCKET, restart_containerd
from helpers import DockerSocketProxy, ExporterProcess, Metrics, wait_for

if TYPE_CHECKING:
    from docker.models.containers import Container

pods = test_cri.pods  # the fixture: the test containerd's pods of one test
CRI = f"--cri.endpoint={CRI_SOCKET}"


@pytest.fixture
def proxy(tmp_path):
    p = DockerSocketProxy(str(tmp_path / "docker.sock"))
    p.start()
    yield p
    p.stop()


def runtime_up(e: ExporterProcess, runtime: str) -> float | None:
    return e.metrics().get_value("dockernet_runtime_up", runtime=runtime)


def interfaces_of(metrics: Metrics, container: Container) -> list:
    return metrics.select("dockernet_veth_info", container_id=container.id)


def test_a_container_started_while_the_socket_is_away_is_mapped_once_it_is_back(
    containers, exporter, proxy
):
    e = exporter(
        f"--docker.host=unix://{proxy.path}",
        "--resync.interval=1h",
        "--collector.orphans.grace=5s",
    )
    proxy.hide()
    try:
        c = containers.run()  # through the real socket, not the hidden one
        time.sleep(9)
    finally:
        proxy.unhide()
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        m = e.metrics()
        flagged = m.select("dockernet_veth_orphaned", reason="netns_without_container")
        assert not flagged, f"a running container's veth was called an orphan: {flagged}"
        info = m.select("dockernet_container_info", container_id=c.id)
        if interfaces_of(m, c) and info and m.get_value("dockernet_docker_up") == 1:
            break
        time.sleep(0.2)
    else:
        pytest.fail(f"container {c.name} unmapped or Docker down 15 s after the socket came back")


def test_a_hung_runtime_is_reported_down_within_15s_and_up_again_when_it_answers(
    containers, exporter, proxy
):
    c = containers.run()
    e = exporter(f"--docker.host=unix://{proxy.path}", "--resync.interval=1h")
    wait_for(lambda: interfaces_of(e.metrics(), c), what="the container mapped")
    frozen_at = time.monotonic()
    proxy.freeze()
    wait_for(
        lambda: e.metrics().get_value("dockernet_docker_up") == 0,
        timeout=15,
        what="docker_up 0 while the API does not answer",
    )
    hung_for = time.monotonic() - frozen_at
    assert interfaces_of(e.metrics(), c), "a hung runtime must not lose the workloads it had"
    proxy.thaw()
    m = wait_for(
        lambda: (m := e.metrics()) and m.get_value("dockernet_docker_up") == 1 and m,
        timeout=15,
        what="docker_up 1 once the API answers again",
    )
    assert interfaces_of(m, c)
    assert hung_for < 15


@pytest.fixture
def silent_engine(tmp_path):
    """A socket that accepts connections and never answers."""
    path = str(tmp_path / "silent.sock")
    server = socket.socket(socket.AF_UNIX)
    server.bind(path)
    server.listen(64)
    held: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                held.append(server.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    yield path
    server.close()
    for s in held:
        s.close()


def test_a_silent_runtime_at_start_neither_delays_listening_nor_sigterm(
    docker_client, silent_engine
):
    """The first scrape waits for the first read at most --web.first-scrape-wait, then answers what
    is known (the kernel's view); SIGTERM ends the process within 2 s, a scrape still waiting."""
    started = time.monotonic()
    p = ExporterProcess(
        f"--docker.host=unix://{silent_engine}",
        "--docker.timeout=30s",
        "--web.first-scrape-wait=1s",
    )
    try:

        def metrics_served() -> str:
            try:
                r = requests.get(p.url + "/metrics", timeout=3)
            except requests.ConnectionError:
                return ""
            return r.text if r.status_code == 200 and "dockernet_veth_info" in r.text else ""

        text = wait_for(metrics_served, timeout=6, interval=0.05, what="/metrics, Docker silent")
        served_after = time.monotonic() - started
        assert served_after < 6
        # No answer yet (the first ping fails 10 s after the start): no false 0 either.
        assert "\ndockernet_docker_up " not in text
        assert 'dockernet_runtime_up{runtime="docker"}' not in text
        waiting = threading.Thread(target=metrics_served)  # a scrape in flight at SIGTERM
        waiting.start()
        p.proc.send_signal(signal.SIGTERM)
        stop_started = time.monotonic()
        p.proc.wait(timeout=5)
        assert time.monotonic() - stop_started < 2, "SIGTERM took 2 s or more with Docker silent"
        assert p.proc.returncode == 0
        waiting.join()
    finally:
        p.stop()


# The event stream's retries after it ends at 0 (backoff 0.5 s, doubled): 0.5, 1.5, 3.5, 7.5 s.
# Each outage ends just after one of them failed, when the next is a whole backoff away.
@pytest.mark.parametrize("down_for", [1.7, 3.7, 7.7])
def test_a_runtime_back_up_is_followed_before_it_is_called_up(exporter, pods, down_for):
    e = exporter(CRI, "--collector.orphans.scope=all", "--collector.orphans.grace=5s")
    wait_for(lambda: runtime_up(e, "containerd") == 1, what="containerd up")
    restart_containerd(down_for)
    wait_for(lambda: runtime_up(e, "containerd") == 1, timeout=40, what="containerd up again")
    pod = pods.run()  # as soon as it is called up
    made = time.monotonic()
    while not (m := e.metrics()).select("dockernet_pod_info", pod=pod.name):
        assert time.monotonic() - made < 3, "pod unserved 3 s after containerd was called up"
        flagged = m.select("dockernet_veth_orphaned")
        assert not flagged, f"a veth flagged orphaned while the pod was unserved: {flagged}"
        time.sleep(0.1)
    assert not m.select("dockernet_veth_orphaned")
