"""The web server's routes table, against a Server in this process on a loopback port: the
landing page links every titled route in the table's order, a page passed in is served with its
own headers, gzip only when asked, and a failing page is a 500 that leaves the rest serving."""

from __future__ import annotations

import gzip
import http.client
import re
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from exporter import logs
from exporter.web.routes import Request, Response, Route
from exporter.web.server import Server
from helpers import free_port


def hello(request: Request) -> Response:
    body = f"hello {request.query}".encode()
    if request.gzip:
        return Response(200, "text/plain", gzip.compress(body), {"Content-Encoding": "gzip"})
    return Response(200, "text/plain", body, {"X-Page": "hello"})


def broken(request: Request) -> Response:
    raise RuntimeError("a page that fails")


@pytest.fixture
def server() -> Iterator[Server]:
    logs.configure("info")  # the log binds to this test's stderr at its first line
    pages = [Route("/hello", "Hello <you>", hello), Route("/broken", "", broken)]
    s = Server(f"127.0.0.1:{free_port()}", "/metrics", lambda: "up 1\n", pages=pages)
    s.serve_in_background()
    yield s
    s.shutdown()
    s.server_close()


@dataclass(frozen=True)
class Answer:
    status: int
    headers: http.client.HTTPMessage
    body: bytes


def get(server: Server, path: str, **headers: str) -> Answer:
    conn = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=10)
    try:
        conn.request("GET", path, headers=headers)
        response = conn.getresponse()
        return Answer(response.status, response.headers, response.read())
    finally:
        conn.close()


def test_the_landing_page_links_every_titled_route_in_order(server):
    page = get(server, "/").body.decode()
    links = re.findall(r'<a href="([^"]+)">([^<]+)</a>', page)
    assert links == [
        ("/metrics", "Metrics"),
        ("/hello", "Hello &lt;you&gt;"),
        ("/healthz", "Health"),
    ]


def test_a_page_from_the_table_is_served_with_its_headers_and_gzip_only_when_asked(server):
    plain = get(server, "/hello?x=1")
    assert (plain.status, plain.body, plain.headers["X-Page"]) == (200, b"hello x=1", "hello")
    assert plain.headers["Content-Encoding"] is None
    packed = get(server, "/hello?x=1", **{"Accept-Encoding": "gzip"})
    assert packed.headers["Content-Encoding"] == "gzip"
    assert gzip.decompress(packed.body) == b"hello x=1"


def test_a_failing_page_is_a_500_and_the_others_go_on(server, capsys):
    assert get(server, "/broken").status == 500
    assert "event=page_failed path=/broken" in capsys.readouterr().err
    assert get(server, "/nowhere").status == 404
    metrics = get(server, "/metrics")
    assert (metrics.status, metrics.body) == (200, b"up 1\n")
    assert get(server, "/healthz").body == b"ok\n"
