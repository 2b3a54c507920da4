"""GET /topology and /topology.json: the host's container network drawn as the classic diagram.

The page is rendered on the server from the document of topology_view (readable without
JavaScript; every name, label and value goes through html.escape) and served with a
Content-Security-Policy that lets only its own inline script and style run. The script runs the
filter box (words separated by spaces: what contains any of them stays; kept in the URL as
``#filter=...``) and fetches topology.json every REFRESH_SECONDS: when the document's revision
changed it fetches the server-rendered ``<main>`` (``/topology?fragment=1``) and swaps it in,
keeping which bridges are open and the filter; otherwise it updates the rates in place. Without
JavaScript a meta refresh reloads the page. Each bridge is a <details> element, closed from
COLLAPSE_AT veths on, so that 2,000 veths stay usable.

``TopologyPage`` is the page's model: the current snapshot through a getter, the firewall rules
through the NAT collector (its last read when at most NAT_MAX_AGE old), the host veths' counters
(one RTM_GETSTATS dump, at most once per MIN_RATE_INTERVAL, however many pages are open) for the
rates, and the host's addresses (at most once per HOST_ADDRESSES_TTL).
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
import time
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from html import escape
from typing import TYPE_CHECKING

from exporter import __version__, orphan_rules
from exporter.model import Address, Counters
from exporter.views import document as topology_view
from exporter.views.document import Options, Rates

if TYPE_CHECKING:
    from exporter.collectors.nat import NatCollector
    from exporter.firewall.rules import Ruleset
    from exporter.topology import Snapshot

REFRESH_SECONDS = 5
NOSCRIPT_REFRESH_SECONDS = 30
MIN_RATE_INTERVAL = 1.0
HOST_ADDRESSES_TTL = 10.0
NAT_MAX_AGE = 30.0
COLLAPSE_AT = 64  # a bridge with this many veths or more starts closed
HTML = "text/html; charset=utf-8"
JSON = "application/json"
NO_RATE = "\u2013"  # en dash


def read_host_addresses() -> list[Address]:
    from exporter.sources.netlink import Netlink

    with Netlink() as netlink:
        return netlink.addresses()


def read_link_stats(ifindexes: Collection[int]) -> dict[int, Counters]:
    from exporter.collectors.containers import read_link_stats as read

    return read(ifindexes)


@dataclass(frozen=True)
class Response:
    status: int
    content_type: str
    body: bytes
    headers: dict[str, str]


class TopologyPage:
    """What the web server asks for /topology and /topology.json."""

    def __init__(
        self,
        snapshot: Callable[[], Snapshot],
        nat: NatCollector | None = None,
        *,
        link_stats: Callable[[Collection[int]], dict[int, Counters]] = read_link_stats,
        host_addresses: Callable[[], Iterable[Address]] = read_host_addresses,
        scope: str = "docker",
        grace: float = orphan_rules.DEFAULT_GRACE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.snapshot, self.nat = snapshot, nat
        self.link_stats, self.host_addresses = link_stats, host_addresses
        self.scope, self.grace, self.clock = scope, grace, clock
        self._lock = threading.Lock()
        self._counters: tuple[float, dict[int, Counters]] | None = None
        self._rates = Rates()
        self._addresses: tuple[float, tuple[Address, ...]] | None = None

    def document(self) -> dict:
        snap, now = self.snapshot(), self.clock()
        options = Options(
            self._rules(snap),
            self._rates_now(snap, now),
            self._host_addresses_now(now),
            self.scope,
            self.grace,
        )
        return topology_view.document(snap, now, options)

    def respond(self, path: str, query: str = "") -> Response:
        """The answer to a GET of /topology or /topology.json."""
        doc = self.document()
        if path.endswith(".json"):
            return Response(200, JSON, json.dumps(doc, ensure_ascii=False).encode(), {})
        body = render_main(doc) if "fragment=1" in query.split("&") else render(doc)
        return Response(200, HTML, body.encode(), {"Content-Security-Policy": CSP})

    def _rules(self, snap: Snapshot) -> Ruleset | None:
        if self.nat is None:
            return None
        try:
            return self.nat.rules(snap, NAT_MAX_AGE)
        except (OSError, ValueError, RuntimeError):  # the NAT collector reports it on /metrics
            return None

    def _rates_now(self, snap: Snapshot, now: float) -> Rates:
        """Rates since the previous read of the counters, read again only after
        MIN_RATE_INTERVAL."""
        with self._lock:
            previous = self._counters
            if previous is not None and now - previous[0] < MIN_RATE_INTERVAL:
                return self._rates
            try:
                counters = self.link_stats([v.link.ifindex for v in snap.veths])
            except OSError:
                return self._rates
            if previous is not None:
                self._rates = topology_view.rates_between(previous[1], counters, now - previous[0])
            self._counters = (now, counters)
            return self._rates

    def _host_addresses_now(self, now: float) -> tuple[Address, ...]:
        with self._lock:
            if self._addresses is None or now - self._addresses[0] >= HOST_ADDRESSES_TTL:
                try:
                    self._addresses = (now, tuple(self.host_addresses()))
                except OSError:
                    self._addresses = (now, ())
            return self._addresses[1]


# -- rendering: pure functions of the document -----------------------------------------------


def rate(value: float | None) -> str:
    """Bytes per second, in decimal units."""
    if value is None:
        return NO_RATE
    for unit in ("B/s", "kB/s", "MB/s"):
        if value < 1000:
            return f"{value:.0f} {unit}" if unit == "B/s" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} GB/s"


def _e(value: object) -> str:
    return escape("" if value is None else str(value), quote=True)


def _words(state: str) -> str:
    return _e(state.replace("_", " "))


def _addresses(addresses: list[dict]) -> str:
    return " ".join(
        f'<span class="addr">{_e(a["address"])}/{_e(a["prefix_length"])}</span>' for a in addresses
    )


def _state(state: str) -> str:
    return f'<span class="state state-{_e(state)}">{_e(state)}</span>'


def _ports(ports: list[dict]) -> str:
    if not ports:
        return ""
    items = "".join(
        f'<li class="port dnat-{_e(p["dnat"])}">{_e(p["host_ip"] or "*")}:{_e(p["host_port"])}'
        f" \u2192 {_e(p['container_port'])}/{_e(p['protocol'])}"
        f' <span class="dnat">DNAT {_words(p["dnat"])}</span></li>'
        for p in ports
    )
    return f'<ul class="ports">{items}</ul>'


def _container(c: dict) -> str:
    project = ""
    if c["compose_project"]:
        service = f"/{_e(c['compose_service'])}" if c["compose_service"] else ""
        project = (
            f'<span class="project" title="compose project">'
            f"{_e(c['compose_project'])}{service}</span> "
        )
    pod = ""
    if c["pod"]:
        pod = (
            f'<span class="pod" title="pod">'
            f"{_e(c['pod']['namespace'])}/{_e(c['pod']['name'])}</span> "
        )
    return (
        f'<div class="container" data-name="{_e(c["name"])}" data-id="{_e(c["id"])}">'
        f'<span class="cname">{_e(c["name"])}</span> '
        f'<span class="image">{_e(c["image"])}</span> {pod}{project}'
        f'<span class="cid">{_e(c["id"][:12])}</span>{_ports(c["ports"])}</div>'
    )


def _rates(v: dict) -> str:
    i = _e(v["ifindex"])
    return (
        f'<span class="rates" title="as the container sees it">'
        f'rx <span data-rx="{i}">{_e(rate(v["rx_bps"]))}</span> '
        f'tx <span data-tx="{i}">{_e(rate(v["tx_bps"]))}</span></span>'
    )


def _namespace(ns: dict, interface: dict | None) -> str:
    """The far end of a pair: the interface, then every container of the namespace."""
    shared = '<div class="shared">shared namespace</div>' if ns["shared"] else ""
    iface = ""
    if interface is not None:
        iface = (
            f'<div class="iface"><span class="ifname">{_e(interface["name"])}</span> '
            f"{_state(interface['state'])} {_addresses(interface['addresses'])}</div>"
        )
    members = "".join(_container(c) for c in ns["containers"])
    return f'<div class="ns" data-ns="{_e(ns["id"])}">{iface}{shared}{members}</div>'


def _far_end(v: dict, namespaces: dict[str, dict]) -> tuple[str, str]:
    """(extra class, HTML) of what is at the other end of a host veth."""
    ns = namespaces.get(v["namespace"]) if v["namespace"] else None
    if ns is not None:
        interface = next((i for i in ns["interfaces"] if i["veth_ifindex"] == v["ifindex"]), None)
        return "", _namespace(ns, interface)
    orphan = v["orphan"]
    if orphan is not None:
        cls, label = ("orphan", "orphaned") if orphan["flagged"] else ("suspect", "suspect")
        return cls, (
            f'<div class="why">{label}: <span class="reason">{_e(orphan["reason"])}</span>, '
            f"for {_e(int(orphan['age_seconds']))} s</div>"
        )
    return "", f'<div class="why">peer {_e(v["interface"] or "in no known namespace")}</div>'


def _pair(v: dict, namespaces: dict[str, dict]) -> str:
    cls, far = _far_end(v, namespaces)
    return (
        f'<div class="pair {cls}" data-veth="{_e(v["name"])}">'
        f'<div class="hostend"><span class="veth">{_e(v["name"])}</span> {_state(v["state"])} '
        f'{_rates(v)}</div><div class="wire" aria-hidden="true"></div>{far}</div>'
    )


def _subnet(s: dict) -> str:
    return (
        f'<span class="subnet">{_e(s["subnet"])}</span> gw <span class="gw">{_e(s["gateway"])}'
        f'</span> <span class="masq masq-{_e(s["masquerade"])}">'
        f"MASQUERADE {_words(s['masquerade'])}</span>"
    )


def _bridge(b: dict, namespaces: dict[str, dict]) -> str:
    if b["network"]:
        network = f'<span class="network">{_e(b["network"])}</span> {_e(b["driver"])}'
    else:
        network = '<span class="network none">not a Docker network</span>'
    full = " full" if b["ports"] >= b["max_ports"] * 0.9 else ""
    opened = "" if len(b["veths"]) >= COLLAPSE_AT else " open"
    pairs = "".join(_pair(v, namespaces) for v in b["veths"]) or '<p class="empty">no veths</p>'
    return (
        f'<details class="bridge" data-bridge="{_e(b["name"])}"{opened}>'
        f'<summary><span class="bname">{_e(b["name"])}</span> {network} {_state(b["state"])} '
        f"{' '.join(_subnet(s) for s in b['subnets'])} {_addresses(b['addresses'])} "
        f'<span class="count{full}">{_e(b["ports"])}/{_e(b["max_ports"])} ports</span></summary>'
        f'<div class="pairs">{pairs}</div></details>'
    )


def _section(cls: str, title: str, body: str) -> str:
    return f'<section class="{cls}"><h2>{_e(title)}</h2>{body}</section>' if body else ""


def _host(doc: dict) -> str:
    items = "".join(
        f'<li class="hostif"><span class="ifname">{_e(i["name"])}</span> '
        f"{_e(i['kind'] or 'device')} {_state(i['state'])} {_addresses(i['addresses'])}</li>"
        for i in doc["interfaces"]
    )
    return f'<section class="host"><h2>Host interfaces</h2><ul>{items}</ul></section>'


def _alone(doc: dict) -> str:
    """Namespaces with no host veth (macvlan, ipvlan, or only lo), drawn on their own."""
    veths = doc["unattached"] + [v for b in doc["bridges"] for v in b["veths"]]
    attached = {v["namespace"] for v in veths}
    return "".join(
        _namespace(ns, i)
        for ns in doc["namespaces"]
        if ns["id"] not in attached
        for i in (ns["interfaces"] or [None])
    )


def _orphans(doc: dict) -> str:
    return "".join(
        f'<li class="{"orphan" if o["flagged"] else "suspect"}" data-veth="{_e(o["veth"])}">'
        f'<span class="veth">{_e(o["veth"])}</span> on {_e(o["bridge"] or "no bridge")}: '
        f'<span class="reason">{_e(o["reason"])}</span>, for {_e(int(o["age_seconds"]))} s'
        f"{'' if o['flagged'] else ' (within the grace period)'}</li>"
        for o in doc["orphans"]
    )


def counts(doc: dict) -> str:
    veths = sum(len(b["veths"]) for b in doc["bridges"]) + len(doc["unattached"])
    containers = sum(len(ns["containers"]) for ns in doc["namespaces"])
    containers += len(doc["host_network"]) + len(doc["no_network"])
    return (
        f"{len(doc['bridges'])} bridges, {veths} veths, {containers} containers, "
        f"{len(doc['orphans'])} orphans"
    )


def render_main(doc: dict) -> str:
    """The <main> element: what the script swaps in when the revision changes."""
    namespaces = {ns["id"]: ns for ns in doc["namespaces"]}
    warning = (
        ""
        if doc["workloads_known"]
        else '<p class="warn">A runtime did not answer: containers may be missing.</p>'
    )
    orphans = _orphans(doc)
    return (
        f'<main id="topology" data-revision="{_e(doc["revision"])}">{warning}'
        f'<p class="counts">{_e(counts(doc))}</p>{_host(doc)}'
        f'<section class="bridges"><h2>Bridges</h2>'
        f"{''.join(_bridge(b, namespaces) for b in doc['bridges'])}</section>"
        + _section(
            "unattached",
            "Veths on no bridge",
            "".join(_pair(v, namespaces) for v in doc["unattached"]),
        )
        + _section("apart alone", "Namespaces without a host veth", _alone(doc))
        + _section("apart hostnet", "Host network", "".join(map(_container, doc["host_network"])))
        + _section("apart nonet", "No network", "".join(map(_container, doc["no_network"])))
        + _section("orphans", "Orphaned veths", f"<ul>{orphans}</ul>" if orphans else "")
        + "</main>"
    )


STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:0;color:#1d2330;background:#f5f6f8}
header{padding:.6em 1em;background:#1d2330;color:#fff;display:flex;gap:1em;align-items:center;
 flex-wrap:wrap}
header h1{font-size:1.1em;margin:0}header input{padding:.2em .4em}#status{opacity:.8}
header a{color:inherit}main{padding:0 1em 1em}h2{font-size:1em;margin:1em 0 .4em}
.host ul{list-style:none;padding:0;display:flex;flex-wrap:wrap;gap:.4em}
.hostif{background:#fff;border:1px solid #c9ced8;border-radius:4px;padding:.2em .5em}
details.bridge{background:#fff;border:2px solid #3a6ea5;border-radius:6px;margin:.5em 0}
details.bridge>summary{cursor:pointer;padding:.4em .6em;background:#e4edf7}
.bname{font-weight:bold;color:#1e4f85}.network{font-weight:600}
.network.none{font-weight:normal;color:#666}.pairs{padding:.3em .6em}
.pair{display:flex;align-items:flex-start;gap:.4em;border-bottom:1px dashed #dde;padding:.3em 0}
.hostend{min-width:17em}.veth{font-family:monospace;font-weight:600}
.wire{flex:0 0 2.5em;border-top:3px solid #3a6ea5;margin-top:.7em}
.ns{border:1px solid #8a9bb0;border-radius:4px;padding:.2em .5em;background:#fbfcfe;flex:1}
.iface{font-family:monospace}.ifname{font-weight:600}
.container{margin:.1em 0}.cname{font-weight:bold}.image,.cid{color:#666;font-size:.9em}
.project,.pod{background:#eef;border-radius:3px;padding:0 .3em}
.shared{font-size:.85em;color:#462}.addr{font-family:monospace;margin-right:.4em}
.ports{margin:.1em 0;padding-left:1.2em}
.dnat-missing .dnat,.masq-missing{color:#b00;font-weight:bold}
.dnat-present .dnat,.masq-present{color:#270}.masq,.dnat{font-size:.85em}
.state{font-size:.8em;padding:0 .3em;border-radius:3px;background:#ddd}
.state-up{background:#cfe8cf}.state-down,.state-lowerlayerdown{background:#f3d0d0}
.count.full{color:#b00;font-weight:bold}.rates{font-size:.85em;color:#444;margin-left:.4em}
.pair.orphan{background:#fff1e0}.orphan .wire{border-color:#d9822b}
.orphan .why,.orphans .orphan{color:#a5520f;font-weight:600}.suspect .why{color:#8a6d00}
.orphans ul{padding-left:1.2em}
.apart{background:#fff;border:2px dashed #999;border-radius:6px;padding:.3em .6em;margin:.5em 0}
.warn{background:#fff3cd;padding:.4em;border:1px solid #e0c060}.hidden{display:none}
@media print{
 body{background:#fff;font-size:10pt}header{background:none;color:#000;border-bottom:1px solid #000}
 header input,#status{display:none}details.bridge,.apart{border-color:#000}
 .pair{break-inside:avoid}details.bridge>summary{background:none;list-style:none}
 .rates{display:none}.pair.orphan{background:none;outline:2px solid #000}
}
"""

SCRIPT = """
(function () {
  var every = %d * 1000, status = document.getElementById("status"),
      filter = document.getElementById("filter");
  filter.hidden = false;
  function rate(v) {
    if (v === null || v === undefined) return "\\u2013";
    var units = ["B/s", "kB/s", "MB/s"];
    for (var i = 0; i < units.length; i++) {
      if (v < 1000) return i ? v.toFixed(1) + " " + units[i] : v.toFixed(0) + " B/s";
      v /= 1000;
    }
    return v.toFixed(1) + " GB/s";
  }
  var items = ".pair, .apart .container, .orphans li",
      groups = "details.bridge, section.apart, section.unattached, section.orphans";
  function matches(el, terms) {
    var bridge = el.closest("details.bridge"),
        text = (el.textContent + " " + (bridge ? bridge.dataset.bridge : "")).toLowerCase();
    return terms.some(function (t) { return text.indexOf(t) >= 0; });
  }
  function applyFilter() {
    var terms = filter.value.toLowerCase().split(/\\s+/).filter(Boolean), on = terms.length > 0;
    document.querySelectorAll(items).forEach(function (el) {
      el.classList.toggle("hidden", on && !matches(el, terms));
    });
    document.querySelectorAll(groups).forEach(function (g) {
      var shown = Array.prototype.some.call(g.querySelectorAll(items), function (el) {
        return !el.classList.contains("hidden");
      });
      g.classList.toggle("hidden", on && !shown);
    });
  }
  function keepFilter() {
    history.replaceState(null, "", filter.value ? "#filter=" + encodeURIComponent(filter.value) : "#");
    applyFilter();
  }
  function rates(doc) {
    var veths = doc.unattached.slice();
    doc.bridges.forEach(function (b) { veths = veths.concat(b.veths); });
    veths.forEach(function (v) {
      var rx = document.querySelector('[data-rx="' + v.ifindex + '"]'),
          tx = document.querySelector('[data-tx="' + v.ifindex + '"]');
      if (rx) rx.textContent = rate(v.rx_bps);
      if (tx) tx.textContent = rate(v.tx_bps);
    });
  }
  function swap(html) {
    var open = {}, box = document.createElement("div");
    document.querySelectorAll("details.bridge").forEach(function (d) {
      open[d.dataset.bridge] = d.open;
    });
    box.innerHTML = html;
    var fresh = box.querySelector("main");
    if (!fresh) return;
    fresh.querySelectorAll("details.bridge").forEach(function (d) {
      if (d.dataset.bridge in open) d.open = open[d.dataset.bridge];
    });
    document.getElementById("topology").replaceWith(fresh);
    applyFilter();
  }
  function get(url, as) {
    return fetch(url, {cache: "no-store", credentials: "same-origin"}).then(function (r) {
      if (!r.ok) throw new Error("HTTP " + r.status);
      return as === "json" ? r.json() : r.text();
    });
  }
  function tick() {
    get("topology.json", "json")
      .then(function (doc) {
        if (doc.revision === document.getElementById("topology").dataset.revision) {
          rates(doc);
          return;
        }
        return get("topology?fragment=1", "text").then(swap);
      })
      .then(function () { status.textContent = "updated " + new Date().toLocaleTimeString(); })
      .catch(function (e) { status.textContent = "refresh failed: " + e.message; })
      .then(function () { setTimeout(tick, every); });
  }
  if (location.hash.indexOf("#filter=") === 0) {
    filter.value = decodeURIComponent(location.hash.slice(8));
    applyFilter();
  }
  filter.addEventListener("input", keepFilter);
  window.addEventListener("beforeprint", function () {
    document.querySelectorAll("details").forEach(function (d) { d.open = true; });
  });
  setTimeout(tick, every);
})();
""" % (REFRESH_SECONDS,)  # noqa: UP031 (the script's braces would need doubling in an f-string)


def _sha256(text: str) -> str:
    return "sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode()


# Only this page's own script and style apply, even if some value escaped escaping: no inline
# handlers, no other script, no request to another origin.
CSP = (
    f"default-src 'none'; script-src '{_sha256(SCRIPT)}'; style-src '{_sha256(STYLE)}'; "
    "connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)


def render(doc: dict) -> str:
    """The whole page."""
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<noscript><meta http-equiv="refresh" content="{NOSCRIPT_REFRESH_SECONDS}"></noscript>'
        '<link rel="icon" href="data:,">'
        "<title>Container network topology \u2014 dockernet-exporter</title>"
        f"<style>{STYLE}</style></head><body><header><h1>Container network topology</h1>"
        '<input id="filter" type="search" placeholder="filter by name, address" '
        'aria-label="filter" hidden>'
        f'<span id="status">dockernet-exporter {_e(__version__)}</span>'
        '<a href="topology.json">JSON</a></header>'
        f"{render_main(doc)}<script>{SCRIPT}</script></body></html>\n"
    )
