"""GET /topology and /topology.json: the host's container network drawn as the classic diagram.

The page is rendered on the server from the document of views/document.py (readable without
JavaScript; HTML from the templates of views/render.py, every value escaped) and served with a
Content-Security-Policy that lets only its own inline script and style run. The script runs the
filter box (words separated by spaces: what contains any of them stays; kept in the URL as
``#filter=...``) and fetches the server-rendered ``<main>`` (``/topology?fragment=1``) every
REFRESH_SECONDS: when its revision changed it swaps it in, keeping which bridges are open and the
filter; otherwise it copies the rates in place. Without JavaScript a meta refresh reloads the page.
Each bridge is a <details> element, closed from COLLAPSE_AT veths on, so that 2,000 veths stay
usable.

``TopologyPage`` is the page's model: the current snapshot through a getter, the firewall rules
through the NAT collector (its last read when at most NAT_MAX_AGE old), the host veths' counters
(one RTM_GETSTATS dump, at most once per MIN_RATE_INTERVAL, however many pages are open) for the
rates, and the host's addresses (at most once per HOST_ADDRESSES_TTL). With the overlay collector,
the remote VTEPs of each overlay through its sockets (one forwarding database dump per overlay and
drawing); with the flows collector, its series (views/flows.py), their opened rates between two
drawings at least MIN_RATE_INTERVAL apart.

Under load it draws once and serves many: one document per snapshot and MIN_RATE_INTERVAL, each
form of it (page, fragment, JSON) rendered and gzipped once from that document, by one visitor
while the others wait for it, then served as bytes to every visitor until the snapshot changes or
the interval ends.
"""

from __future__ import annotations

import gzip
import json
import threading
import time
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from exporter.core import orphan_rules
from exporter.core.flows import Key
from exporter.core.model import Address, Counters
from exporter.views import document as topology_view
from exporter.views import flows as flows_view
from exporter.views.document import Options, Rates
from exporter.views.rates import Readings
from exporter.views.render import CSP, render, render_main
from exporter.web.routes import HTML, Request, Response, Route

if TYPE_CHECKING:
    from exporter.core.overlay import Namespace
    from exporter.core.topology import Snapshot
    from exporter.sources.firewall.reader import FirewallRules
    from exporter.sources.firewall.rules import Ruleset

MIN_RATE_INTERVAL = 1.0
HOST_ADDRESSES_TTL = 10.0
NAT_MAX_AGE = 30.0
JSON = "application/json"
GZIP_LEVEL = 6  # once per form and interval: the smaller body, for every visitor after


def read_host_addresses() -> list[Address]:
    from exporter.sources.kernel.netlink import Netlink

    with Netlink() as netlink:
        return netlink.addresses()


def read_link_stats(ifindexes: Collection[int]) -> dict[int, Counters]:
    from exporter.sources.kernel.netlink import read_link_stats as read

    return read(ifindexes)


@dataclass(frozen=True)
class Body:
    """One form of the page as served, plain and gzipped."""

    plain: bytes
    gzipped: bytes

    @classmethod
    def of(cls, text: str) -> Body:
        plain = text.encode()
        return cls(plain, gzip.compress(plain, compresslevel=GZIP_LEVEL, mtime=0))


@dataclass
class Drawing:
    """The document of one snapshot at one time, and each form rendered from it so far."""

    snap: Snapshot
    at: float
    doc: dict
    bodies: dict[str, Body] = field(default_factory=dict)

    def body(self, form: str) -> Body:
        if form not in self.bodies:
            self.bodies[form] = Body.of(FORMS[form](self.doc))
        return self.bodies[form]


def _json(doc: dict) -> str:
    return json.dumps(doc, ensure_ascii=False)


FORMS: dict[str, Callable[[dict], str]] = {"page": render, "fragment": render_main, "json": _json}


def form_of(path: str, query: str) -> str:
    if path.endswith(".json"):
        return "json"
    return "fragment" if "fragment=1" in query.split("&") else "page"


class TopologyPage:
    """What the web server asks for /topology and /topology.json."""

    def __init__(
        self,
        snapshot: Callable[[], Snapshot],
        nat: FirewallRules | None = None,
        *,
        link_stats: Callable[[Collection[int]], dict[int, Counters]] = read_link_stats,
        host_addresses: Callable[[], Iterable[Address]] = read_host_addresses,
        scope: str = "docker",
        grace: float = orphan_rules.DEFAULT_GRACE,
        overlay_peers: Callable[[str, int], Iterable[str] | None] | None = None,
        flows: Callable[[Snapshot], flows_view.Rows] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.snapshot, self.nat = snapshot, nat
        self.overlay_peers, self.flows = overlay_peers, flows
        self._opened: Readings[dict[Key, int], dict[Key, float]]
        self._opened = Readings(MIN_RATE_INTERVAL, flows_view.opened_rates, {})
        self.link_stats, self.host_addresses = link_stats, host_addresses
        self.scope, self.grace, self.clock = scope, grace, clock
        self._lock = threading.Lock()
        self._veth_rates = Readings(MIN_RATE_INTERVAL, topology_view.rates_between, Rates())
        self._addresses: tuple[float, tuple[Address, ...]] | None = None
        self._drawing_lock = threading.Lock()
        self._drawing: Drawing | None = None

    def routes(self) -> list[Route]:
        return [
            Route("/topology", "Topology", self.serve),
            Route("/topology.json", "Topology (JSON)", self.serve),
        ]

    def document(self) -> dict:
        return self._document(self.snapshot(), self.clock())

    def _document(self, snap: Snapshot, now: float) -> dict:
        options = Options(
            self._rules(snap),
            self._rates_now(snap, now),
            self._host_addresses_now(now),
            self.scope,
            self.grace,
            self._peers(snap.overlays),
            self._flows_now(snap, now),
        )
        return topology_view.document(snap, now, options)

    def serve(self, request: Request) -> Response:
        return self.respond(request.path, request.query, gzip=request.gzip)

    def respond(self, path: str, query: str = "", *, gzip: bool = False) -> Response:
        """The answer to a GET of /topology or /topology.json, gzipped if asked."""
        form = form_of(path, query)
        body = self.drawn(form)
        headers = {"Vary": "Accept-Encoding", "Cache-Control": "no-store"}
        if form != "json":
            headers["Content-Security-Policy"] = CSP
        if gzip:
            return Response(200, _type(form), body.gzipped, headers | {"Content-Encoding": "gzip"})
        return Response(200, _type(form), body.plain, headers)

    def drawn(self, form: str) -> Body:
        """That form of the current drawing: drawn anew when the snapshot changed or the
        drawing is MIN_RATE_INTERVAL old (rates, ages, rules), by one caller at a time."""
        with self._drawing_lock:
            now, snap, drawing = self.clock(), self.snapshot(), self._drawing
            if drawing is None or drawing.snap is not snap or now - drawing.at >= MIN_RATE_INTERVAL:
                drawing = self._drawing = Drawing(snap, now, self._document(snap, now))
            return drawing.body(form)

    def _rules(self, snap: Snapshot) -> Ruleset | None:
        if self.nat is None:
            return None
        try:
            return self.nat.rules(snap, NAT_MAX_AGE)
        except (OSError, ValueError, RuntimeError):  # the NAT collector reports it on /metrics
            return None

    def _rates_now(self, snap: Snapshot, now: float) -> Rates:
        """Rates of the host veths since the previous read of their counters, read again only
        after MIN_RATE_INTERVAL (a failed read: the previous rates)."""
        with self._lock:
            try:
                return self._veth_rates.update(
                    now, lambda: self.link_stats([v.link.ifindex for v in snap.veths])
                )
            except OSError:
                return self._veth_rates.rates

    def _peers(self, overlays: Iterable[Namespace]) -> dict[str, tuple[str, ...]] | None:
        """The remote VTEPs of each overlay's VXLAN device (an overlay gone meanwhile: left out)."""
        if self.overlay_peers is None:
            return None
        out = {}
        for ns in overlays:
            if ns.vxlan is not None:
                try:
                    found = self.overlay_peers(ns.path, ns.vxlan.ifindex)
                except OSError:
                    continue
                if found is not None:  # None: the namespace cannot be entered here
                    out[ns.name] = tuple(sorted(found))
        return out

    def _flows_now(self, snap: Snapshot, now: float) -> flows_view.Reading | None:
        if self.flows is None:
            return None
        try:
            rows = self.flows(snap)
        except RuntimeError as exc:  # not followed (yet): the collector says why
            return flows_view.Reading(error=str(exc))
        with self._lock:
            return flows_view.Reading(
                rows, self._opened.update(now, lambda: flows_view.opened(rows))
            )

    def _host_addresses_now(self, now: float) -> tuple[Address, ...]:
        with self._lock:
            if self._addresses is None or now - self._addresses[0] >= HOST_ADDRESSES_TTL:
                try:
                    self._addresses = (now, tuple(self.host_addresses()))
                except OSError:
                    self._addresses = (now, ())
            return self._addresses[1]


def _type(form: str) -> str:
    return JSON if form == "json" else HTML
