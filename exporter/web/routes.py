"""The web server's pages as a table: each a path, the title the landing page links it by, and a
handler from the request to the answer. A new page is a module with its handler and one line in
the table the daemon passes to the server (app wiring: service.py)."""

from __future__ import annotations

import html
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from exporter import __version__

HTML = "text/html; charset=utf-8"
TEXT = "text/plain; charset=utf-8"


@dataclass(frozen=True)
class Request:
    path: str
    query: str = ""
    gzip: bool = False  # the client accepts a gzip-encoded body


@dataclass(frozen=True)
class Response:
    status: int
    content_type: str
    body: bytes
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Route:
    path: str
    title: str  # on the landing page; "" leaves it off
    handler: Callable[[Request], Response]


def landing(routes: Iterable[Route]) -> Response:
    """The page at /: a link to every route with a title, in the table's order."""
    links = "".join(
        f'<li><a href="{html.escape(r.path)}">{html.escape(r.title)}</a></li>'
        for r in routes
        if r.title
    )
    body = (
        f"<!doctype html><html><head><title>dockernet-exporter</title></head><body>"
        f"<h1>dockernet-exporter {__version__}</h1>"
        f"<p>Docker's host-side networking: which veth belongs to which container, "
        f"per-container interface counters, bridges and NAT.</p>"
        f"<ul>{links}</ul></body></html>\n"
    )
    return Response(200, HTML, body.encode())
