"""--web.config.file in the exporter-toolkit format (the one node_exporter reads):
TLS with optional client certificates, and basic auth with bcrypt hashes.

    tls_server_config:
      cert_file: server.crt            # relative paths are relative to this file
      key_file: server.key
      client_auth_type: RequireAndVerifyClientCert
      client_ca_file: ca.crt
      min_version: TLS12
    http_server_config:
      headers: {Strict-Transport-Security: max-age=31536000}
    basic_auth_users:
      prometheus: $2b$10$...           # htpasswd -nBC 10 "" | tr -d ':\\n'

Parsing is pure (``parse``); ``load`` reads the file, ``ssl_context`` and
``BasicAuth`` turn the result into what the HTTP server uses.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
import ssl
import threading
import time
from dataclasses import dataclass, field

import bcrypt
import yaml

from exporter import logs

log = logs.get_logger()

CLIENT_AUTH_TYPES = {
    "NoClientCert": ssl.CERT_NONE,
    "RequestClientCert": ssl.CERT_OPTIONAL,
    "RequireAnyClientCert": ssl.CERT_REQUIRED,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}
TLS_VERSIONS = {
    "TLS10": ssl.TLSVersion.TLSv1,
    "TLS11": ssl.TLSVersion.TLSv1_1,
    "TLS12": ssl.TLSVersion.TLSv1_2,
    "TLS13": ssl.TLSVersion.TLSv1_3,
}
TLS_KEYS = {
    "cert_file",
    "key_file",
    "client_auth_type",
    "client_ca_file",
    "min_version",
    "max_version",
    "client_allowed_sans",
    "prefer_server_cipher_suites",
}
HTTP_KEYS = {"headers", "http2"}
TOP_KEYS = {"tls_server_config", "http_server_config", "basic_auth_users"}
# Headers the server owns; exporter-toolkit refuses them too.
RESERVED_HEADERS = {
    "authorization",
    "content-type",
    "content-length",
    "content-encoding",
    "www-authenticate",
    "set-cookie",
    "host",
    "connection",
}
# A modular-crypt bcrypt hash: variant, cost 04-31, then 22 characters of salt and 31 of hash in
# bcrypt's base64, whose last characters leave their unused low bits zero (16 bytes of salt in
# 22 characters, 23 of hash in 31). A hash damaged anywhere else would refuse every password.
BCRYPT_HASH = re.compile(
    r"\$2[aby]\$(0[4-9]|[12][0-9]|3[01])\$[./A-Za-z0-9]{21}[.Oeu][./A-Za-z0-9]{30}[.CGKOSWaeimquy26]"
)
# bcrypt checks at once: a flood of wrong passwords must leave cores to the scrapes.
BCRYPT_CONCURRENCY = max(1, (os.cpu_count() or 2) // 2)
BCRYPT_WAIT = 1.0  # for a free check, before answering 429


class WebConfigError(ValueError):
    """A user mistake in the web config file; the message is one line."""


@dataclass(frozen=True)
class TLSConfig:
    cert_file: str
    key_file: str
    client_auth_type: str = "NoClientCert"
    client_ca_file: str | None = None
    min_version: str = "TLS12"
    max_version: str | None = None
    client_allowed_sans: tuple = ()


@dataclass(frozen=True)
class WebConfig:
    tls: TLSConfig | None = None
    users: dict = field(default_factory=dict)
    headers: dict = field(default_factory=dict)


def load(path: str) -> WebConfig:
    """Read, parse and check a web config file: every failure is a WebConfigError."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise WebConfigError(
            f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}"
        ) from exc
    config = parse(text, os.path.dirname(os.path.abspath(path)))
    if config.tls:
        ssl_context(config.tls)
    return config


def parse(text: str, base_dir: str = ".") -> WebConfig:
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise WebConfigError(
            f"not valid YAML{where}: {getattr(exc, 'problem', None) or exc}"
        ) from exc
    if doc is None:
        return WebConfig()
    section = _mapping(doc, "the file", TOP_KEYS)
    return WebConfig(
        tls=_tls(section.get("tls_server_config"), base_dir),
        users=_users(section.get("basic_auth_users")),
        headers=_headers(section.get("http_server_config")),
    )


def _mapping(value: object, where: str, allowed: set[str]) -> dict:
    if not isinstance(value, dict):
        raise WebConfigError(f"{where} must be a mapping")
    unknown = sorted(str(k) for k in value if k not in allowed)
    if unknown:
        raise WebConfigError(
            f"unknown field {unknown[0]!r} in {where} (known: {', '.join(sorted(allowed))})"
        )
    return value


def _tls(value: object, base_dir: str) -> TLSConfig | None:
    if value is None:
        return None
    v = _mapping(value, "tls_server_config", TLS_KEYS)
    for key in ("cert_file", "key_file"):
        if not isinstance(v.get(key), str) or not v[key]:
            raise WebConfigError(f"tls_server_config.{key} is required")
    auth = v.get("client_auth_type", "NoClientCert")
    if auth not in CLIENT_AUTH_TYPES:
        raise WebConfigError(
            f"invalid client_auth_type {auth!r} (one of {', '.join(CLIENT_AUTH_TYPES)})"
        )
    ca = v.get("client_ca_file")
    if auth in ("VerifyClientCertIfGiven", "RequireAndVerifyClientCert") and not ca:
        raise WebConfigError(f"client_auth_type {auth} needs client_ca_file")
    for key in ("min_version", "max_version"):
        if key in v and v[key] not in TLS_VERSIONS:
            raise WebConfigError(f"invalid {key} {v[key]!r} (one of {', '.join(TLS_VERSIONS)})")
    sans = v.get("client_allowed_sans") or []
    if not isinstance(sans, list) or not all(isinstance(s, str) for s in sans):
        raise WebConfigError("client_allowed_sans must be a list of names")

    def resolve(path: str) -> str:
        return os.path.join(base_dir, path)

    return TLSConfig(
        resolve(v["cert_file"]),
        resolve(v["key_file"]),
        auth,
        resolve(ca) if ca else None,
        v.get("min_version", "TLS12"),
        v.get("max_version"),
        tuple(sans),
    )


def _users(value: object) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise WebConfigError("basic_auth_users must be a mapping of user name to bcrypt hash")
    for user, hashed in value.items():
        if not isinstance(hashed, str) or not BCRYPT_HASH.fullmatch(hashed):
            raise WebConfigError(
                f'basic_auth_users.{user}: not a bcrypt hash (make one with htpasswd -nBC 10 "")'
            )
    return {str(u): h for u, h in value.items()}


def _headers(value: object) -> dict[str, str]:
    if value is None:
        return {}
    v = _mapping(value, "http_server_config", HTTP_KEYS)
    headers = v.get("headers") or {}
    if not isinstance(headers, dict):
        raise WebConfigError("http_server_config.headers must be a mapping")
    for name in headers:
        if str(name).lower() in RESERVED_HEADERS:
            raise WebConfigError(f"http_server_config.headers: {name} cannot be set")
    return {str(k): str(val) for k, val in headers.items()}


def ssl_context(tls: TLSConfig) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = TLS_VERSIONS[tls.min_version]
    if tls.max_version:
        ctx.maximum_version = TLS_VERSIONS[tls.max_version]
    try:
        ctx.load_cert_chain(tls.cert_file, tls.key_file)
    except (OSError, ssl.SSLError) as exc:
        raise WebConfigError(
            f"cannot load certificate {tls.cert_file} / key {tls.key_file}: {_reason(exc)}"
        ) from exc
    ctx.verify_mode = CLIENT_AUTH_TYPES[tls.client_auth_type]
    if tls.client_ca_file:
        try:
            ctx.load_verify_locations(tls.client_ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise WebConfigError(
                f"cannot load client_ca_file {tls.client_ca_file}: {_reason(exc)}"
            ) from exc
    elif ctx.verify_mode != ssl.CERT_NONE:
        # Request or require a certificate without verifying it against a CA: Python
        # cannot skip verification server-side, so trust what the client presents.
        raise WebConfigError(f"client_auth_type {tls.client_auth_type} needs client_ca_file here")
    return ctx


class ReloadingContext:
    """The TLS context, rebuilt when the certificate, key or CA file changes (cert-manager and
    certbot rotate them in place). Checked at most once per `interval` on a new connection; a
    broken new set keeps the previous context serving and is logged once."""

    def __init__(self, tls: TLSConfig, interval: float = 1.0) -> None:
        self.tls = tls
        self.interval = interval
        self._lock = threading.Lock()
        self._stamp = self._stamps()
        self._context = ssl_context(tls)
        self._checked = time.monotonic()

    def get(self) -> ssl.SSLContext:
        now = time.monotonic()
        if now - self._checked >= self.interval:
            with self._lock:
                self._checked = now
                stamp = self._stamps()
                if stamp != self._stamp:
                    self._stamp = stamp
                    self._reload()
        return self._context

    def _reload(self) -> None:
        try:
            self._context = ssl_context(self.tls)
        except WebConfigError as exc:
            log.error("tls_reload_failed", error=str(exc))
            return
        log.info("tls_reloaded", cert_file=self.tls.cert_file)

    def _stamps(self) -> tuple:
        out = []
        for path in (self.tls.cert_file, self.tls.key_file, self.tls.client_ca_file):
            try:
                st = os.stat(path) if path else None
                out.append((st.st_mtime_ns, st.st_size, st.st_ino) if st else None)
            except OSError:
                out.append(None)
        return tuple(out)


def _reason(exc: Exception) -> str:
    return getattr(exc, "strerror", None) or getattr(exc, "reason", None) or str(exc)


def peer_allowed(tls: TLSConfig, peer_cert: dict | None) -> bool:
    """client_allowed_sans: the client certificate must carry one of the names (DNS, IP, email, URI)."""
    if not tls.client_allowed_sans:
        return True
    names = {value for _, value in (peer_cert or {}).get("subjectAltName", ())}
    return bool(names & set(tls.client_allowed_sans))


class AuthBusy(Exception):
    """No bcrypt check was free within the wait."""


class BasicAuth:
    """Checks `Authorization: Basic` against bcrypt hashes. bcrypt costs tens of
    milliseconds on purpose, so a successful (user, password) is remembered by a
    keyed digest: Prometheus sends the same credentials on every scrape. Other
    attempts take turns for `concurrency` bcrypt checks, waiting at most `wait`
    seconds (then AuthBusy)."""

    def __init__(
        self, users: dict, concurrency: int = BCRYPT_CONCURRENCY, wait: float = BCRYPT_WAIT
    ) -> None:
        self.users = {u: h.encode() for u, h in users.items()}
        self.wait = wait
        self._key = os.urandom(32)
        self._ok: set = set()
        self._lock = threading.Lock()
        self._checks = threading.BoundedSemaphore(concurrency)
        self._dummy = next(iter(self.users.values()), b"")

    def __bool__(self) -> bool:
        return bool(self.users)

    def check(self, header: str | None) -> str | None:
        """The authenticated user name, or None. Raises AuthBusy."""
        creds = _decode(header)
        if creds is None:
            return None
        user, password = creds
        digest = hmac.new(self._key, f"{user}\0{password}".encode(), hashlib.sha256).digest()
        with self._lock:
            if digest in self._ok:
                return user
        hashed = self.users.get(user)
        # Unknown users cost a bcrypt check too, so timing does not tell which names exist.
        if not self._bcrypt(password.encode(), hashed or self._dummy) or hashed is None:
            return None
        with self._lock:
            self._ok.add(digest)
        return user

    def _bcrypt(self, password: bytes, hashed: bytes) -> bool:
        if not self._checks.acquire(timeout=self.wait):
            raise AuthBusy
        try:
            return bcrypt.checkpw(password, hashed)
        except Exception:  # a password over 72 bytes, a damaged hash: a failed check
            return False
        finally:
            self._checks.release()


def _decode(header: str | None) -> tuple | None:
    if not header or not header.startswith("Basic "):
        return None
    try:
        text = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, sep, password = text.partition(":")
    return (user, password) if sep else None
