"""The HTTP server against hostile and unlucky clients (issue 16): bursts of
connections, slowloris, floods of wrong passwords, odd requests, SIGHUP and
dual-stack listening, all against the real exporter process; /healthz after a
failed render against a Server in this process."""

from __future__ import annotations

import os
import re
import signal
import socket
import statistics
import threading
import time
from pathlib import Path
from typing import Any

import bcrypt
import pytest
import requests

from exporter import __version__
from exporter.web.config import BCRYPT_CONCURRENCY
from exporter.web.server import HEAD_TIMEOUT, MAX_CONNECTIONS, Server
from helpers import ExporterProcess, free_port, sh, wait_for

PASSWORD = "correct-horse-battery-staple"


def auth_config(path: Path, password: str = PASSWORD, cost: int = 4, extra: str = "") -> Path:
    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(cost)).decode()
    path.write_text(f"basic_auth_users:\n  prometheus: '{hashed}'\n{extra}")
    return path


def exchange(port: int, request: bytes, host: str = "127.0.0.1") -> bytes:
    """Send a request and read the answer until the server closes."""
    with socket.create_connection((host, port), timeout=10) as s:
        s.sendall(request)
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
        return answer


def closed_by_peer(s: socket.socket) -> bool:
    s.setblocking(False)
    try:
        return s.recv(1) == b""
    except BlockingIOError:
        return False
    except ConnectionResetError:
        return True


def cpu_seconds(pid: int) -> float:
    """User and system time the kernel accounted to the process."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def scrape_seconds(url: str, **kw: Any) -> float:
    t0 = time.monotonic()
    r = requests.get(url, timeout=10, **kw)
    assert r.status_code == 200
    return time.monotonic() - t0


@pytest.fixture(scope="module")
def plain(docker_client):
    p = ExporterProcess().wait_ready()
    yield p
    p.stop()


# -- item 3: bcrypt failures ----------------------------------------------


def test_a_password_over_72_bytes_gets_401(exporter, tmp_path):
    """(A damaged hash no longer loads: test_web.py's malformed configs.)"""
    config = auth_config(tmp_path / "web.yml")
    p = exporter(f"--web.config.file={config}", ready=False)
    url = p.url + "/metrics"
    wait_for(lambda: "event=listening" in p.log(), 20, what="the exporter to listen")
    for user, password in (("prometheus", "x" * 73), ("prometheus", PASSWORD * 4)):
        r = requests.get(url, auth=(user, password), timeout=10)
        assert r.status_code == 401, (user, r.status_code)
    assert requests.get(url, auth=("prometheus", PASSWORD), timeout=10).status_code == 200


# -- item 5: listen backlog -----------------------------------------------


def listen_backlog(port: int) -> int:
    """The accept queue's length of the socket listening on `port`, as the kernel reports it."""
    (line,) = sh("ss", "-Hltn", f"sport = :{port}").splitlines()
    return int(line.split()[2])  # Send-Q of a listening socket: its backlog


def test_200_simultaneous_connects_are_all_accepted_at_once(plain):
    """A full accept queue drops SYNs and the client retries a second later: the queue holds 200
    connects made at once, whatever the time the server takes to accept them, and all are
    answered."""
    assert listen_backlog(plain.port) >= 200
    barrier = threading.Barrier(200)
    results: list = []

    def client():
        barrier.wait(30)
        try:
            with socket.create_connection(("127.0.0.1", plain.port), timeout=30) as s:
                s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                results.append(s.recv(100).split(b" ")[1:2] == [b"200"])
        except OSError as exc:
            results.append(repr(exc))

    threads = [threading.Thread(target=client) for _ in range(200)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(results) == 200 and all(ok is True for ok in results), results


# -- item 8: slowloris and the connection limit --------------------------


def test_slowloris_clients_are_cut_off_and_slow_no_scrape(plain):
    url = plain.url + "/metrics"
    idle = [scrape_seconds(url) for _ in range(10)]
    opened = time.monotonic()
    slow = [socket.create_connection(("127.0.0.1", plain.port)) for _ in range(200)]
    closed_after: dict[socket.socket, float] = {}
    request = b"GET /metrics HTTP/1.1\r\nX-Slow: " + b"s" * 100
    stop = threading.Event()

    def dribble():  # one byte a second on each connection, as long as it stays open
        for i in range(len(request)):
            for s in slow:
                if s not in closed_after:
                    try:
                        s.sendall(request[i : i + 1])
                    except OSError:
                        closed_after[s] = time.monotonic() - opened
            if stop.wait(1):
                return

    dribbler = threading.Thread(target=dribble, daemon=True)
    dribbler.start()
    try:
        under = []
        while time.monotonic() - opened < HEAD_TIMEOUT / 2:
            under.append(scrape_seconds(url))
            time.sleep(0.2)
        answered_by = time.monotonic() - opened

        def all_cut_off():
            for s in slow:
                if s not in closed_after and closed_by_peer(s):
                    closed_after[s] = time.monotonic() - opened
            return len(closed_after) == len(slow)

        # A slow client would hold its connection for the 100 s of its request without the cut-off.
        wait_for(all_cut_off, 3 * HEAD_TIMEOUT, interval=0.2, what="the slow clients cut off")
    finally:
        stop.set()
        dribbler.join(5)
        for s in slow:
            s.close()
    print(
        f"idle p50 {statistics.median(idle) * 1000:.0f} ms, under 200 slowloris p50"
        f" {statistics.median(under) * 1000:.0f} ms, max {max(under) * 1000:.0f} ms;"
        f" cut off after {min(closed_after.values()):.1f}-{max(closed_after.values()):.1f} s"
    )
    # Every scrape was answered while all 200 still held their connections (none is cut off before
    # HEAD_TIMEOUT after it connected): none waited for a slow client to go. How fast they were is
    # printed, not judged: that depends on what else the machine runs.
    assert under and answered_by < HEAD_TIMEOUT
    assert min(closed_after.values()) > HEAD_TIMEOUT - 0.1, "cut off before their time"


def test_connections_beyond_the_limit_are_closed_at_once(exporter):
    p = exporter()
    held = [socket.create_connection(("127.0.0.1", p.port)) for _ in range(MAX_CONNECTIONS + 8)]
    try:
        wait_for(lambda: sum(map(closed_by_peer, held)) >= 8, what="8 connections refused")
        time.sleep(0.3)
        assert sum(map(closed_by_peer, held)) <= 16
    finally:
        for s in held:
            s.close()
    wait_for(lambda: requests.get(p.url + "/healthz", timeout=5).status_code == 200)
    assert p.log().count("event=http_connection_limit") == 1  # one line per 10 s


# -- item 9: a flood of wrong passwords ----------------------------------


def test_a_flood_of_wrong_passwords_leaves_scrapes_fast_and_the_log_short(exporter, tmp_path):
    p = exporter(f"--web.config.file={auth_config(tmp_path / 'web.yml', cost=10)}", ready=False)
    url, right = p.url + "/metrics", ("prometheus", PASSWORD)
    wait_for(lambda: "event=listening" in p.log(), 20, what="the exporter to listen")
    scrape_seconds(url, auth=right)  # verified once, then remembered
    idle = statistics.median(scrape_seconds(url, auth=right) for _ in range(30))
    stop = threading.Event()
    answers: list = []

    def flood(i: int) -> None:
        while not stop.is_set():
            answers.append(
                requests.get(url, auth=("prometheus", f"wrong-{i}"), timeout=30).status_code
            )

    flooders = [threading.Thread(target=flood, args=(i,), daemon=True) for i in range(20)]
    started, cpu_before = time.monotonic(), cpu_seconds(p.proc.pid)
    for t in flooders:
        t.start()
    try:
        time.sleep(1)
        flooded = statistics.median(scrape_seconds(url, auth=right) for _ in range(30))
    finally:
        stop.set()
        for t in flooders:
            t.join(30)
    flooded_for = time.monotonic() - started
    cores = (cpu_seconds(p.proc.pid) - cpu_before) / flooded_for
    print(
        f"idle p50 {idle * 1000:.1f} ms, under a flood of 20 wrong passwords {flooded * 1000:.1f} ms;"
        f" the exporter used {cores:.2f} of {os.cpu_count()} cores"
    )
    # Every scrape was answered (the right password is remembered: no scrape waits for a check),
    # and the flood's bcrypt checks took turns: the exporter held at most BCRYPT_CONCURRENCY cores
    # (half of them), plus a little for the HTTP around the checks. 20 checks at once would take
    # every core. Measured in CPU time the kernel accounts, not in latency: the machine's speed
    # and load change how long a scrape takes, not how many cores the checks may hold.
    assert cores <= BCRYPT_CONCURRENCY + 0.5, cores
    assert set(answers) <= {401, 429} and 401 in answers
    # The failures are logged once per 10 s, each line counting those left out since the one
    # before: 10 s after the last refusal of the flood, one more refusal is logged, and the lines
    # account for every refusal, however long the flood took.
    time.sleep(10.5)
    assert requests.get(url, auth=("prometheus", "wrong"), timeout=10).status_code == 401
    lines = [int(n) for n in re.findall(r"event=http_unauthorized suppressed=(\d+)", p.log())]
    assert 2 <= len(lines) <= 2 + flooded_for // 10, (lines, flooded_for)
    assert len(lines) + sum(lines) == answers.count(401) + 1, (lines, answers.count(401))


# -- item 10: HTTP details and SIGHUP ------------------------------------


def test_head_answers_as_get_without_a_body(plain):
    head = exchange(plain.port, b"HEAD /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    status, _, body = head.partition(b"\r\n\r\n")
    assert status.startswith(b"HTTP/1.1 200") and b"Content-Length: 3" in status and body == b""
    metrics = requests.head(plain.url + "/metrics", timeout=10)
    assert metrics.status_code == 200
    assert (
        metrics.headers["Content-Type"]
        == requests.get(plain.url + "/metrics").headers["Content-Type"]
    )


@pytest.mark.parametrize(
    "request_line, status",
    [
        (b"garbage", b"400 Bad Request"),
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", b"400 Bad Request"),  # TLS on plain
        (b"GET / HTTP/1.1 extra", b"400 Bad Request"),
        (b"GET / HTTP/9.9", b"505 HTTP Version Not Supported"),
    ],
)
def test_malformed_requests_get_a_status_line(plain, request_line, status):
    answer = exchange(plain.port, request_line + b"\r\n\r\n")
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 " + status + b"\r\n"), answer
    assert b"Content-Type: text/plain" in head and body.count(b"\n") == 1


def test_server_header_names_no_python(plain):
    r = requests.get(plain.url + "/healthz", timeout=10)
    assert r.headers["Server"] == f"dockernet-exporter/{__version__}"


def test_sighup_reloads_the_web_config_and_keeps_it_when_broken(exporter, tmp_path):
    config = auth_config(tmp_path / "web.yml", "first-password")
    p = exporter(f"--web.config.file={config}", ready=False)
    url = p.url + "/healthz"
    wait_for(lambda: "event=listening" in p.log(), 20, what="the exporter to listen")
    assert requests.get(url, auth=("prometheus", "first-password"), timeout=10).status_code == 200

    auth_config(
        config, "second-password", extra="http_server_config:\n  headers: {X-Reloaded: done}\n"
    )
    p.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: "event=web_config_reloaded" in p.log(), what="the reload")
    second = requests.get(url, auth=("prometheus", "second-password"), timeout=10)
    assert second.status_code == 200 and second.headers["X-Reloaded"] == "done"
    assert requests.get(url, auth=("prometheus", "first-password"), timeout=10).status_code == 401

    config.write_text("basic_auth_users: [not, a, mapping]\n")
    p.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: "event=web_config_reload_failed" in p.log(), what="the failed reload")
    assert requests.get(url, auth=("prometheus", "second-password"), timeout=10).status_code == 200
    assert p.proc.poll() is None
    assert p.log().count("level=error") == 1 and "Traceback" not in p.log()


# -- item 11: every address, IPv4 and IPv6 -------------------------------


def test_an_empty_host_listens_on_ipv4_and_ipv6(exporter):
    port = free_port()
    p = exporter(f"--web.listen-address=:{port}", ready=False)  # the last one given wins
    p.port, p.url = port, f"http://127.0.0.1:{port}"
    p.wait_ready()
    for host in ("127.0.0.1", "[::1]"):
        assert requests.get(f"http://{host}:{port}/healthz", timeout=5).text == "ok\n"
    wait_for(lambda: f"url=http://[::]:{port}/metrics " in p.log(), what="the logged url")


# -- item 1: /healthz while renders fail ----------------------------------


def test_healthz_is_503_while_the_last_render_failed():
    failing = [True]

    def render() -> str:
        if failing[0]:
            raise UnicodeEncodeError("utf-8", "x\udcff", 1, 2, "surrogates not allowed")
        return "up 1\n"

    server = Server(f"127.0.0.1:{free_port()}", "/metrics", render)
    server.serve_in_background()
    base = server.url.removesuffix("/metrics")
    try:
        assert requests.get(server.url, timeout=5).status_code == 500
        health = requests.get(base + "/healthz", timeout=5)
        assert health.status_code == 503
        assert "UnicodeEncodeError" in health.text and health.text.count("\n") == 1
        failing[0] = False
        assert requests.get(server.url, timeout=5).text == "up 1\n"
        assert requests.get(base + "/healthz", timeout=5).text == "ok\n"
    finally:
        server.shutdown()
        server.server_close()
