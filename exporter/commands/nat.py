"""`nat`: published ports and masquerading, with the state of the rules that make them work."""

from __future__ import annotations

import argparse
import json
import sys

from .. import nat
from ..sources.netfilter import Netfilter, NetfilterUnavailable
from ..topology import Snapshot

NAME = "nat"
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


def report(snap: Snapshot, ruleset: nat.Ruleset) -> dict:
    """Rule status is 'present', 'missing', or 'none expected' (e.g. an IPv6 binding served by docker-proxy)."""
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
        for p in nat.port_statuses((v.container for v in snap.containers), ruleset)
    ]
    masquerade = [
        {
            "bridge": m.bridge,
            "network": m.network.name,
            "subnet": m.subnet,
            "rule": _status(m),
            "connections": m.connections if m.expected else None,
        }
        for m in nat.masquerade_statuses(snap.networks.values(), ruleset)
    ]
    return {
        "backend": ruleset.backend,
        "published_ports": ports,
        "masquerade": masquerade,
        "unparsed_rules": ruleset.unparsed,
    }


def _status(s) -> str:
    if not s.expected:
        return "none expected"
    return "present" if s.present else "missing"


class NatCommand:
    def add_parser(self, sub) -> None:
        p = sub.add_parser(NAME, help=HELP, description=HELP)
        p.add_argument(
            "--output", "-o", choices=("table", "json"), default="table", help="output format"
        )
        p.set_defaults(run=self.run)

    def run(self, args: argparse.Namespace) -> int:
        from . import format_table, read_snapshot  # the package imports this module first

        try:
            rulesets = Netfilter(args.nat_timeout).read()
        except NetfilterUnavailable as exc:
            sys.stderr.write(f"dockernet-exporter: error: cannot read the firewall rules: {exc}\n")
            return 1
        snap = read_snapshot(args)
        ruleset = nat.choose(
            rulesets, (v.container for v in snap.containers), snap.networks.values()
        )
        data = report(snap, ruleset)
        if args.output == "json":
            json.dump(data, sys.stdout, indent=2, ensure_ascii=False)
            sys.stdout.write("\n")
            return 0
        ports = [
            dict(p, container_id=p["container_id"][:12], connections=_blank(p["connections"]))
            for p in data["published_ports"]
        ]
        masquerade = [dict(m, connections=_blank(m["connections"])) for m in data["masquerade"]]
        sys.stdout.write(
            format_table(PORT_COLUMNS, ports)
            + "\n"
            + format_table(MASQUERADE_COLUMNS, masquerade)
            + f"\nrules read from {data['backend']}\n"
        )
        return 0


def _blank(value) -> str:
    return "" if value is None else str(value)
