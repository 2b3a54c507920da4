"""One runtime's bad answer or slow call is that runtime's failure alone, beside the real dockerd whose
containers stay served: a CRI answering Version and then garbage, an Engine API (Podman's socket)
whose JSON cannot be read, a real containerd pod whose label is not UTF-8, a CRI whose sandbox
status hangs. The fakes (tests/fake_runtimes.py) stand for what no real runtime can be made to do."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from functools import partial
from typing import TYPE_CHECKING

import pytest
import requests
import test_cri
from fake_runtimes import GARBAGE, FakeCri, FakeEngine, task_start, version_answer

from bench.cri_pods import sandbox_config
from cri_helpers import CRI_SOCKET, CriPods, Pod
from exporter.sources.runtimes.proto import cri_pb2 as pb
from helpers import ExporterProcess, Metrics, wait_for

if TYPE_CHECKING:
    from docker.models.containers import Container

pods = test_cri.pods  # the fixture: the test containerd's pods of one test
SUBSCRIBE = "/containerd.services.events.v1.Events/Subscribe"


def served(e: ExporterProcess, *wanted: Container) -> Metrics | None:
    """The metrics once every Docker container is served, else None."""
    m = e.metrics()
    ok = all(m.select("dockernet_container_info", container_id=c.id) for c in wanted)
    return m if ok else None


def runtime_up(m: Metrics, runtime: str) -> float | None:
    return m.get_value("dockernet_runtime_up", runtime=runtime)


def no_traceback(e: ExporterProcess) -> None:
    log = e.log()
    assert "Traceback" not in log and "Exception in thread" not in log, log


def healthy(e: ExporterProcess) -> bool:
    return requests.get(e.url + "/healthz", timeout=2).status_code == 200


class Counted:
    """A stream answer that counts its subscriptions."""

    def __init__(self, messages: Callable[[], Iterator[bytes]]) -> None:
        self.calls, self.messages = 0, messages

    def __call__(self):
        self.calls += 1
        return self.messages()


class GarbageCri(FakeCri):
    subscribed: Counted


@pytest.fixture
def garbage_cri(tmp_path):
    def garbage():
        yield GARBAGE

    subscribed = Counted(garbage)
    answers = {"Version": lambda _r: version_answer()}
    answers |= {m: lambda _r: GARBAGE for m in ("ListPodSandbox", "ListContainers")}
    cri = GarbageCri(str(tmp_path / "cri.sock"), answers, {SUBSCRIBE: subscribed})
    cri.subscribed = subscribed
    cri.start()
    yield cri
    cri.stop()


def test_a_cri_answering_garbage_is_down_alone_and_logged_once(containers, exporter, garbage_cri):
    before = containers.run()
    e = exporter(f"--cri.endpoint=unix://{garbage_cri.path}")
    m = wait_for(lambda: served(e, before), timeout=5, what="Docker's container served")
    after = containers.run()
    m = wait_for(lambda: served(e, before, after), timeout=5, what="a container started later")
    watched_from, subscribed_before = time.monotonic(), garbage_cri.subscribed.calls
    time.sleep(8)
    m = e.metrics()
    assert runtime_up(m, "docker") == 1
    assert runtime_up(m, "containerd") == 0
    assert healthy(e)
    no_traceback(e)
    log = e.log()
    assert log.count("event=containerd_unreachable") == 1, log
    assert "event=containerd_reachable" not in log, log
    # Doubled after each stream that fails on its first item: 8 s hold at most 4 retries.
    retries = garbage_cri.subscribed.calls - subscribed_before
    assert retries <= 4, f"{retries} subscriptions in {time.monotonic() - watched_from:.1f}s"


def inspect_document(container_id: str, pid: object) -> dict:
    return {
        "Id": container_id,
        "Name": f"/{container_id}",
        "State": {"Running": True, "Pid": pid, "StartedAt": "2026-12-07T00:00:00Z"},
        "Config": {"Image": "x"},
        "HostConfig": {"NetworkMode": "host"},
        "NetworkSettings": {"Networks": None, "Ports": {}},
    }


@pytest.fixture
def bad_podman(tmp_path):
    routes = {
        "/containers/json": [{"Id": "badpid"}, {"Id": "goodpid"}],
        "/containers/badpid/json": inspect_document("badpid", "notanint"),
        "/containers/goodpid/json": inspect_document("goodpid", 1),
        "/v4.0.0/libpod/networks/json": [],
    }
    engine = FakeEngine(str(tmp_path / "podman.sock"), routes).start()
    yield engine, routes
    engine.stop()


def test_a_podman_container_that_cannot_be_read_is_left_out_alone(containers, exporter, bad_podman):
    engine, _ = bad_podman
    c = containers.run()
    e = exporter(f"--podman.host=unix://{engine.path}")
    m = wait_for(lambda: served(e, c), timeout=5, what="Docker's container served")
    m = wait_for(lambda: (m := e.metrics()) and runtime_up(m, "podman") and m, what="podman up")
    assert m.select("dockernet_container_info", container_id="goodpid")
    assert not m.select("dockernet_container_info", container_id="badpid")
    assert healthy(e)
    no_traceback(e)
    assert e.log().count("podman_container_unreadable container_id=badpid") == 1, e.log()


def test_a_podman_listing_that_cannot_be_read_is_podman_down_alone(
    containers, exporter, bad_podman
):
    engine, routes = bad_podman
    routes["/containers/json"] = {"Id": 5}  # an object where a list belongs
    c = containers.run()
    e = exporter(f"--podman.host=unix://{engine.path}")
    m = wait_for(lambda: served(e, c), timeout=5, what="Docker's container served")
    m = wait_for(lambda: (m := e.metrics()) and runtime_up(m, "podman") == 0 and m, timeout=5)
    assert runtime_up(m, "docker") == 1
    assert healthy(e)
    no_traceback(e)
    log = e.log()
    assert log.count("event=podman_unreachable") == 1, log
    assert "TypeError" in log


def run_pod_with_raw_label(pods: CriPods, name: str) -> Pod:
    """A pod whose label value is not UTF-8: containerd takes it through a raw call, as no client
    that encodes strings would send it."""
    config = sandbox_config(name, "dnx", f"uid-{name}", False)
    config.labels["dnx-raw"] = "PLACEHOLDER"
    raw = pb.RunPodSandboxRequest(config=config).SerializeToString()
    assert raw.count(b"PLACEHOLDER") == 1
    raw = raw.replace(b"PLACEHOLDER", b"\xff\xfe-not-utf8")  # the same length
    reply = pb.RunPodSandboxResponse.FromString(pods.client.call("RunPodSandbox", raw))
    pod = Pod(reply.pod_sandbox_id, name, "dnx", f"uid-{name}", False, config)
    pods.pods.append(pod)
    return pod


def test_a_pod_whose_label_is_not_utf8_is_left_out_alone(containers, exporter, pods):
    bad = run_pod_with_raw_label(pods, f"raw-{int(time.time() * 1000) % 100000}")
    live = pods.run()
    c = containers.run()
    e = exporter(f"--cri.endpoint={CRI_SOCKET}", "--collector.orphans.grace=3s")
    m = wait_for(
        lambda: (
            m if (m := served(e, c)) and m.select("dockernet_pod_info", pod=live.name) else None
        ),
        timeout=10,
        what="the Docker container and the good pod served",
    )
    later = pods.run()
    m = wait_for(
        lambda: m if (m := e.metrics()).select("dockernet_pod_info", pod=later.name) else None,
        timeout=5,
        what="a pod made later served",
    )
    assert runtime_up(m, "containerd") == runtime_up(m, "docker") == 1
    assert not m.select("dockernet_pod_info", pod=bad.name)
    assert healthy(e)
    no_traceback(e)
    assert e.log().count("event=cri_sandbox_unreadable") == 1, e.log()


@pytest.fixture
def hung_cri(tmp_path):
    """A CRI that lists one sandbox, announces a new sandbox's start ten times a second, and never
    answers PodSandboxStatus."""
    listed = pb.ListPodSandboxResponse(
        items=[
            pb.PodSandbox(
                id="sb-listed", metadata=pb.PodSandboxMetadata(name="p", namespace="n", uid="u")
            )
        ]
    ).SerializeToString()
    released = threading.Event()

    def starts():
        n = 0
        while not released.wait(0.1):
            n += 1
            yield task_start(f"sb-{n}")

    def hang(_request: bytes) -> bytes:
        released.wait(120)
        return b""

    answers = {
        "Version": lambda _r: version_answer(),
        "ListPodSandbox": lambda _r: listed,
        "ListContainers": lambda _r: b"",
        "PodSandboxStatus": hang,
    }
    cri = FakeCri(str(tmp_path / "cri.sock"), answers, {SUBSCRIBE: starts}).start()
    yield cri
    released.set()
    cri.stop()


def test_a_hung_sandbox_status_delays_no_docker_container(containers, exporter, hung_cri):
    e = exporter(
        f"--cri.endpoint=unix://{hung_cri.path}", "--cri.timeout=10s", "--web.first-scrape-wait=1s"
    )
    time.sleep(1)  # the CRI's worker is now waiting on a status, with look-ups queued behind
    for _ in range(2):
        c = containers.run()  # returns once the container runs
        started = time.monotonic()
        wait_for(partial(served, e, c), timeout=3, interval=0.05, what="the container served")
        assert time.monotonic() - started < 3
    assert runtime_up(e.metrics(), "docker") == 1
    assert healthy(e)


@pytest.fixture
def listing_hung_cri(tmp_path):
    """A CRI that answers Version, keeps its event stream open, and never answers a listing."""
    released = threading.Event()

    def quiet():
        released.wait(120)
        yield from ()

    def hang(_request: bytes) -> bytes:
        released.wait(120)
        return b""

    answers = {"Version": lambda _r: version_answer(), "ListPodSandbox": hang}
    cri = FakeCri(str(tmp_path / "cri.sock"), answers, {SUBSCRIBE: quiet}).start()
    yield cri
    released.set()
    cri.stop()


def test_a_cri_that_hangs_on_its_listings_is_never_up(containers, exporter, listing_hung_cri):
    c = containers.run()
    e = exporter(f"--cri.endpoint=unix://{listing_hung_cri.path}", "--cri.timeout=2s")
    seen = set()
    deadline = time.monotonic() + 8  # the first listing times out after 2 s, pings answer
    while time.monotonic() < deadline:
        m = e.metrics()
        seen.add(runtime_up(m, "containerd"))
        assert m.select("dockernet_container_info", container_id=c.id)
        time.sleep(0.1)
    assert 1 not in seen and 0 in seen, seen


def test_resyncs_go_on_while_a_runtime_reports_an_object_badly(containers, exporter, bad_podman):
    engine, _ = bad_podman
    e = exporter(f"--podman.host=unix://{engine.path}", "--resync.interval=1s")
    resyncs = 'dockernet_resyncs_total{source="all",reason="periodic"}'

    def periodic(m: Metrics) -> float:
        return m.get_value("dockernet_resyncs_total", source="all", reason="periodic") or 0

    wait_for(lambda: periodic(e.metrics()) >= 3, timeout=10, what=f"{resyncs} >= 3")
    c = containers.run()
    m = wait_for(lambda: served(e, c), timeout=5, what="a container started meanwhile")
    assert runtime_up(m, "docker") == runtime_up(m, "podman") == 1
    assert e.log().count("podman_container_unreadable container_id=badpid") == 1, e.log()
