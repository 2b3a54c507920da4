"""HTTP: /metrics (gzip when asked), a landing page at / and /healthz; TLS and
basic auth from --web.config.file.

One thread per connection, each with its own timeout, and the TLS handshake
runs in that thread too: a client that sends slowly or never finishes holds
only its own thread, never the accept loop or other scrapes. Request lines
and headers are bounded by http.server (414/431); bodies are never read."""

from __future__ import annotations

import gzip
import html
import socket
import ssl
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import structlog

from . import __version__
from .exposition import CONTENT_TYPE
from .webconfig import BasicAuth, ReloadingContext, WebConfig, peer_allowed

log = structlog.get_logger()

REQUEST_TIMEOUT = 30.0


def parse_listen_address(address: str) -> tuple[str, int]:
    """':9917' -> ('', 9917); '[::1]:9917' -> ('::1', 9917). Raises ValueError."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"invalid listen address {address!r}: expected [host]:port")
    return host.strip("[]"), int(port)


class Server(ThreadingHTTPServer):
    # Daemon threads are never joined: a stalled client cannot hold up SIGTERM.
    daemon_threads = True
    allow_reuse_address = True

    def __init__(
        self,
        address: str,
        telemetry_path: str,
        render: Callable[[], str],
        config: WebConfig = WebConfig(),
    ) -> None:
        host, port = parse_listen_address(address)
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.telemetry_path = telemetry_path
        self.render = render
        self.config = config
        self.auth = BasicAuth(config.users)
        self.tls = ReloadingContext(config.tls) if config.tls else None
        super().__init__((host, port), Handler)

    def finish_request(self, request, client_address) -> None:
        if self.tls is None:
            return super().finish_request(request, client_address)
        request.settimeout(REQUEST_TIMEOUT)
        try:
            conn = self.tls.get().wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError) as exc:
            log.debug("tls_handshake_failed", client=client_address[0], error=str(exc))
            return
        try:
            if peer_allowed(self.config.tls, conn.getpeercert()):
                self.RequestHandlerClass(conn, client_address, self)
            else:
                log.debug("tls_client_not_allowed", client=client_address[0])
        finally:
            conn.close()

    def handle_error(self, request, client_address) -> None:
        log.debug("http_connection_error", client=client_address[0], exc_info=True)

    def serve_in_background(self) -> threading.Thread:
        t = threading.Thread(
            target=self.serve_forever, kwargs={"poll_interval": 0.2}, name="http", daemon=True
        )
        t.start()
        return t

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        shown = "localhost" if host in ("0.0.0.0", "::", "") else host
        scheme = "https" if self.tls else "http"
        return f"{scheme}://{shown}:{port}{self.telemetry_path}"


class Handler(BaseHTTPRequestHandler):
    server: Server
    timeout = REQUEST_TIMEOUT
    server_version = f"dockernet-exporter/{__version__}"

    def do_GET(self) -> None:
        if self.server.auth and not self._authorized():
            return
        path = self.path.split("?", 1)[0]
        if self.headers.get("Content-Length", "0").strip() not in ("", "0") or self.headers.get(
            "Transfer-Encoding"
        ):
            self._send(
                413,
                "text/plain; charset=utf-8",
                b"a GET carries no body\n",
                {"Connection": "close"},
            )
        elif path == self.server.telemetry_path:
            self._metrics()
        elif path == "/":
            self._send(
                200, "text/html; charset=utf-8", _landing(self.server.telemetry_path).encode()
            )
        elif path == "/healthz":
            self._send(200, "text/plain; charset=utf-8", b"ok\n")
        else:
            self._send(404, "text/plain; charset=utf-8", b"not found\n")

    def _authorized(self) -> bool:
        if self.server.auth.check(self.headers.get("Authorization")):
            return True
        log.info("http_unauthorized", client=self.client_address[0])
        self._send(
            401,
            "text/plain; charset=utf-8",
            b"unauthorized\n",
            {"WWW-Authenticate": 'Basic realm="dockernet-exporter"'},
        )
        return False

    def end_headers(self) -> None:
        for k, v in self.server.config.headers.items():
            self.send_header(k, v)
        super().end_headers()

    def _metrics(self) -> None:
        try:
            body = self.server.render().encode()
        except Exception:
            log.exception("scrape_failed")
            self._send(500, "text/plain; charset=utf-8", b"scrape failed; see the exporter's log\n")
            return
        if "gzip" in self.headers.get("Accept-Encoding", ""):
            self._send(
                200,
                CONTENT_TYPE,
                gzip.compress(body, compresslevel=1),
                {"Content-Encoding": "gzip"},
            )
        else:
            self._send(200, CONTENT_TYPE, body)

    def _send(self, code: int, content_type: str, body: bytes, headers: dict | None = None) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, fmt: str, *args) -> None:
        log.debug("http_request", client=self.client_address[0], request=fmt % args)


def _landing(telemetry_path: str) -> str:
    path = html.escape(telemetry_path)
    return (
        f"<!doctype html><html><head><title>dockernet-exporter</title></head><body>"
        f"<h1>dockernet-exporter {__version__}</h1>"
        f"<p>Docker's host-side networking: which veth belongs to which container, "
        f"per-container interface counters, bridges and NAT.</p>"
        f'<ul><li><a href="{path}">Metrics</a></li><li><a href="/healthz">Health</a></li></ul>'
        f"</body></html>\n"
    )
