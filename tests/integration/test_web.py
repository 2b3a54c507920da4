"""The HTTP endpoint with real clients: TLS (server and client certificates made
with openssl), basic auth with bcrypt, malformed web configs, and a server that
stays responsive under slow, concurrent and absurd requests."""

from __future__ import annotations

import base64
import signal
import socket
import ssl
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import bcrypt
import pytest
import requests
import yaml

from exporter.web.server import HEAD_TIMEOUT
from helpers import EXPORTER, ROOT, ExporterProcess, free_port, sh, wait_for

PASSWORD = "correct-horse-battery-staple"


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_ca(d: Path, name: str) -> None:
    openssl(
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-days",
        "2",
        "-keyout",
        f"{name}.key",
        "-out",
        f"{name}.crt",
        "-subj",
        f"/CN={name}",
        cwd=d,
    )


def make_cert(d: Path, name: str, ca: str, san: str) -> None:
    openssl(
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        f"{name}.key",
        "-out",
        f"{name}.csr",
        "-subj",
        f"/CN={name}",
        cwd=d,
    )
    (d / f"{name}.ext").write_text(f"subjectAltName={san}\n")
    openssl(
        "x509",
        "-req",
        "-in",
        f"{name}.csr",
        "-CA",
        f"{ca}.crt",
        "-CAkey",
        f"{ca}.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-out",
        f"{name}.crt",
        "-extfile",
        f"{name}.ext",
        cwd=d,
    )


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ca signs server and client; rogue-ca signs rogue-client."""
    d = tmp_path_factory.mktemp("pki")
    make_ca(d, "ca")
    make_ca(d, "rogue-ca")
    make_cert(d, "server", "ca", "DNS:localhost,IP:127.0.0.1")
    make_cert(d, "client", "ca", "DNS:prometheus.example")
    make_cert(d, "rogue-client", "rogue-ca", "DNS:prometheus.example")
    make_cert(d, "renewed-server", "rogue-ca", "DNS:localhost,IP:127.0.0.1")
    return d


def start(config: Path, *args: str) -> ExporterProcess:
    """The real daemon with --web.config.file, ready once it logged where it listens."""
    p = ExporterProcess(f"--web.config.file={config}", "--log.level=debug", *args)
    wait_for(
        lambda: "event=listening" in p.log() or p.proc.poll() is not None,
        20,
        what="exporter to listen",
    )
    assert p.proc.poll() is None, p.log()
    return p


@pytest.fixture(scope="module")
def secured(pki, docker_client):
    """TLS with optional (verified) client certificates plus basic auth."""
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(10)).decode()
    config = pki / "web.yml"
    config.write_text(f"""
tls_server_config:
  cert_file: server.crt
  key_file: server.key
  client_auth_type: VerifyClientCertIfGiven
  client_ca_file: ca.crt
http_server_config:
  headers:
    X-Content-Type-Options: nosniff
basic_auth_users:
  prometheus: '{hashed}'
""")
    p = start(config)
    p.url = f"https://127.0.0.1:{p.port}"
    yield p
    p.stop()


@pytest.fixture(scope="module")
def mtls(pki, docker_client):
    config = pki / "mtls.yml"
    config.write_text(
        "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n"
        "  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.crt\n"
    )
    p = start(config)
    p.url = f"https://127.0.0.1:{p.port}"
    yield p
    p.stop()


@pytest.fixture(scope="module")
def plain(docker_client):
    p = ExporterProcess().wait_ready()
    yield p
    p.stop()


def get(
    p: ExporterProcess,
    pki: Path,
    path: str = "/metrics",
    auth: tuple[str, str] | None = ("prometheus", PASSWORD),
    **kw: Any,
) -> requests.Response:
    return requests.get(p.url + path, verify=str(pki / "ca.crt"), auth=auth, timeout=10, **kw)


# -- TLS and basic auth ----------------------------------------------------


def test_tls_and_basic_auth_with_a_trusted_server_certificate(secured, pki):
    r = get(secured, pki)
    assert r.status_code == 200
    assert "dockernet_scrape_collector_success" in r.text
    assert r.headers["X-Content-Type-Options"] == "nosniff"
    curl = sh(
        "curl",
        "-sS",
        "--cacert",
        str(pki / "ca.crt"),
        "-u",
        f"prometheus:{PASSWORD}",
        secured.url + "/healthz",
    )
    assert curl == "ok\n"


def test_server_certificate_from_another_ca_is_rejected_by_the_client(secured, pki):
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(secured.url + "/metrics", verify=str(pki / "rogue-ca.crt"), timeout=10)


def test_plain_http_on_the_tls_port_gets_no_metrics(secured):
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(f"http://127.0.0.1:{secured.port}/metrics", timeout=10)


def test_wrong_or_missing_password_gets_401_and_never_reaches_the_log(secured, pki):
    wrong = get(secured, pki, auth=("prometheus", "not-" + PASSWORD))
    unknown = get(secured, pki, auth=("nobody", PASSWORD))
    missing = get(secured, pki, auth=None)
    for r in (wrong, unknown, missing):
        assert r.status_code == 401
        assert r.headers["WWW-Authenticate"].startswith("Basic")
        assert "dockernet_" not in r.text
    assert get(secured, pki).status_code == 200
    log = secured.log()
    assert "http_unauthorized" in log
    for secret in (PASSWORD, base64.b64encode(f"prometheus:{PASSWORD}".encode()).decode()):
        assert secret not in log


def test_verified_client_certificate_if_given(secured, pki):
    ok = get(secured, pki, cert=(str(pki / "client.crt"), str(pki / "client.key")))
    assert ok.status_code == 200
    with pytest.raises(requests.exceptions.SSLError):
        get(secured, pki, cert=(str(pki / "rogue-client.crt"), str(pki / "rogue-client.key")))


def test_required_client_certificate(mtls, pki):
    assert (
        get(
            mtls, pki, auth=None, cert=(str(pki / "client.crt"), str(pki / "client.key"))
        ).status_code
        == 200
    )
    for cert in (None, (str(pki / "rogue-client.crt"), str(pki / "rogue-client.key"))):
        with pytest.raises((requests.exceptions.SSLError, requests.exceptions.ConnectionError)):
            get(mtls, pki, auth=None, cert=cert)
    openssl_out = subprocess.run(
        [
            "openssl",
            "s_client",
            "-connect",
            f"127.0.0.1:{mtls.port}",
            "-CAfile",
            str(pki / "ca.crt"),
            "-cert",
            str(pki / "client.crt"),
            "-key",
            str(pki / "client.key"),
            "-quiet",
        ],
        input="GET /healthz HTTP/1.0\r\n\r\n",
        capture_output=True,
        text=True,
        timeout=10,
    ).stdout
    assert openssl_out.startswith("HTTP/1.1 200") and openssl_out.endswith("ok\n")


def test_rotated_certificate_is_served_without_restart(pki, tmp_path, docker_client):
    """cert-manager and certbot replace the files in place; a broken replacement keeps the old one."""
    for name in ("server.crt", "server.key"):
        (tmp_path / name).write_bytes((pki / name).read_bytes())
    config = tmp_path / "web.yml"
    config.write_text("tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n")
    p = start(config)
    url = f"https://127.0.0.1:{p.port}/healthz"
    try:
        assert requests.get(url, verify=str(pki / "ca.crt"), timeout=5).status_code == 200
        for name in ("key", "crt"):
            (tmp_path / f"server.{name}.new").write_bytes(
                (pki / f"renewed-server.{name}").read_bytes()
            )
            (tmp_path / f"server.{name}.new").rename(tmp_path / f"server.{name}")

        def renewed():
            try:
                return (
                    requests.get(url, verify=str(pki / "rogue-ca.crt"), timeout=5).status_code
                    == 200
                )
            except requests.exceptions.SSLError:
                return False

        wait_for(renewed, 10, interval=0.3, what="the renewed certificate")
        (tmp_path / "server.crt").write_text("not a certificate\n")

        def still_serving_and_logged():
            assert requests.get(url, verify=str(pki / "rogue-ca.crt"), timeout=5).status_code == 200
            return "tls_reload_failed" in p.log()

        wait_for(still_serving_and_logged, 10, interval=0.3, what="the failed reload in the log")
        assert p.proc.poll() is None and "Traceback" not in p.log()
    finally:
        p.stop()


def test_sighup_reloads_the_tls_settings(pki, tmp_path, docker_client):
    """client_auth_type and the CA come from the file too: a reload can start requiring client
    certificates."""
    config = tmp_path / "web.yml"
    tls = f"tls_server_config:\n  cert_file: {pki}/server.crt\n  key_file: {pki}/server.key\n"
    config.write_text(tls)
    p = start(config)
    p.url = f"https://127.0.0.1:{p.port}"
    client_cert = (str(pki / "client.crt"), str(pki / "client.key"))
    try:
        assert get(p, pki, "/healthz", auth=None).status_code == 200
        config.write_text(
            tls
            + f"  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: {pki}/ca.crt\n"
        )
        p.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: "event=web_config_reloaded" in p.log(), what="the reload")
        with pytest.raises((requests.exceptions.SSLError, requests.exceptions.ConnectionError)):
            get(p, pki, "/healthz", auth=None)
        assert get(p, pki, "/healthz", auth=None, cert=client_cert).status_code == 200
    finally:
        p.stop()


BAD_CONFIGS = {
    "yaml": ("tls_server_config: [unclosed\n", "not valid YAML"),
    "unknown-field": (
        "tls_server_config:\n  cert_file: a\n  key_file: b\n  certfile: c\n",
        "unknown field 'certfile'",
    ),
    "missing-key": ("tls_server_config:\n  cert_file: server.crt\n", "key_file is required"),
    "missing-file": (
        "tls_server_config:\n  cert_file: nope.crt\n  key_file: nope.key\n",
        "cannot load certificate",
    ),
    "not-a-cert": (
        "tls_server_config:\n  cert_file: web.yml\n  key_file: web.yml\n",
        "cannot load certificate",
    ),
    "auth-type": (
        "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n"
        "  client_auth_type: Sometimes\n",
        "invalid client_auth_type",
    ),
    "plain-password": ("basic_auth_users:\n  prometheus: hunter2hunter2\n", "not a bcrypt hash"),
    # Of the right length and prefix, but bcrypt would refuse every password with it.
    "damaged-hash": (
        "basic_auth_users:\n  broken: '$2b$10$" + "!" * 53 + "'\n",
        "not a bcrypt hash",
    ),
    "top-level-list": ("- a\n- b\n", "must be a mapping"),
}


@pytest.mark.parametrize("case", sorted(BAD_CONFIGS))
def test_malformed_web_config_fails_at_start_with_one_line(case, pki, tmp_path):
    text, expected = BAD_CONFIGS[case]
    config = pki / f"bad-{case}.yml"
    config.write_text(text)
    r = subprocess.run(
        EXPORTER + [f"--web.config.file={config}", "--web.listen-address=127.0.0.1:1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert r.returncode == 1, r.stderr
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr, r.stderr
    assert (
        r.stderr.startswith("dockernet-exporter: error: --web.config.file=")
        and expected in r.stderr
    )
    assert "hunter2" not in r.stderr


def test_missing_web_config_file(tmp_path):
    r = subprocess.run(
        EXPORTER + [f"--web.config.file={tmp_path}/absent.yml"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and "No such file" in r.stderr, r.stderr


# -- robustness ------------------------------------------------------------


def timed_get(url: str, **kw: Any) -> float:
    t0 = time.monotonic()
    r = requests.get(url, timeout=30, **kw)
    assert r.status_code == 200
    return time.monotonic() - t0


# A scrape that waited for stalled clients would end when they are cut off, HEAD_TIMEOUT after they
# connected; one answered in half of that did not wait for them, however busy the machine.
NOT_BLOCKED = HEAD_TIMEOUT / 2


def test_slow_and_stalled_clients_block_no_scrape(plain, secured, pki):
    stalled = []
    for _ in range(20):
        s = socket.create_connection(("127.0.0.1", plain.port))
        s.sendall(b"GET /metr")  # never finishes the request line
        stalled.append(s)
        t = socket.create_connection(("127.0.0.1", secured.port))  # never starts the TLS handshake
        stalled.append(t)
    try:
        assert timed_get(plain.url + "/metrics") < NOT_BLOCKED
        assert (
            timed_get(
                secured.url + "/metrics", verify=str(pki / "ca.crt"), auth=("prometheus", PASSWORD)
            )
            < NOT_BLOCKED
        )
        # A client dribbling its headers one byte at a time while others scrape.
        slow = socket.create_connection(("127.0.0.1", plain.port))
        stalled.append(slow)
        for byte in b"GET /healthz HTTP/1.0\r\nX-Slow: 1\r\n":
            slow.sendall(bytes([byte]))
            time.sleep(0.005)
        assert timed_get(plain.url + "/metrics") < NOT_BLOCKED
        slow.sendall(b"\r\n")
        assert slow.recv(100).startswith(b"HTTP/1.1 200")
    finally:
        for s in stalled:
            s.close()


def client_hello() -> bytes:
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    outgoing = ssl.MemoryBIO()
    tls = ctx.wrap_bio(ssl.MemoryBIO(), outgoing, server_hostname="localhost")
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


def test_a_tls_handshake_sent_slowly_or_never_is_cut_off(secured):
    """The handshake has HEAD_TIMEOUT in all, not per read: a ClientHello sent a byte at a time
    does not hold the connection for ever."""
    hello = client_hello()
    silent = socket.create_connection(("127.0.0.1", secured.port))
    slow = socket.create_connection(("127.0.0.1", secured.port))
    t0 = time.monotonic()
    try:
        for i in range(len(hello)):
            try:
                slow.sendall(hello[i : i + 1])
            except OSError:
                break
            # Sent a byte every 0.25 s, the hello would hold the connection for minutes.
            if time.monotonic() - t0 > 2 * HEAD_TIMEOUT:
                pytest.fail("a handshake sent a byte at a time was held past the deadline")
            time.sleep(0.25)
        cut_off = time.monotonic() - t0
        assert HEAD_TIMEOUT - 1 < cut_off < 2 * HEAD_TIMEOUT, cut_off
        silent.settimeout(HEAD_TIMEOUT)
        assert silent.recv(1) == b""
    finally:
        silent.close()
        slow.close()


def test_100_concurrent_scrapes_are_all_answered(plain):
    barrier = threading.Barrier(100)

    def scrape(_):
        barrier.wait(10)
        r = requests.get(plain.url + "/metrics", timeout=90)
        return r.status_code, "dockernet_scrape_collector_success" in r.text

    with ThreadPoolExecutor(100) as pool:
        results = list(pool.map(scrape, range(100)))
    assert results == [(200, True)] * 100


def test_unknown_path_is_404(plain, secured, pki):
    assert requests.get(plain.url + "/nope", timeout=5).status_code == 404
    assert get(secured, pki, "/metrics/../etc/passwd").status_code == 404


def rss_kib(p: ExporterProcess) -> int:
    status = Path(f"/proc/{p.proc.pid}/status").read_text()
    return int(next(l for l in status.splitlines() if l.startswith("VmRSS:")).split()[1])


def raw(port: int, data: bytes, chunk: int = 1 << 20) -> bytes:
    """Send data (as much as the server takes) and return what it answered."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        try:
            for i in range(0, len(data), chunk):
                s.sendall(data[i : i + chunk])
        except (BrokenPipeError, ConnectionResetError):
            pass
        try:
            return s.recv(200)
        except ConnectionResetError:
            return b""


def test_absurd_headers_and_bodies_are_refused_without_harm(plain):
    before = rss_kib(plain)
    huge_line = raw(plain.port, b"GET /" + b"a" * 200_000 + b" HTTP/1.0\r\n\r\n")
    huge_header = raw(
        plain.port, b"GET /metrics HTTP/1.0\r\nX-Big: " + b"b" * 200_000 + b"\r\n\r\n"
    )
    many_headers = raw(plain.port, b"GET /metrics HTTP/1.0\r\n" + b"X-H: 1\r\n" * 1000 + b"\r\n")
    body = b"GET /metrics HTTP/1.0\r\nContent-Length: 67108864\r\n\r\n" + b"c" * (64 << 20)
    huge_body = raw(plain.port, body)
    post = raw(
        plain.port, b"POST /metrics HTTP/1.0\r\nContent-Length: 67108864\r\n\r\n" + b"d" * (8 << 20)
    )
    assert huge_line.startswith(b"HTTP/1.1 414")
    assert huge_header.startswith(b"HTTP/1.1 431")
    assert many_headers.startswith(b"HTTP/1.1 431")
    assert huge_body.startswith(b"HTTP/1.1 413") or huge_body == b""
    assert post.startswith(b"HTTP/1.1 501") or post == b""
    assert timed_get(plain.url + "/metrics") < 2
    assert rss_kib(plain) - before < 32 * 1024, "the server buffered a body"
    assert "Traceback" not in plain.log()


def test_prometheus_scrapes_with_the_documented_tls_and_basic_auth(secured, pki, tmp_path):
    """The scrape config of docs/security.md, with a real Prometheus: the right credentials give
    up=1, a wrong password up=0."""
    (tmp_path / "right").write_text(PASSWORD)
    (tmp_path / "wrong").write_text("not-" + PASSWORD)

    def job(name: str, password_file: str) -> dict:
        return {
            "job_name": name,
            "scheme": "https",
            "scrape_interval": "1s",
            "tls_config": {
                "ca_file": str(pki / "ca.crt"),
                "cert_file": str(pki / "client.crt"),
                "key_file": str(pki / "client.key"),
            },
            "basic_auth": {
                "username": "prometheus",
                "password_file": str(tmp_path / password_file),
            },
            "static_configs": [{"targets": [f"127.0.0.1:{secured.port}"]}],
        }

    config = tmp_path / "prometheus.yml"
    config.write_text(
        yaml.safe_dump({"scrape_configs": [job("dockernet", "right"), job("wrong", "wrong")]})
    )
    port = free_port()
    prom = subprocess.Popen(
        [
            "prometheus",
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path}/data",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:

        def up() -> dict:
            try:
                r = requests.get(
                    f"http://127.0.0.1:{port}/api/v1/query", params={"query": "up"}, timeout=2
                )
            except requests.RequestException:
                return {}
            result = {s["metric"]["job"]: s["value"][1] for s in r.json()["data"]["result"]}
            return result if len(result) == 2 else {}

        assert wait_for(up, 30, interval=0.5, what="both jobs scraped") == {
            "dockernet": "1",
            "wrong": "0",
        }
    finally:
        prom.terminate()
        prom.wait(10)
    assert "not-" + PASSWORD not in secured.log() and PASSWORD not in secured.log()


def test_stalled_clients_do_not_delay_stopping(docker_client):
    p = ExporterProcess().wait_ready()
    stalled = [socket.create_connection(("127.0.0.1", p.port)) for _ in range(5)]
    for s in stalled:
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
    try:
        time.sleep(0.2)
        t0 = time.monotonic()
        assert p.stop(timeout=10) == 0
        assert time.monotonic() - t0 < 3
    finally:
        for s in stalled:
            s.close()
