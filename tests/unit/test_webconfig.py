"""The web config parser and basic auth, without a server."""

from __future__ import annotations

import base64
import threading
import time

import bcrypt
import pytest

from exporter.web import config as webconfig
from exporter.web.config import AuthBusy, BasicAuth, TLSConfig, WebConfigError, parse, peer_allowed


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_empty_file_is_plain_http():
    config = parse("")
    assert config.tls is None and config.users == {} and config.headers == {}


def test_full_config_and_relative_paths():
    hashed = bcrypt.hashpw(b"pw", bcrypt.gensalt(4)).decode()
    config = parse(
        f"""
tls_server_config:
  cert_file: tls/server.crt
  key_file: /abs/server.key
  client_auth_type: RequireAndVerifyClientCert
  client_ca_file: ca.crt
  min_version: TLS13
  client_allowed_sans: [prometheus.example]
http_server_config:
  http2: true
  headers: {{X-Frame-Options: deny}}
basic_auth_users:
  prometheus: '{hashed}'
""",
        "/etc/dx",
    )
    assert config.tls == TLSConfig(
        "/etc/dx/tls/server.crt",
        "/abs/server.key",
        "RequireAndVerifyClientCert",
        "/etc/dx/ca.crt",
        "TLS13",
        None,
        ("prometheus.example",),
    )
    assert config.users == {"prometheus": hashed}
    assert config.headers == {"X-Frame-Options": "deny"}


@pytest.mark.parametrize(
    "text, message",
    [
        ("a: [", "not valid YAML at line 1"),
        ("tls_server_config: {cert_file: a}", "key_file is required"),
        (
            "tls_server_config: {cert_file: a, key_file: b, cipher_suites: [X]}",
            "unknown field 'cipher_suites'",
        ),
        (
            "tls_server_config: {cert_file: a, key_file: b, client_auth_type: RequireAndVerifyClientCert}",
            "needs client_ca_file",
        ),
        (
            "tls_server_config: {cert_file: a, key_file: b, min_version: SSL3}",
            "invalid min_version",
        ),
        ("basic_auth_users: {u: secret}", "not a bcrypt hash"),
        ("basic_auth_users: [u]", "must be a mapping"),
        ("http_server_config: {headers: {Content-Type: x}}", "cannot be set"),
        ("tls_config: {}", "unknown field 'tls_config'"),
    ],
)
def test_mistakes_are_one_line_errors(text, message):
    with pytest.raises(WebConfigError) as err:
        parse(text)
    assert message in str(err.value) and "\n" not in str(err.value)
    assert "secret" not in str(err.value)


GOOD_HASH = "$2b$04$BLEnN6Ab.Ri8wBWuo0Haa.5OdDzaAyYUNKx6LFirof5pdxNz7RFPm"  # of "x"


@pytest.mark.parametrize(
    "damaged",
    [
        GOOD_HASH[:-1],  # cut
        GOOD_HASH[:-5] + "!!!!!",  # outside bcrypt's alphabet: every check would say no
        GOOD_HASH.replace("$04$", "$99$"),  # no such cost
        GOOD_HASH[:28] + "b" + GOOD_HASH[29:],  # salt's last character with its unused bits set
        GOOD_HASH[:-1] + "n",  # hash's last character with its unused bits set
        "$2x$" + GOOD_HASH[4:],  # no such variant
    ],
)
def test_a_damaged_bcrypt_hash_is_refused_at_load(damaged):
    with pytest.raises(WebConfigError) as err:
        parse(f"basic_auth_users: {{u: '{damaged}'}}")
    assert "basic_auth_users.u: not a bcrypt hash" in str(err.value)


def test_every_variant_of_a_good_hash_loads_and_checks():
    for variant in ("$2a$", "$2b$", "$2y$"):
        hashed = variant + GOOD_HASH[4:]
        assert parse(f"basic_auth_users: {{u: '{hashed}'}}").users == {"u": hashed}
        assert BasicAuth({"u": hashed}).check(basic("u", "x")) == "u"


def test_basic_auth():
    auth = BasicAuth({"prometheus": bcrypt.hashpw(b"pw", bcrypt.gensalt(4)).decode()})
    assert auth.check(basic("prometheus", "pw")) == "prometheus"
    assert auth.check(basic("prometheus", "pw")) == "prometheus"  # remembered
    assert auth.check(basic("prometheus", "pW")) is None
    assert auth.check(basic("nobody", "pw")) is None
    for header in (
        None,
        "",
        "Bearer x",
        "Basic !!!",
        "Basic " + base64.b64encode(b"nocolon").decode(),
    ):
        assert auth.check(header) is None
    assert not BasicAuth({})


def test_bcrypt_errors_are_failed_checks():
    """bcrypt raises for a password over 72 bytes and for a damaged hash."""
    auth = BasicAuth(
        {
            "prometheus": bcrypt.hashpw(b"pw", bcrypt.gensalt(4)).decode(),
            "broken": "$2b$10$" + "!" * 53,
        }
    )
    assert auth.check(basic("prometheus", "p" * 73)) is None
    assert auth.check(basic("prometheus", "pw" + "\0" * 80)) is None
    assert auth.check(basic("broken", "pw")) is None
    assert auth.check(basic("prometheus", "pw")) == "prometheus"


def test_bcrypt_checks_take_turns_and_remembered_users_do_not_wait(monkeypatch):
    """The one bcrypt slot is held until the test lets it go: a second attempt waits its 0.2 s and
    is refused while the first still runs, and a remembered user passes meanwhile."""
    auth = BasicAuth({"prometheus": bcrypt.hashpw(b"pw", bcrypt.gensalt(4)).decode()}, 1, 0.2)
    assert auth.check(basic("prometheus", "pw")) == "prometheus"
    started, release = threading.Event(), threading.Event()
    real_checkpw = bcrypt.checkpw

    def held_checkpw(password: bytes, hashed: bytes) -> bool:
        started.set()
        release.wait(30)
        return real_checkpw(password, hashed)

    monkeypatch.setattr(webconfig.bcrypt, "checkpw", held_checkpw)
    busy = threading.Thread(target=auth.check, args=(basic("prometheus", "wrong"),))
    busy.start()
    try:
        assert started.wait(30)
        t0 = time.monotonic()
        with pytest.raises(AuthBusy):
            auth.check(basic("prometheus", "wrong too"))
        assert time.monotonic() - t0 > 0.15  # it waited its turn (0.2 s) first
        assert auth.check(basic("prometheus", "pw")) == "prometheus"  # no slot needed
        assert busy.is_alive() and not release.is_set()  # all of it while the slot was held
    finally:
        release.set()
        busy.join(30)
    assert not busy.is_alive()


def test_client_allowed_sans():
    tls = TLSConfig("c", "k", client_allowed_sans=("prometheus.example",))
    assert peer_allowed(tls, {"subjectAltName": (("DNS", "prometheus.example"),)})
    assert not peer_allowed(tls, {"subjectAltName": (("DNS", "other.example"),)})
    assert not peer_allowed(tls, None)
    assert peer_allowed(TLSConfig("c", "k"), None)
