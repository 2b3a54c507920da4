"""`nat`: published ports and masquerading, with the state of the rules that make them work."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from exporter.app.flags import duration
from exporter.commands.base import Command, CommandError, Report, Table, read_snapshot
from exporter.sources.firewall.attribution import (
    MasqueradeStatus,
    PortStatus,
    masquerade_statuses,
    port_statuses,
)
from exporter.sources.firewall.rules import NetfilterUnavailable, Ruleset

if TYPE_CHECKING:
    from exporter.core.topology import Snapshot

HELP = (
    "list published ports with their DNAT rule status and connection count, "
    "then masquerading per bridge with its rule status and count"
)
PORT_COLUMNS = [
    ("container_id", "CONTAINER ID"),
    ("container_name", "NAME"),
    ("protocol", "PROTOCOL"),
    ("host_ip", "HOST IP"),
    ("host_port", "HOST PORT"),
    ("container_port", "CONTAINER PORT"),
    ("rule", "DNAT RULE"),
    ("connections", "CONNECTIONS"),
]
MASQUERADE_COLUMNS = [
    ("bridge", "BRIDGE"),
    ("network", "NETWORK"),
    ("subnet", "SUBNET"),
    ("rule", "MASQUERADE RULE"),
    ("connections", "CONNECTIONS"),
]


def report(snap: Snapshot, ruleset: Ruleset) -> dict:
    """Rule status is 'present', 'missing', or 'none expected' (e.g. an IPv6 binding served by
    docker-proxy)."""
    ports = [
        {
            "container_id": p.container.id,
            "container_name": p.container.name,
            "protocol": p.binding.protocol,
            "host_ip": p.binding.host_ip,
            "host_port": p.binding.host_port,
            "container_port": p.binding.container_port,
            "rule": _status(p),
            "connections": p.connections if p.expected else None,
        }
        for p in port_statuses((v.container for v in snap.containers), ruleset)
    ]
    masquerade = [
        {
            "bridge": m.bridge,
            "network": m.network.name,
            "subnet": m.subnet,
            "rule": _status(m),
            "connections": m.connections if m.expected else None,
        }
        for m in masquerade_statuses(snap.networks.values(), ruleset)
    ]
    return {
        "backend": ruleset.backend,
        "published_ports": ports,
        "masquerade": masquerade,
        "unparsed_rules": ruleset.unparsed,
    }


def _status(s: PortStatus | MasqueradeStatus) -> str:
    if not s.expected:
        return "none expected"
    return "present" if s.present else "missing"


class NatCommand(Command):
    name = "nat"
    help = HELP

    def add_arguments(self, p: argparse.ArgumentParser) -> None:
        super().add_arguments(p)
        p.add_argument(
            "--timeout",
            type=duration,
            default="5s",
            help="timeout of the iptables-save / nft commands (default: 5s)",
        )

    def report(self, args: argparse.Namespace) -> Report:
        from exporter.sources.firewall.reader import read_once  # here: the daemon builds the flags

        snap = read_snapshot(args)
        try:
            ruleset = read_once(snap, args.timeout)
        except NetfilterUnavailable as exc:
            raise CommandError(f"cannot read the firewall rules: {exc}") from None
        data = report(snap, ruleset)
        tables = [
            Table(PORT_COLUMNS, data["published_ports"]),
            Table(MASQUERADE_COLUMNS, data["masquerade"]),
        ]
        return Report(data, tables, footer=f"rules read from {data['backend']}")
