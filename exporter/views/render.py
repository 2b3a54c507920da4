"""The topology page's HTML: pure functions of the document (views/document.py), from the Jinja2
templates in templates/ with automatic escaping (every name, label and value is text, in content
and in attributes), with the style and script of static/ inline. Those two are read once, at
import, and the Content-Security-Policy admits exactly them, by their SHA-256: only this page's own
script and style apply, even if some value escaped escaping.

The rates are formatted here alone (``rate``, ``per_second``): the page is complete without
JavaScript, and its script copies the server's text of each rate in place."""

from __future__ import annotations

import base64
import functools
import hashlib
from importlib import resources
from typing import TYPE_CHECKING

from exporter import __version__

if TYPE_CHECKING:
    import jinja2

REFRESH_SECONDS = 5
NOSCRIPT_REFRESH_SECONDS = 30
COLLAPSE_AT = 64  # a bridge with this many veths or more starts closed
NO_RATE = "\u2013"  # en dash
VIEWS = resources.files("exporter.views")


def rate(value: float | None) -> str:
    """Bytes per second, in decimal units."""
    if value is None:
        return NO_RATE
    for unit in ("B/s", "kB/s", "MB/s"):
        if value < 1000:
            return f"{value:.0f} {unit}" if unit == "B/s" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} GB/s"


def per_second(value: float | None) -> str:
    """Connections opened per second."""
    return NO_RATE if value is None else f"{value:.1f}/s"


def counts(doc: dict) -> str:
    veths = sum(len(b["veths"]) for b in doc["bridges"]) + len(doc["unattached"])
    containers = sum(len(ns["containers"]) for ns in doc["namespaces"])
    containers += len(doc["host_network"]) + len(doc["no_network"])
    return (
        f"{len(doc['bridges'])} bridges, {veths} veths, {containers} containers, "
        f"{len(doc['orphans'])} orphans"
    )


def alone(doc: dict) -> list[tuple[dict, dict | None]]:
    """Namespaces with no host veth (macvlan, ipvlan, or only lo), each with its interfaces."""
    veths = doc["unattached"] + [v for b in doc["bridges"] for v in b["veths"]]
    attached = {v["namespace"] for v in veths}
    return [
        (ns, i)
        for ns in doc["namespaces"]
        if ns["id"] not in attached
        for i in (ns["interfaces"] or [None])
    ]


def sha256(text: str) -> str:
    return "sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode()


STYLE = (VIEWS / "static" / "topology.css").read_text()
SCRIPT = (VIEWS / "static" / "topology.js").read_text()
# No inline handlers, no other script, no request to another origin.
CSP = (
    f"default-src 'none'; script-src '{sha256(SCRIPT)}'; style-src '{sha256(STYLE)}'; "
    "connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)


@functools.cache
def environment() -> jinja2.Environment:
    """The templates' environment, made at the first page drawn (Jinja2 loads then, not when the
    `topology` command imports the page's model)."""
    import jinja2
    from markupsafe import Markup

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("exporter.views", "templates"),
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
        finalize=lambda value: "" if value is None else value,
        undefined=jinja2.StrictUndefined,
    )
    env.filters["rate"] = rate
    env.filters["per_second"] = per_second
    env.globals.update(
        version=__version__,
        refresh=REFRESH_SECONDS,
        noscript_refresh=NOSCRIPT_REFRESH_SECONDS,
        collapse_at=COLLAPSE_AT,
        style=Markup(STYLE),  # noqa: S704 (our own file, hashed into the policy above)
        script=Markup(SCRIPT),  # noqa: S704
        counts=counts,
        alone=alone,
    )
    return env


def render(doc: dict) -> str:
    """The whole page."""
    return environment().get_template("topology.html").render(doc=doc, namespaces=_by_id(doc))


def render_main(doc: dict) -> str:
    """The <main> element: what the script swaps in when the revision changes."""
    return environment().get_template("main.html").render(doc=doc, namespaces=_by_id(doc))


def _by_id(doc: dict) -> dict[str, dict]:
    return {ns["id"]: ns for ns in doc["namespaces"]}
