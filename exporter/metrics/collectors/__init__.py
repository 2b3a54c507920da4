"""The collectors and their registry: the flags each declares (see base.py),
and the enabled collectors built with their own options."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from exporter.metrics.collectors.addresses import AddressesCollector
from exporter.metrics.collectors.base import Collector, Context, Option
from exporter.metrics.collectors.bridges import BridgesCollector
from exporter.metrics.collectors.containers import ContainersCollector
from exporter.metrics.collectors.flows import FlowsCollector
from exporter.metrics.collectors.nat import NatCollector
from exporter.metrics.collectors.netstat import NetstatCollector
from exporter.metrics.collectors.orphans import OrphansCollector
from exporter.metrics.collectors.overlay import OverlayCollector
from exporter.metrics.collectors.pods import PodsCollector
from exporter.metrics.collectors.veths import VethsCollector

# Also the order of their families on /metrics.
ALL: tuple[type[Collector], ...] = (
    ContainersCollector,
    PodsCollector,
    VethsCollector,
    NatCollector,
    BridgesCollector,
    AddressesCollector,
    OrphansCollector,
    NetstatCollector,
    OverlayCollector,
    FlowsCollector,
)


def _enabled_dest(c: type[Collector]) -> str:
    return f"collector.{c.name}"


def _option_dest(c: type[Collector], o: Option) -> str:
    return f"collector.{c.name}.{o.name}"


def add_flags(p: argparse.ArgumentParser) -> None:
    """--[no-]collector.<name> for each collector, then --collector.<name>.<option> for each option."""
    for c in ALL:
        p.add_argument(
            f"--collector.{c.name}",
            dest=_enabled_dest(c),
            action=argparse.BooleanOptionalAction,
            default=c.default,
            help=f"enable the {c.name} collector: {c.help} (default: {'on' if c.default else 'off'})",
        )
    for c in ALL:
        for o in c.options:
            p.add_argument(
                f"--collector.{c.name}.{o.name}",
                dest=_option_dest(c, o),
                type=o.type,
                default=o.type(o.default),
                choices=o.choices,
                metavar=None if o.choices else o.name.upper(),
                help=f"{o.help} (default: {o.default})",
            )


def enabled(args: argparse.Namespace, context: Context) -> list[Collector]:
    """The collectors the flags enable, each given its own options only."""
    out = []
    for c in ALL:
        if getattr(args, _enabled_dest(c)):
            make: Callable[..., Collector] = c  # each subclass declares its own keyword options
            out.append(
                make(context, **{o.name: getattr(args, _option_dest(c, o)) for o in c.options})
            )
    return out
