"""A small Docker Engine API client on the standard library (no docker-py, no requests).

It speaks to dockerd and to Podman's Docker-compatible and libpod APIs. Paths are sent as
given: an unversioned path (``/containers/json``) gets the engine's own current API version
(dockerd 20.10 answers it as 1.41); a versioned one (``/v4.0.0/libpod/networks/json``) is
passed through. Proxy settings are never read.

``get`` reuses one keep-alive connection, guarded by a lock (calls from several threads
queue); ``ping`` and ``stream`` open their own connections, so a hung ``get`` or a blocked
event stream never holds up a health check.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import threading
from typing import Any
from urllib.parse import unquote, urlencode, urlsplit

SUPPORTED = "unix:///path, http+unix://, tcp://host:port, http://, https://"


class Unreachable(OSError):
    """The engine is not reachable right now: refused, missing socket, timeout, broken HTTP."""


class EngineError(Exception):
    """The engine answered a non-2xx status; ``message`` is its own error text."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status, self.message = status, message


class NotFound(EngineError):
    """404: no such container, network, ..."""


# What callers catch to mean "the engine is not reachable right now".
UNREACHABLE: tuple[type[BaseException], ...] = (Unreachable,)
# A reused keep-alive connection that the server closed since the last call: retry once.
_STALE = (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError)
_HEADERS = {"Accept": "application/json"}


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float | None) -> None:
        super().__init__("localhost", timeout=timeout)
        self.socket_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(self.timeout)
            sock.connect(self.socket_path)
        except BaseException:
            sock.close()
            raise
        self.sock = sock


class EngineAPI:
    """One engine at ``host`` (what DOCKER_HOST holds); ``timeout`` in seconds per call.
    Construction does no I/O; a bad host (e.g. ``ssh://``) raises ValueError."""

    def __init__(self, host: str, timeout: float = 10.0) -> None:
        self.host, self.timeout = host, timeout
        url = urlsplit(host)
        self.scheme, self.prefix = url.scheme, ""
        self._ssl: Any = None  # an ssl.SSLContext for https
        if url.scheme in ("unix", "http+unix"):
            self.address: str | tuple[str, int] = unquote(url.netloc + url.path)
            if not self.address:
                raise ValueError(f"no socket path in {host!r}")
        elif url.scheme in ("tcp", "http", "https"):
            verify = os.environ.get("DOCKER_TLS_VERIFY")  # set and not empty, as the docker CLI
            tls = url.scheme == "https" or (url.scheme == "tcp" and bool(verify))
            self.scheme = "https" if tls else "http"
            default = (2376 if tls else 2375) if url.scheme == "tcp" else (443 if tls else 80)
            try:
                port = url.port or default
            except ValueError as exc:
                raise ValueError(f"bad port in {host!r}") from exc
            if not url.hostname:
                raise ValueError(f"no host name in {host!r}")
            self.address, self.prefix = (url.hostname, port), url.path.rstrip("/")
            if tls:
                self._ssl = _tls_context()
        else:
            raise ValueError(f"unsupported engine address {host!r}: use {SUPPORTED}")
        self._lock = threading.Lock()
        self._conn: http.client.HTTPConnection | None = None

    def _connection(self, timeout: float | None) -> http.client.HTTPConnection:
        if isinstance(self.address, str):
            return _UnixConnection(self.address, timeout)
        host, port = self.address
        if self._ssl is not None:
            return http.client.HTTPSConnection(host, port, timeout=timeout, context=self._ssl)
        return http.client.HTTPConnection(host, port, timeout=timeout)

    def _url(self, path: str, params: dict[str, Any] | None) -> str:
        query = {k: _param(v) for k, v in (params or {}).items() if v is not None}
        return self.prefix + path + ("?" + urlencode(query) if query else "")

    def get(
        self, path: str, params: dict[str, Any] | None = None, timeout: float | None = None
    ) -> Any:
        """GET path: the decoded JSON (text if the engine sent no JSON); raise on non-2xx."""
        t = self.timeout if timeout is None else timeout
        url = self._url(path, params)
        with self._lock:
            for attempt in (1, 2):
                if self._conn is None:
                    self._conn = self._connection(t)
                conn, reused = self._conn, self._conn.sock is not None
                conn.timeout = t
                if conn.sock is not None:
                    conn.sock.settimeout(t)
                try:
                    return _decode(*_exchange(conn, url))
                except (OSError, http.client.HTTPException) as exc:
                    conn.close()
                    if not (reused and attempt == 1 and isinstance(exc, _STALE)):
                        raise self._unreachable(url, exc) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    def ping(self, timeout: float = 2.0) -> bool:
        """True if ``GET /_ping`` answers OK within timeout (per step), on a fresh connection."""
        conn = self._connection(timeout)
        try:
            status, _, body = _exchange(conn, self._url("/_ping", None))
            return status == 200 and body.strip() == b"OK"
        except (OSError, http.client.HTTPException):
            return False
        finally:
            conn.close()

    def stream(self, path: str, params: dict[str, Any] | None = None) -> EventStream:
        """A stream of JSON documents (``/events``) on its own connection. The object's timeout
        bounds the connect and the wait for the response headers, never the wait between
        documents (a hung engine is found by ``ping`` from another thread)."""
        conn = self._connection(self.timeout)
        url = self._url(path, params)
        try:
            conn.request("GET", url, headers=_HEADERS)
            resp = conn.getresponse()
            if not 200 <= resp.status < 300:
                _decode(resp.status, resp.getheader("Content-Type", ""), resp.read())
            assert conn.sock is not None
            conn.sock.settimeout(None)
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            raise self._unreachable(url, exc) from exc
        except BaseException:
            conn.close()
            raise
        return EventStream(conn, resp, f"{self.host} {path}")

    def close(self) -> None:
        with self._lock:
            conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def _unreachable(self, url: str, exc: BaseException) -> Unreachable:
        reason = str(exc) or type(exc).__name__
        return Unreachable(f"engine {self.host} (GET {url.split('?')[0]}): {reason}")


class EventStream:
    """Iterate decoded JSON documents as they arrive. StopIteration when the engine ends the
    stream (or ``close()`` was called: from any thread, it wakes a blocked iteration);
    Unreachable when the connection breaks inside a document or with an error."""

    def __init__(self, conn: http.client.HTTPConnection, resp: http.client.HTTPResponse, name: str):
        self._conn, self._resp, self._name, self._sock = conn, resp, name, conn.sock
        self._buf = b""
        self._lock = threading.Lock()  # closed/reading: close() must not free a socket in use
        self._closed = self._reading = False

    def __iter__(self) -> EventStream:
        return self

    def __next__(self) -> Any:
        while True:
            line, sep, rest = self._buf.partition(b"\n")
            if sep:
                self._buf = rest
                if line.strip():
                    try:
                        return json.loads(line)
                    except ValueError as exc:
                        self.close()
                        raise Unreachable(f"{self._name}: not a JSON document: {exc}") from exc
                continue
            with self._lock:
                if self._closed:
                    self._conn.close()
                    raise StopIteration
                self._reading = True
            try:
                data = self._resp.read1(65536)
                error = None
            except (OSError, http.client.HTTPException) as exc:
                data, error = b"", exc
            with self._lock:
                self._reading = False
                closed, self._closed = self._closed, not data or self._closed
            if data:
                self._buf += data
                continue
            self._conn.close()
            # StopIteration: closed by us, or the engine ended the stream between two documents
            # (a clean last chunk, or a hang-up: dockerd drops its connections when it stops).
            clean = error is None or isinstance(error, http.client.IncompleteRead)
            if closed or (clean and not self._buf.strip()):
                raise StopIteration
            raise Unreachable(f"{self._name}: stream broken: {error or 'ended inside a document'}")

    def close(self) -> None:
        """End the stream; from another thread, this wakes a blocked ``next()`` at once."""
        with self._lock:
            self._closed = True
            if self._reading:
                try:
                    if self._sock is not None:
                        self._sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            else:
                self._conn.close()

    def __enter__(self) -> EventStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _exchange(conn: http.client.HTTPConnection, url: str) -> tuple[int, str, bytes]:
    conn.request("GET", url, headers=_HEADERS)
    resp = conn.getresponse()
    return resp.status, resp.getheader("Content-Type", ""), resp.read()


def _decode(status: int, content_type: str, body: bytes) -> Any:
    text = body.decode("utf-8", "replace")
    data: Any = text
    if "json" in content_type:
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise http.client.HTTPException(f"invalid JSON in the answer ({exc})") from exc
    if 200 <= status < 300:
        return data
    message = data.get("message", text) if isinstance(data, dict) else text
    raise (NotFound if status == 404 else EngineError)(status, str(message).strip())


def _param(value: Any) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, dict | list | tuple):
        return json.dumps(value)
    return str(value)


def _tls_context() -> Any:
    """As the docker CLI: verify the server; DOCKER_CERT_PATH (default ~/.docker) holds
    ca.pem (else the system CAs) and the client's cert.pem/key.pem (if present)."""
    import ssl  # already loaded by http.client; imported here as only TLS needs it

    certs = os.environ.get("DOCKER_CERT_PATH") or os.path.expanduser("~/.docker")
    ca, cert, key = (os.path.join(certs, f) for f in ("ca.pem", "cert.pem", "key.pem"))
    try:
        ctx = ssl.create_default_context(cafile=ca if os.path.exists(ca) else None)
        if os.path.exists(cert) and os.path.exists(key):
            ctx.load_cert_chain(cert, key)
    except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
        raise ValueError(f"unusable TLS files in {certs}: {exc}") from exc
    return ctx
