"""HTTP: /metrics (gzip when asked), /healthz, the pages passed in as routes (web/routes.py; the
daemon passes the topology page's /topology and /topology.json) and a landing page at / that links
them all; TLS and basic auth from --web.config.file, for every path, re-read on reload_config
(SIGHUP).

One thread per connection and one request per connection, at most
MAX_CONNECTIONS at once: beyond that a new connection is closed at once. A
client has HEAD_TIMEOUT for its TLS handshake, then HEAD_TIMEOUT for its
request line and headers, each a total and not a per-read timeout, so a client
sending a byte now and then holds a thread for seconds, not for ever. The
accept loop never waits for a client. Request lines and headers are bounded by
http.server (414/431); bodies are never read."""

from __future__ import annotations

import gzip
import io
import socket
import ssl
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

from exporter import __version__, logs
from exporter.app.flags import parse_listen_address
from exporter.metrics.exposition import CONTENT_TYPE
from exporter.web.config import (
    AuthBusy,
    BasicAuth,
    ReloadingContext,
    WebConfig,
    WebConfigError,
    load,
    peer_allowed,
)
from exporter.web.routes import TEXT, Request, Response, Route, landing

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

log = logs.get_logger()
# What the socket server hands each method: a connection (a datagram server's would be a tuple).
Connection = socket.socket | tuple[bytes, socket.socket]

REQUEST_TIMEOUT = 30.0  # each read or write once the request is in
HEAD_TIMEOUT = 10.0
MAX_CONNECTIONS = 512


def listen_backlog() -> int:
    """The kernel's limit, as Go's net/http uses: a burst of scrapers waits in the accept queue
    instead of having its SYNs dropped and retried a second later."""
    try:
        with open("/proc/sys/net/core/somaxconn") as f:
            return int(f.read())
    except (OSError, ValueError):
        return 4096


def wildcard_family() -> socket.AddressFamily:
    """AF_INET6 where the kernel has IPv6 (the socket then takes IPv4 too), else AF_INET."""
    try:
        socket.socket(socket.AF_INET6, socket.SOCK_STREAM).close()
    except OSError:
        return socket.AF_INET
    return socket.AF_INET6


class Throttled:
    """Logs an event at most once per `interval`; each line counts the ones suppressed since
    the previous line."""

    def __init__(self, event: str, level: str = "info", interval: float = 10.0) -> None:
        self.event, self.level, self.interval = event, level, interval
        self._lock = threading.Lock()
        self._next = 0.0
        self._suppressed = 0

    def __call__(self, **fields: object) -> None:
        now = time.monotonic()
        with self._lock:
            if now < self._next:
                self._suppressed += 1
                return
            self._next = now + self.interval
            suppressed, self._suppressed = self._suppressed, 0
        getattr(log, self.level)(self.event, suppressed=suppressed, **fields)


@dataclass(frozen=True)
class WebState:
    """What the web config file decides, swapped in as one piece on reload."""

    config: WebConfig
    auth: BasicAuth
    tls: ReloadingContext | None

    @classmethod
    def of(cls, config: WebConfig) -> WebState:
        tls = ReloadingContext(config.tls) if config.tls else None
        return cls(config, BasicAuth(config.users), tls)


class Server(ThreadingHTTPServer):
    # Daemon threads are never joined: a stalled client cannot hold up SIGTERM.
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = listen_backlog()

    def __init__(
        self,
        address: str,
        telemetry_path: str,
        render: Callable[[], str],
        config: WebConfig | None = None,
        pages: Sequence[Route] = (),
    ) -> None:
        host, port = parse_listen_address(address)
        if host:
            self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        else:
            self.address_family = wildcard_family()
            host = "::" if self.address_family == socket.AF_INET6 else "0.0.0.0"
        self.telemetry_path = telemetry_path
        self.render = render
        table = (
            Route(telemetry_path, "Metrics", self.metrics),
            *pages,
            Route("/healthz", "Health", self.health),
        )
        self.routes = {r.path: r for r in (Route("/", "", lambda _: landing(table)), *table)}
        self.state = WebState.of(config or WebConfig())
        self.scrape_error: str | None = None
        self.failure: Callable[[], str] = str  # why the daemon cannot go on ("": it can)
        self.unauthorized = Throttled("http_unauthorized")
        self._refused = Throttled("http_connection_limit", level="warning")
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        super().__init__((host, port), Handler)

    def metrics(self, request: Request) -> Response:
        try:
            body = self.render().encode()
        except Exception as exc:
            self.scrape_error = type(exc).__name__
            log.exception("scrape_failed")
            return Response(500, TEXT, b"scrape failed; see the exporter's log\n")
        self.scrape_error = None
        if request.gzip:
            body = gzip.compress(body, compresslevel=1)
            return Response(200, CONTENT_TYPE, body, {"Content-Encoding": "gzip"})
        return Response(200, CONTENT_TYPE, body)

    def health(self, request: Request) -> Response:
        error = self.scrape_error
        if failure := self.failure():
            return Response(503, TEXT, f"the state loop died ({failure}); see the log\n".encode())
        if error:
            return Response(503, TEXT, f"the last scrape failed ({error}); see the log\n".encode())
        return Response(200, TEXT, b"ok\n")

    def server_bind(self) -> None:
        if self.address_family == socket.AF_INET6 and self.server_address[0] == "::":
            self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()

    def reload_config(self, path: str | None) -> None:
        """Re-read the web config file and swap its users, headers and TLS in for the next
        connections; a file that does not load leaves the running config in place."""
        if not path:
            log.info("web_config_not_reloaded", reason="no --web.config.file")
            return
        try:
            state = WebState.of(load(path))
        except WebConfigError as exc:
            log.error("web_config_reload_failed", file=path, error=str(exc))
            return
        self.state = state
        log.info("web_config_reloaded", file=path)

    def process_request(self, request: Connection, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self._refused(client=client_address[0], limit=MAX_CONNECTIONS)
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Connection, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def finish_request(self, request: Connection, client_address: Any) -> None:
        state = self.state
        if state.tls is None or not isinstance(request, socket.socket):
            return super().finish_request(request, client_address)
        request.settimeout(HEAD_TIMEOUT)  # CPython's ssl counts it for the whole handshake
        try:
            conn = state.tls.get().wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError) as exc:
            log.debug("tls_handshake_failed", client=client_address[0], error=str(exc))
            return
        try:
            if peer_allowed(state.tls.tls, conn.getpeercert()):
                Handler(conn, client_address, self)
            else:
                log.debug("tls_client_not_allowed", client=client_address[0])
        finally:
            conn.close()

    def handle_error(self, request: Connection, client_address: Any) -> None:
        log.debug("http_connection_error", client=client_address[0], exc_info=True)

    def serve_in_background(self) -> threading.Thread:
        t = threading.Thread(
            target=self.serve_forever, kwargs={"poll_interval": 0.2}, name="http", daemon=True
        )
        t.start()
        return t

    @property
    def url(self) -> str:
        host, port = self.socket.getsockname()[:2]
        shown = f"[{host}]" if ":" in host else host
        scheme = "https" if self.state.tls else "http"
        return f"{scheme}://{shown}:{port}{self.telemetry_path}"


class HeadReader(io.RawIOBase):
    """A connection's input under one deadline for all its reads: the request line and headers
    must be in by then, however the client spaces its bytes."""

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self.sock, self.deadline = sock, deadline

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer) -> int:
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("request line and headers not received in time")
        self.sock.settimeout(remaining)
        return self.sock.recv_into(buffer)


class Handler(BaseHTTPRequestHandler):
    server: Server
    timeout = REQUEST_TIMEOUT
    protocol_version = "HTTP/1.1"
    # Before a request line is understood http.server assumes HTTP/0.9, whose answers have no
    # status line: a 400 for garbage would be a bare body.
    default_request_version = "HTTP/1.1"
    server_version = f"dockernet-exporter/{__version__}"

    def setup(self) -> None:
        super().setup()
        self.web = self.server.state
        self.rfile.close()
        self.rfile = io.BufferedReader(HeadReader(self.connection, time.monotonic() + HEAD_TIMEOUT))

    def parse_request(self) -> bool:
        parsed = super().parse_request()  # reads the headers
        self.connection.settimeout(self.timeout)
        return parsed

    def version_string(self) -> str:
        return self.server_version

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """The standard reason phrase and a line of text: http.server's own would put the
        client's request line in the status line and answer in HTML."""
        self.log_error("code %d, message %s", code, message)
        detail = f": {message}" if message else ""
        self._send(code, TEXT, f"{code} {HTTPStatus(code).phrase}{detail}\n".encode())

    def do_GET(self) -> None:
        if self.web.auth and not self._authorized():
            return
        path, _, query = self.path.partition("?")
        if self.headers.get("Content-Length", "0").strip() not in ("", "0") or self.headers.get(
            "Transfer-Encoding"
        ):
            self._send(413, TEXT, b"a GET carries no body\n")
        elif path in self.server.routes:
            gzipped = "gzip" in self.headers.get("Accept-Encoding", "")
            self._answer(self.server.routes[path], Request(path, query, gzipped))
        else:
            self._send(404, TEXT, b"not found\n")

    do_HEAD = do_GET  # _send leaves the body out

    def _authorized(self) -> bool:
        try:
            if self.web.auth.check(self.headers.get("Authorization")):
                return True
        except AuthBusy:
            self._send(429, TEXT, b"too many password checks at once\n", {"Retry-After": "1"})
            return False
        self.server.unauthorized(client=self.client_address[0])
        self._send(
            401, TEXT, b"unauthorized\n", {"WWW-Authenticate": 'Basic realm="dockernet-exporter"'}
        )
        return False

    def _answer(self, route: Route, request: Request) -> None:
        try:
            r = route.handler(request)
        except Exception:
            log.exception("page_failed", path=request.path)
            self._send(500, TEXT, b"the page failed; see the exporter's log\n")
            return
        self._send(r.status, r.content_type, r.body, r.headers)

    def end_headers(self) -> None:
        for k, v in self.web.config.headers.items():
            self.send_header(k, v)
        super().end_headers()

    def _send(
        self, code: int, content_type: str, body: bytes, headers: Mapping[str, str] | None = None
    ) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def log_message(self, fmt: str, *args: Any) -> None:
        log.debug("http_request", client=self.client_address[0], request=fmt % args)
