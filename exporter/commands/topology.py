"""`topology`: the host's container network as a tree: each bridge, then its veths with the
interface, addresses and containers at the other end; veths on no bridge, host-network and
no-network containers and orphans after. `--output json` prints the document /topology.json serves
(docs/topology.md).

A one-shot read cannot know how long a veth has looked orphaned: every suspect in scope is marked
with its reason.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import TYPE_CHECKING

from exporter.commands.base import Command, CommandError, Report, read_snapshot, write
from exporter.commands.orphans import add_scope_flag
from exporter.core.names import terminal_text
from exporter.views import flows as flows_view
from exporter.views import overlay as overlay_view

if TYPE_CHECKING:
    from exporter.core.topology import Snapshot
    from exporter.sources.firewall.rules import Ruleset

HELP = (
    "draw the host's container network as a tree: bridges, their veths, the containers and "
    "addresses behind them, published ports with their DNAT rule, orphans"
)


class TopologyCommand(Command):
    name = "topology"
    help = HELP

    def add_arguments(self, p: argparse.ArgumentParser) -> None:
        super().add_arguments(p)
        add_scope_flag(p)
        p.add_argument(
            "--no-nat",
            dest="nat",
            action="store_false",
            help="do not read the firewall (DNAT and MASQUERADE rules show as unknown)",
        )
        p.add_argument(
            "--flows",
            action="store_true",
            help="read the host's conntrack table once and add the connections between workloads "
            "open now (as the flows command; needs CAP_NET_ADMIN)",
        )

    def report(self, args: argparse.Namespace) -> Report:
        # here: the daemon's parser builds every command's flags
        from exporter.views import document as topology_view
        from exporter.views.page import read_host_addresses

        snap = read_snapshot(args)
        options = topology_view.Options(
            rules=read_rules(snap) if args.nat else None,
            host_addresses=tuple(read_host_addresses()),
            scope=args.scope,
            grace=0.0,
            flows=read_flows(snap, args.procfs) if args.flows else None,
        )
        return Report(topology_view.document(snap, time.monotonic(), options), [])

    def run(self, args: argparse.Namespace) -> int:
        report = self.report(args)
        if args.output == "json":
            write(report, args.output)
        else:
            sys.stdout.write(tree(report.data))
        return 0


def read_flows(snap: Snapshot, procfs: str) -> flows_view.Reading:
    """The conntrack table as it is, or why it could not be read."""
    from exporter.commands.flows import read_table

    try:
        return flows_view.Reading(tuple(read_table(snap, procfs, 0.0, 3.0).series.items()))
    except CommandError as exc:
        return flows_view.Reading(error=str(exc))


def read_rules(snap: Snapshot) -> Ruleset | None:
    """One read of the firewall, as a scrape reads it (None: unreadable)."""
    from exporter.sources.firewall.reader import read_once

    try:
        return read_once(snap)
    except (OSError, ValueError):
        return None


# -- the tree ---------------------------------------------------------------------------------

BRANCH, LAST = ("\u251c\u2500\u2500 ", "\u2502   "), ("\u2514\u2500\u2500 ", "    ")


def _addresses(addresses: list[dict]) -> str:
    return " ".join(f"{a['address']}/{a['prefix_length']}" for a in addresses)


def _container(c: dict) -> str:
    parts = [c["name"], f"({c['image']})" if c["image"] else ""]
    if c["pod"]:
        parts.append(f"pod={c['pod']['namespace']}/{c['pod']['name']}")
    if c["compose_project"]:
        parts.append(f"project={c['compose_project']}")
    for p in c["ports"]:
        parts.append(
            f"{p['host_ip'] or '*'}:{p['host_port']}->{p['container_port']}/{p['protocol']}"
            f" dnat={p['dnat']}"
        )
    return " ".join(x for x in parts if x)


def _veth_line(v: dict, ns: dict | None) -> str:
    head = f"{v['name']} [{v['state']}]"
    if ns is not None:
        i = next((i for i in ns["interfaces"] if i["veth_ifindex"] == v["ifindex"]), None)
        if i is not None:
            head += f" <-> {i['name']} [{i['state']}] {_addresses(i['addresses'])}"
    elif v["orphan"] is not None:
        head += f" !! ORPHAN {v['orphan']['reason']}"
    elif v["interface"]:
        head += f" -> {v['interface']}"
    return head.rstrip()


def _pair(v: dict, namespaces: dict[str, dict], last: bool) -> list[str]:
    """A veth's line, then one per container of the namespace at its other end."""
    branch, indent = LAST if last else BRANCH
    ns = namespaces.get(v["namespace"]) if v["namespace"] else None
    lines = [branch + _veth_line(v, ns)]
    members = ns["containers"] if ns is not None else []
    for n, c in enumerate(members):
        shared = "  (shared namespace)" if ns and ns["shared"] and n == 0 else ""
        mark = LAST[0] if n == len(members) - 1 else BRANCH[0]
        lines.append(f"{indent}{mark}{_container(c)}{shared}")
    return lines


def _bridge_line(b: dict) -> str:
    parts = [f"{b['name']} [{b['state']}]"]
    if b["network"]:
        parts.append(f"network={b['network']}")
    parts += [f"{s['subnet']} gw {s['gateway']} masquerade={s['masquerade']}" for s in b["subnets"]]
    parts.append(f"ports {b['ports']}/{b['max_ports']}")
    return " ".join(parts)


def _group(title: str, lines_of: list[list[str]]) -> list[str]:
    return [title] + [line for lines in lines_of for line in lines] if lines_of else []


def _containers(title: str, containers: list[dict]) -> list[str]:
    return _group(
        title,
        [
            [(LAST if n == len(containers) - 1 else BRANCH)[0] + _container(c)]
            for n, c in enumerate(containers)
        ],
    )


def tree(doc: dict) -> str:
    """The terminal picture: one line per bridge, veth and container, whatever the names hold
    (each line's control and bidirectional characters are shown escaped)."""
    namespaces = {ns["id"]: ns for ns in doc["namespaces"]}
    lines: list[str] = []
    for b in doc["bridges"]:
        veths = b["veths"]
        lines += _group(
            _bridge_line(b),
            [_pair(v, namespaces, n == len(veths) - 1) for n, v in enumerate(veths)],
        ) or [_bridge_line(b)]
    loose = doc["unattached"]
    lines += _group(
        "(no bridge)", [_pair(v, namespaces, n == len(loose) - 1) for n, v in enumerate(loose)]
    )
    lines += _containers("host network", doc["host_network"])
    lines += _containers("no network", doc["no_network"])
    lines += _group("overlay networks", overlay_view.tree_lines(doc.get("overlays", [])))
    lines += flows_view.tree_lines(doc.get("flows"))
    lines += _group(
        "orphans",
        [[f"  !! {o['veth']} on {o['bridge'] or '-'}: {o['reason']}"] for o in doc["orphans"]],
    )
    if not doc["workloads_known"]:
        lines.append("warning: a runtime did not answer; containers may be missing")
    return "\n".join(terminal_text(line) for line in lines) + "\n"
