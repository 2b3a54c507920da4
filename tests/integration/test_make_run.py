"""`make run`, the way to try the exporter (issue 23, section 3): on a host with Docker its
'listening' line gives the topology page's address beside /metrics; on a host without any
runtime its first line says what is served and how to get a runtime. The real make target, in a
session of its own, stopped by its process group."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import requests

from helpers import ROOT, free_port

LISTENING = "event=listening"


@contextmanager
def make_run(
    port: int, env: dict | None = None, until: tuple[str, ...] = (LISTENING,)
) -> Iterator[list[str]]:
    """The lines `make run` prints (stdout and stderr, in order) until each of `until` has been
    printed (the exporter's 'listening' line by default); the exporter serves meanwhile."""
    args = f"ARGS=--web.listen-address=127.0.0.1:{port}"
    proc = subprocess.Popen(
        ["make", "--no-print-directory", "run", args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    lines: queue.Queue = queue.Queue()
    out = proc.stdout
    assert out is not None

    def pump() -> None:
        for l in out:
            lines.put(l.rstrip("\n"))

    threading.Thread(target=pump, daemon=True).start()
    seen: list[str] = []
    try:
        deadline = time.monotonic() + 60
        while not all(any(text in l for l in seen) for text in until):
            assert proc.poll() is None or not lines.empty(), "\n".join(seen)
            seen.append(lines.get(timeout=max(deadline - time.monotonic(), 0.01)))
        yield seen
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)


def field(line: str, key: str) -> str:
    return next(part.split("=", 1)[1] for part in line.split() if part.startswith(key + "="))


def test_on_a_docker_host_the_listening_line_gives_the_topology_page(docker_client):
    port = free_port()
    with make_run(port) as lines:
        (listening,) = [l for l in lines if LISTENING in l]
        assert field(listening, "url") == f"http://127.0.0.1:{port}/metrics"
        assert field(listening, "topology") == f"http://127.0.0.1:{port}/topology"
        page = requests.get(field(listening, "topology"), timeout=10)
        assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
        assert "Containers and their host veths right now:" in lines


def test_without_any_runtime_the_first_line_says_what_is_served_and_how_to_get_one(tmp_path):
    # No dockerd on PATH (Debian's is /usr/sbin/dockerd), and no Docker socket where it looks.
    path = ":".join(p for p in os.environ["PATH"].split(":") if not p.endswith("sbin"))
    env = dict(os.environ, PATH=path, DOCKER_HOST=f"unix://{tmp_path}/docker.sock")
    port = free_port()
    # The daemon says Docker is unreachable once its first call fails, after it listens.
    with make_run(port, env, until=(LISTENING, "event=docker_unreachable")) as lines:
        said = [l for l in lines if l.startswith("test-env:")]
        assert said == [
            "test-env: dockerd is not installed; the exporter will serve what the kernel knows "
            "(apt-get install docker.io)"
        ]
        assert lines.index(said[0]) <= 1  # after make's own echo of the command at most
        (listening,) = [l for l in lines if LISTENING in l]
        assert field(listening, "topology") == f"http://127.0.0.1:{port}/topology"
        assert any("docker_unreachable" in l for l in lines)
        assert requests.get(field(listening, "url"), timeout=10).status_code == 200
