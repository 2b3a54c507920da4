"""Prometheus text exposition (format 0.0.4), rendered without per-sample
validation: label sets are escaped once when a snapshot is built and reused
for every scrape until the topology changes.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

Number = int | float


def escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def labels(**pairs: object) -> str:
    """A rendered label set, '{a="1",b="x"}', in the given order."""
    if not pairs:
        return ""
    return "{" + ",".join(f'{k}="{escape(str(v))}"' for k, v in pairs.items()) + "}"


def value(v: Number) -> str:
    if isinstance(v, int):
        return str(v)
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    return repr(v)


K = TypeVar("K", bound=Hashable)
O = TypeVar("O")
R = TypeVar("R")


class LabelCache(Generic[K, O, R]):
    """Label sets (or a list of them) rendered from objects that outlive a snapshot, rendered again only
    when the object under a key differs from the one the previous call saw (the same object, or an
    equal one: a tuple of the same objects compares fast). The topology hands unchanged veths,
    interfaces and ports on as the same objects, so a new snapshot re-renders only what changed. Each
    call swaps in a new table whole, so concurrent scrapes can only miss, never mix up, an entry."""

    def __init__(self, render: Callable[[K, O], R]) -> None:
        self._render = render
        self._table: dict[K, tuple[O, R]] = {}

    def rendered(self, keyed: Iterable[tuple[K, O]]) -> list[R]:
        table, fresh, out = self._table, {}, []
        for key, obj in keyed:
            hit = table.get(key)
            if hit is None or not (hit[0] is obj or hit[0] == obj):
                hit = (obj, self._render(key, obj))
            fresh[key] = hit
            out.append(hit[1])
        self._table = fresh
        return out


def sample_head(name: str, label_set: str) -> str:
    """A sample line's text up to its value: kept while the label set stays (sample_lines)."""
    return f"{name}{label_set} "


def sample_lines(heads: Sequence[str], values: Iterable[int]) -> list[str]:
    """The sample lines of a family whose label sets stay while its values change (counters), as
    the pieces that render() joins with the rest of the text: each line's head (sample_head),
    rendered once, its value and a newline, with no Python operation per sample. One value per
    head, in the same order."""
    parts = ["\n"] * (3 * len(heads))
    parts[::3] = heads
    parts[1::3] = map(str, values)
    return parts


@dataclass
class Family:
    name: str
    type: str  # counter | gauge | info is rendered as gauge
    help: str
    samples: list[tuple[str, Number]] = field(default_factory=list)
    # Set on a family kept in snapshot.cache: its text is rendered once and reused by every scrape.
    static: bool = False
    # Sample lines as sample_lines() gives them, after those of `samples`.
    lines: list[str] = field(default_factory=list)
    _text: str = field(default="", init=False, repr=False, compare=False)

    def add(self, label_set: str, v: Number) -> Family:
        self.samples.append((label_set, v))
        return self


def render(families: Iterable[Family], *after: str) -> str:
    """The families' text, then the texts `after`, in one join: a text of a megabyte or more costs
    more in each fresh copy of it (the memory it takes) than in rendering its lines."""
    out: list[str] = []
    for f in families:
        if not f.static:
            _pieces(f, out)
        elif f._text:
            out.append(f._text)
        else:
            f._text = "".join(_pieces(f, []))
            out.append(f._text)
    out += after
    return "".join(out)


def _pieces(f: Family, out: list[str]) -> list[str]:
    """The family's text, appended to `out` as pieces."""
    help_text = f.help.replace("\\", "\\\\").replace("\n", "\\n")
    name = f.name
    out.append(f"# HELP {name} {help_text}\n# TYPE {name} {f.type}\n")
    # Most samples are ints (counters, info): format them without a call per sample.
    out += [f"{name}{ls} {v if type(v) is int else value(v)}\n" for ls, v in f.samples]
    out += f.lines
    return out
