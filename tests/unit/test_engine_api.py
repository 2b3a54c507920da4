"""EngineAPI against a fake engine on a unix socket (no root, no Docker): JSON, errors,
keep-alive and its loss, hung and missing engines, chunked event streams, and host parsing."""

from __future__ import annotations

import itertools
import json
import shutil
import socket
import socketserver
import ssl
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from exporter.sources.runtimes.engine_api import (
    UNREACHABLE,
    EngineAPI,
    EngineError,
    NotFound,
    Unreachable,
)

EVENTS = [{"Type": "container", "Action": "start", "id": "a" * 64}, {"Action": "die"}, {"n": 3}]


def encoded_events() -> bytes:
    return b"".join(json.dumps(e).encode() + b"\n" for e in EVENTS)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: FakeEngine

    def setup(self) -> None:
        super().setup()
        self.server.connections += 1

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def send(
        self, status: int, body: bytes, ctype: str = "application/json", **headers: str
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        self.server.paths.append(self.path)
        if url.path == "/json":
            self.send(200, json.dumps({"Id": "abc", "n": [1, 2]}).encode())
        elif url.path == "/query":
            self.send(200, json.dumps(parse_qs(url.query)).encode())
        elif url.path == "/_ping":
            self.send(200, b"OK", "text/plain; charset=utf-8")
        elif url.path == "/missing":
            self.send(404, b'{"message":"No such container: x"}\n')
        elif url.path == "/boom":
            self.send(500, b'{"message":"something broke"}\n')
        elif url.path == "/plain-error":
            self.send(502, b"bad gateway\n", "text/plain")
        elif url.path == "/bad-json":
            self.send(200, b"{not json", "application/json")
        elif url.path == "/then-close":
            # Answer as if keep-alive, then hang up: the client finds out on its next call.
            self.send(200, b'{"closed": true}')
            self.close_connection = True
        elif url.path.startswith("/events"):
            self.events(url.path)
        else:
            self.send(400, b'{"message":"unknown path"}')

    def events(self, path: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self.wfile.flush()
        data = encoded_events()
        if path == "/events":
            # Split in odd places: inside a key, right after a newline, one byte at a time.
            cuts = [
                0,
                3,
                20,
                data.index(b"\n") + 1,
                data.index(b"\n") + 2,
                len(data) - 1,
                len(data),
            ]
            for a, b in itertools.pairwise(cuts):
                self.chunk(data[a:b])
                time.sleep(0.01)
            self.wfile.write(b"0\r\n\r\n")
        elif path == "/events-hang":
            self.chunk(data[: data.index(b"\n") + 1])
            self.server.release.wait(60)  # until the test ends
        elif path == "/events-hangup":  # dockerd stopping: drops the connection between events
            self.chunk(data)
            self.close_connection = True
        elif path == "/events-broken":  # the connection dies inside a document
            self.chunk(data[:10])
            self.close_connection = True


class FakeEngine(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True

    def __init__(self, path: str) -> None:
        self.connections = 0
        self.paths: list[str] = []
        self.release = threading.Event()
        super().__init__(path, Handler)

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # clients that hang up (closed streams, timeouts) are what these tests do


@pytest.fixture
def engine(tmp_path):
    path = str(tmp_path / "engine.sock")
    server = FakeEngine(path)
    threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True).start()
    yield server
    server.release.set()
    server.shutdown()
    server.server_close()


@pytest.fixture
def api(engine):
    a = EngineAPI(f"unix://{engine.server_address}", timeout=5)
    yield a
    a.close()


@pytest.fixture
def silent(tmp_path):
    """A socket that accepts connections (the kernel's backlog) and never answers,
    as a dockerd stopped with SIGSTOP."""
    path = str(tmp_path / "silent.sock")
    s = socket.socket(socket.AF_UNIX)
    s.bind(path)
    s.listen(16)
    yield path
    s.close()


def test_get_decodes_json_and_reuses_one_connection(api, engine):
    for _ in range(3):
        assert api.get("/json") == {"Id": "abc", "n": [1, 2]}
    assert api.get("/_ping") == "OK"
    assert engine.connections == 1


def test_params_are_encoded_json_for_filters_and_0_1_for_bools(api, engine):
    got = api.get(
        "/query",
        {"all": True, "size": False, "since": 12, "skip": None, "filters": {"type": ["container"]}},
    )
    assert got == {
        "all": ["1"],
        "size": ["0"],
        "since": ["12"],
        "filters": ['{"type": ["container"]}'],
    }


def test_404_is_not_found_with_the_engines_message(api):
    with pytest.raises(NotFound) as exc:
        api.get("/missing")
    assert (exc.value.status, exc.value.message) == (404, "No such container: x")
    assert api.get("/json")["Id"] == "abc"  # the connection is still good


def test_500_is_engine_error_with_the_engines_message(api):
    with pytest.raises(EngineError) as exc:
        api.get("/boom")
    assert not isinstance(exc.value, NotFound)
    assert (exc.value.status, exc.value.message) == (500, "something broke")
    with pytest.raises(EngineError, match="bad gateway") as exc:
        api.get("/plain-error")
    assert exc.value.status == 502


def test_invalid_json_is_unreachable(api):
    with pytest.raises(Unreachable, match="invalid JSON"):
        api.get("/bad-json")


def test_reconnects_once_when_the_server_closed_the_keepalive_connection(api, engine):
    assert api.get("/then-close") == {"closed": True}
    time.sleep(0.05)  # let the server hang up
    assert api.get("/json")["Id"] == "abc"
    assert engine.connections == 2


def test_reconnect_also_when_the_request_races_the_hangup(api, engine):
    for _ in range(20):
        assert api.get("/then-close") == {"closed": True}
    assert api.get("/json")["Id"] == "abc"
    assert engine.connections == 21


def test_threads_share_one_object_safely(api, engine):
    errors: list[BaseException] = []

    def work():
        try:
            for _ in range(25):
                assert api.get("/json")["Id"] == "abc"
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert engine.connections == 1


# The object's own timeout where a test shows that a call's shorter one (or none at all) applies:
# a call that took half of it did not end by the bound it was given, however busy the machine.
LONG = 60.0


def test_an_engine_that_never_answers_is_unreachable_within_the_timeout(silent):
    api = EngineAPI(f"unix://{silent}", timeout=LONG)
    t0 = time.monotonic()
    with pytest.raises(Unreachable, match="timed out"):
        api.get("/containers/json", timeout=0.3)
    assert 0.25 < time.monotonic() - t0 < LONG / 2
    t0 = time.monotonic()
    assert api.ping(timeout=0.3) is False
    assert time.monotonic() - t0 < LONG / 2
    slow = EngineAPI(f"unix://{silent}", timeout=0.3)
    t0 = time.monotonic()
    with pytest.raises(Unreachable):
        slow.stream("/events")  # the timeout bounds the wait for the response headers
    assert time.monotonic() - t0 < LONG / 2  # the silent engine would keep it for ever


def test_a_missing_socket_is_unreachable_at_once(tmp_path):
    api = EngineAPI(f"unix://{tmp_path}/nothing.sock", timeout=LONG)
    t0 = time.monotonic()
    with pytest.raises(UNREACHABLE) as exc:
        api.get("/containers/json")
    assert time.monotonic() - t0 < LONG / 2  # not retried until the timeout
    assert isinstance(exc.value, OSError)
    assert "nothing.sock" in str(exc.value) and "/containers/json" in str(exc.value)
    assert api.ping() is False
    with pytest.raises(Unreachable):
        api.stream("/events")


def test_a_socket_nobody_listens_on_is_unreachable(tmp_path):
    path = str(tmp_path / "dead.sock")
    s = socket.socket(socket.AF_UNIX)
    s.bind(path)
    s.close()  # the file stays, nobody listens: connection refused
    with pytest.raises(Unreachable, match="refused"):
        EngineAPI(f"unix://{path}", timeout=5).get("/json")


def test_a_server_that_speaks_no_http_is_unreachable(tmp_path):
    path = str(tmp_path / "garbage.sock")
    srv = socket.socket(socket.AF_UNIX)
    srv.bind(path)
    srv.listen(1)

    def answer():
        c, _ = srv.accept()
        c.recv(4096)
        c.sendall(b"SSH-2.0-OpenSSH_9.2\r\n")
        c.close()

    threading.Thread(target=answer, daemon=True).start()
    with pytest.raises(Unreachable):
        EngineAPI(f"unix://{path}", timeout=2).get("/json")
    srv.close()


def test_ping(api, engine):
    assert api.ping(timeout=1) is True
    assert engine.connections == 1  # its own connection, closed after use
    api.get("/json")
    assert engine.connections == 2


def test_stream_decodes_documents_split_in_odd_places_and_ends(api):
    with api.stream("/events", {"since": 5, "filters": {"type": ["container"]}}) as s:
        assert list(s) == EVENTS
        assert list(s) == []


def test_stream_sends_params(api, engine):
    with api.stream("/events", {"since": 5, "filters": {"event": ["start"]}}) as s:
        list(s)
    assert engine.paths[-1] == "/events?since=5&filters=%7B%22event%22%3A+%5B%22start%22%5D%7D"


def test_stream_ends_when_the_engine_hangs_up_between_documents(api):
    s = api.stream("/events-hangup")
    assert list(s) == EVENTS


def test_stream_breaking_inside_a_document_is_unreachable(api):
    s = api.stream("/events-broken")
    with pytest.raises(UNREACHABLE):
        next(s)


def test_stream_error_status_raises_engine_error(api):
    with pytest.raises(NotFound):
        api.stream("/missing")


def test_close_from_another_thread_ends_a_blocked_stream_promptly(api, engine):
    s = api.stream("/events-hang")
    assert next(s) == EVENTS[0]
    got: list = []
    reader = threading.Thread(target=lambda: got.extend(s))  # blocks: no more events come
    reader.start()
    time.sleep(0.2)
    assert reader.is_alive()
    s.close()
    reader.join(30)  # the server holds the stream for 60 s: only the close can end it sooner
    assert not reader.is_alive(), "close() did not wake the blocked iteration"
    assert got == []
    assert list(s) == []


def test_close_before_iterating(api):
    s = api.stream("/events-hang")
    s.close()
    assert list(s) == []


def test_stream_is_independent_of_get(api, engine):
    s = api.stream("/events-hang")
    assert next(s) == EVENTS[0]
    assert api.get("/json")["Id"] == "abc"  # while the stream is open
    s.close()


# --- host parsing -------------------------------------------------------------------------


@pytest.fixture
def no_tls_env(monkeypatch):
    monkeypatch.delenv("DOCKER_TLS_VERIFY", raising=False)
    monkeypatch.delenv("DOCKER_CERT_PATH", raising=False)


@pytest.mark.parametrize(
    ("host", "scheme", "address", "prefix"),
    [
        ("unix:///var/run/docker.sock", "unix", "/var/run/docker.sock", ""),
        ("http+unix:///run/podman/podman.sock", "http+unix", "/run/podman/podman.sock", ""),
        ("http+unix://%2Frun%2Fpodman%2Fpodman.sock", "http+unix", "/run/podman/podman.sock", ""),
        ("tcp://10.1.2.3:2375", "http", ("10.1.2.3", 2375), ""),
        ("tcp://docker.example", "http", ("docker.example", 2375), ""),
        ("tcp://[::1]:4243", "http", ("::1", 4243), ""),
        ("http://127.0.0.1:8080/prefix/", "http", ("127.0.0.1", 8080), "/prefix"),
        ("http://localhost", "http", ("localhost", 80), ""),
        ("https://docker.example", "https", ("docker.example", 443), ""),
        ("https://docker.example:2376", "https", ("docker.example", 2376), ""),
    ],
)
def test_host_parsing(no_tls_env, host, scheme, address, prefix):
    api = EngineAPI(host, timeout=1)
    assert (api.scheme, api.address, api.prefix) == (scheme, address, prefix)


def test_tcp_with_docker_tls_verify_is_https(monkeypatch, tmp_path):
    monkeypatch.setenv("DOCKER_TLS_VERIFY", "1")
    monkeypatch.setenv("DOCKER_CERT_PATH", str(tmp_path))  # no files: the system CAs
    api = EngineAPI("tcp://docker.example", timeout=1)
    assert (api.scheme, api.address) == ("https", ("docker.example", 2376))
    monkeypatch.setenv("DOCKER_TLS_VERIFY", "")  # empty is unset, as for the docker CLI
    assert EngineAPI("tcp://docker.example:2375", timeout=1).scheme == "http"


@pytest.mark.parametrize(
    "host",
    [
        "ssh://user@host",
        "npipe:////./pipe/docker_engine",
        "/var/run/docker.sock",
        "",
        "unix://",
        "tcp://",
        "tcp://host:notaport",
    ],
)
def test_unsupported_hosts_are_one_clear_value_error(no_tls_env, host):
    with pytest.raises(ValueError) as exc:
        EngineAPI(host, timeout=1)
    assert "\n" not in str(exc.value)
    if host.startswith(("ssh", "npipe", "/")) or not host:
        assert "unix://" in str(exc.value) and "tcp://" in str(exc.value)


def test_no_proxy_is_ever_used(api, monkeypatch, engine):
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:9")
    monkeypatch.setenv("ALL_PROXY", "http://127.0.0.1:9")
    assert api.get("/json")["Id"] == "abc"


# --- TLS as the docker CLI does it (DOCKER_TLS_VERIFY + DOCKER_CERT_PATH) ------------------


def openssl(cwd: Path, *args: str) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_certs(d: Path) -> None:
    """A CA, a server certificate for localhost, and the client's cert.pem/key.pem."""
    new_key = ["-newkey", "rsa:2048", "-nodes"]
    ca = ["-days", "1", "-subj", "/CN=test-ca", "-keyout", "ca-key.pem", "-out", "ca.pem"]
    openssl(d, "req", "-x509", *new_key, *ca)
    for name, cn, ext in [
        ("server", "localhost", "subjectAltName=DNS:localhost"),
        ("cert", "client", "extendedKeyUsage=clientAuth"),
    ]:
        key = "key.pem" if name == "cert" else f"{name}-key.pem"
        openssl(d, "req", *new_key, "-subj", f"/CN={cn}", "-keyout", key, "-out", "req.csr")
        (d / "ext.cnf").write_text(ext + "\n")
        sign = ["-CA", "ca.pem", "-CAkey", "ca-key.pem", "-CAcreateserial", "-days", "1"]
        openssl(
            d, "x509", "-req", "-in", "req.csr", *sign, "-extfile", "ext.cnf", "-out", f"{name}.pem"
        )


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_tls_with_a_client_certificate(tmp_path, monkeypatch):
    d = tmp_path
    make_certs(d)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(d / "ca.pem"))
    ctx.load_cert_chain(d / "server.pem", d / "server-key.pem")
    ctx.verify_mode = ssl.CERT_REQUIRED
    srv = socket.create_server(("127.0.0.1", 0))
    port = srv.getsockname()[1]
    peers: list = []

    def serve():
        raw, _ = srv.accept()
        try:
            ctx.wrap_socket(raw, server_side=True)  # the client without our CA: refuses us
        except ssl.SSLError:
            pass
        raw, _ = srv.accept()
        with ctx.wrap_socket(raw, server_side=True) as c:
            peers.append((c.getpeercert() or {}).get("subject"))
            c.recv(4096)
            body = b'{"tls": 1}'
            head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
            c.sendall(head % len(body) + b"\r\n" + body)

    threading.Thread(target=serve, daemon=True).start()
    monkeypatch.setenv("DOCKER_TLS_VERIFY", "1")
    monkeypatch.setenv("DOCKER_CERT_PATH", str(d / "elsewhere"))
    with pytest.raises(Unreachable, match="CERTIFICATE_VERIFY_FAILED"):
        EngineAPI(f"tcp://127.0.0.1:{port}", timeout=5).get("/version")
    monkeypatch.setenv("DOCKER_CERT_PATH", str(d))
    api = EngineAPI(f"tcp://localhost:{port}", timeout=5)
    assert api.get("/version") == {"tls": 1}
    assert peers == [((("commonName", "client"),),)]
    srv.close()
