"""Should the state loop ever die, the daemon keeps why, logs it, lets waiting scrapes go, and
/healthz answers 503 with it."""

from __future__ import annotations

import socket
import urllib.error
import urllib.request

import pytest

from exporter import logs
from exporter.sources.kernel.procfs import Procfs
from exporter.state.daemon import Daemon
from exporter.web.server import Server


@pytest.fixture
def daemon():
    d = Daemon([], Procfs(), first_read_wait=30.0)
    yield d
    d._netlink.close()


def test_a_dead_state_loop_is_kept_logged_and_frees_waiting_scrapes(daemon, capsys):
    def die() -> None:
        raise RuntimeError("a bug")

    daemon._follow_changes = die
    logs.configure()  # structlog bound to this test's captured stderr
    daemon._run_state()
    assert daemon.failure == "RuntimeError: a bug"
    assert daemon.started.is_set()
    assert "state_loop_died" in capsys.readouterr().err


def healthz(server: Server) -> tuple[int, str]:
    url = server.url.replace("/metrics", "/healthz")
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_healthz_answers_503_once_the_state_loop_died(daemon):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = Server(f"127.0.0.1:{port}", "/metrics", lambda: "")
    server.failure = lambda: daemon.failure
    server.serve_in_background()
    try:
        assert healthz(server) == (200, "ok\n")
        daemon.failure = "RuntimeError: a bug"
        code, text = healthz(server)
        assert code == 503 and "RuntimeError: a bug" in text
    finally:
        server.shutdown()
        server.server_close()
