"""EngineAPI against the real dockerd: its answers equal docker-py's for the same calls,
its event stream reports a container's start and die (replayed with since= and live), and
it copes with dockerd vanishing, restarting, and hanging (SIGSTOP)."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from exporter.sources.runtimes.engine_api import UNREACHABLE, EngineAPI, NotFound
from helpers import DockerSocketProxy, start_dockerd, stop_dockerd, unique, wait_for

if TYPE_CHECKING:
    from exporter.sources.runtimes.engine_api import EventStream


@pytest.fixture
def api(docker_client):
    a = EngineAPI(os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock", timeout=10)
    yield a
    a.close()


def collect(stream: EventStream, want: int, timeout: float = 15.0) -> list:
    """The first `want` documents of the stream, closing it from a watchdog after `timeout`."""
    watchdog = threading.Timer(timeout, stream.close)
    watchdog.start()
    got = []
    try:
        for event in stream:
            got.append(event)
            if len(got) == want:
                break
    finally:
        watchdog.cancel()
        stream.close()
    return got


def test_ping_and_version(api):
    assert api.ping(timeout=2) is True
    assert api.get("/_ping") == "OK"
    assert api.get("/version")["ApiVersion"] == api.get("/v1.41/version")["ApiVersion"]


def test_container_list_equals_docker_py(api, containers, docker_client):
    c = containers.run()
    filters = {"id": [c.id]}
    ours = api.get("/containers/json", {"filters": filters})
    theirs = docker_client.api.containers(filters=filters)
    assert [x["Id"] for x in ours] == [c.id]
    for x in (*ours, *theirs):
        x.pop("Status")  # "Up 2 seconds" ticks between the two calls
    assert ours == theirs
    assert c.id in {x["Id"] for x in api.get("/containers/json", {"all": True})}


def test_inspect_equals_docker_py(api, containers, docker_client):
    c = containers.run()
    ours = api.get(f"/containers/{c.id}/json")
    assert ours == docker_client.api.inspect_container(c.id)
    assert ours["State"]["Running"] is True and ours["State"]["Pid"] > 0
    assert api.get(f"/containers/{c.name}/json")["Id"] == c.id


def test_inspect_of_a_missing_container_is_not_found(api):
    with pytest.raises(NotFound, match="No such container"):
        api.get(f"/containers/{unique('nothere')}/json")


def test_networks_equal_docker_py(api, containers, docker_client):
    net = containers.network()
    ours = {n["Id"]: n for n in api.get("/networks")}
    assert {"bridge", "host", "none", net.name} <= {n["Name"] for n in ours.values()}
    assert ours[net.id]["Name"] == net.name
    assert api.get(f"/networks/{net.id}") == docker_client.api.inspect_network(net.id)


def test_events_since_replay_the_start_and_die_of_a_container(api, containers):
    since = int(time.time()) - 1
    c = containers.run(command="sh -c 'sleep 0.2'")
    c.wait(timeout=10)
    stream = api.stream(
        "/events",
        {"since": since, "filters": {"container": [c.id], "event": ["start", "die"]}},
    )
    got = collect(stream, 2)
    assert [(e["Type"], e["Action"], e["id"]) for e in got] == [
        ("container", "start", c.id),
        ("container", "die", c.id),
    ]
    assert got[1]["Actor"]["Attributes"]["exitCode"] == "0"
    assert got[0]["time"] >= since


def test_events_arrive_live_and_close_ends_the_wait(api, containers):
    name = unique()
    stream = api.stream("/events", {"filters": {"container": [name], "event": ["start", "die"]}})
    got: list = []
    reader = threading.Thread(target=lambda: got.extend(stream))  # list.extend appends as it goes
    reader.start()
    c = containers.run(name=name, command="sh -c 'sleep 0.2'")
    c.wait(timeout=30)
    wait_for(lambda: len(got) >= 2, what="the start and die events")
    # nothing more comes for that name: only close() from this thread ends the blocked iteration
    stream.close()
    reader.join(30)
    assert not reader.is_alive()
    assert [(e["Action"], e["Actor"]["Attributes"]["name"]) for e in got] == [
        ("start", name),
        ("die", name),
    ]


@pytest.fixture
def proxy(tmp_path, docker_client):
    p = DockerSocketProxy(str(tmp_path / "docker.sock"))
    p.start()
    yield p
    p.stop()


def test_docker_vanishing_ends_the_stream_and_the_next_call_reconnects(proxy):
    api = EngineAPI(f"unix://{proxy.path}", timeout=5)
    assert api.get("/_ping") == "OK"
    stream = api.stream("/events", {"filters": {"container": [unique()]}})
    done = threading.Event()

    def drain() -> None:
        list(stream)
        done.set()

    threading.Thread(target=drain, daemon=True).start()
    time.sleep(0.2)
    proxy.stop()  # every connection dropped, the socket gone
    assert done.wait(30), "the stream did not end when Docker went away"
    with pytest.raises(UNREACHABLE):
        api.get("/_ping")
    assert api.ping(timeout=1) is False
    proxy.start()
    assert api.get("/_ping") == "OK"
    assert api.ping(timeout=1) is True


def test_dockerd_restart_ends_the_stream(api, host_exclusive):
    stream = api.stream("/events", {"filters": {"container": [unique()]}})
    got: list = []
    outcome: list = []

    def read():
        try:
            got.extend(stream)
            outcome.append("StopIteration")
        except UNREACHABLE as exc:
            outcome.append(exc)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        stop_dockerd()
        reader.join(30)
        assert not reader.is_alive(), "the stream did not end when dockerd stopped"
        assert outcome == ["StopIteration"] and got == []
        with pytest.raises(UNREACHABLE):
            api.get("/_ping")
    finally:
        stream.close()
        start_dockerd()
    assert api.get("/_ping") == "OK"  # the same object reconnects


def test_a_stopped_dockerd_fails_ping_and_calls_within_their_timeouts(api, host_exclusive):
    assert api.get("/_ping") == "OK"
    stream = api.stream("/events", {"filters": {"container": [unique()]}})
    pid = int(Path("/var/run/docker.pid").read_text())
    os.kill(pid, signal.SIGSTOP)
    try:
        # Each call ends by its own 0.5 s, not by the object's timeout: half of that is the bound.
        t0 = time.monotonic()
        assert api.ping(timeout=0.5) is False
        assert time.monotonic() - t0 < api.timeout / 2
        t0 = time.monotonic()
        with pytest.raises(UNREACHABLE, match="timed out"):
            api.get("/containers/json", timeout=0.5)
        assert time.monotonic() - t0 < api.timeout / 2
    finally:
        os.kill(pid, signal.SIGCONT)
    assert api.ping(timeout=5) is True
    assert api.get("/_ping") == "OK"
    stream.close()  # never iterated: closes without reading (nothing would come for that filter)
    assert list(stream) == []
