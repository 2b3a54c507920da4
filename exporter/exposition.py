"""Prometheus text exposition (format 0.0.4), rendered without per-sample
validation: label sets are escaped once when a snapshot is built and reused
for every scrape until the topology changes.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterable, Union

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

Number = Union[int, float]


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


@dataclass
class Family:
    name: str
    type: str               # counter | gauge | info is rendered as gauge
    help: str
    samples: list[tuple[str, Number]] = field(default_factory=list)

    def add(self, label_set: str, v: Number) -> "Family":
        self.samples.append((label_set, v))
        return self


def render(families: Iterable[Family]) -> str:
    out = []
    for f in families:
        help_text = f.help.replace("\\", "\\\\").replace("\n", "\\n")
        out.append(f"# HELP {f.name} {help_text}\n# TYPE {f.name} {f.type}\n")
        name = f.name
        out.extend(f"{name}{ls} {value(v)}\n" for ls, v in f.samples)
    return "".join(out)
