"""The services the collectors, the commands and the topology page share: the owner rule of
exporter.core.queries, and one firewall-rules reader (sources/firewall_rules.py) for the NAT
collector, the page and the commands, on the golden test's scene."""

from __future__ import annotations

from types import SimpleNamespace
from typing import TYPE_CHECKING, cast

from golden_scene import firewall_commands, golden_state

from exporter.app import service
from exporter.commands import nat
from exporter.commands.base import owner_fields
from exporter.core import topology
from exporter.core.model import Workload
from exporter.core.queries import owner, owner_columns
from exporter.metrics.collectors.nat import NatCollector
from exporter.metrics.exposition import render
from exporter.sources.firewall.reader import read_once
from helpers import parse_metrics

if TYPE_CHECKING:
    from exporter.state.daemon import Daemon

CONTAINER = Workload(id="c" * 64, name="web")
POD = Workload(
    id="s" * 64, name="shop_web", runtime="containerd", pod_namespace="shop", pod_name="web"
)


def test_a_pod_is_its_namespace_and_pod_a_container_its_id_and_name():
    assert owner(CONTAINER) == {"container_id": "c" * 64, "container_name": "web"}
    assert owner(POD) == {"namespace": "shop", "pod": "web"}
    empty = dict.fromkeys(("container_id", "container_name", "namespace", "pod"), "")
    assert owner_columns(None) == empty
    assert owner_columns(POD) == dict(empty, namespace="shop", pod="web")
    assert list(owner_columns(CONTAINER)) == list(empty)
    assert owner_fields(POD) == dict(empty, namespace="shop", pod="web", sandbox_id="s" * 64)
    assert owner_fields(CONTAINER) == owner_columns(CONTAINER)


def test_the_page_reads_the_rules_through_the_nat_collectors_reader():
    collector = NatCollector()
    daemon = cast(
        "Daemon", SimpleNamespace(snapshot=topology.empty())
    )  # the page reads its snapshot
    page = service.topology_page(daemon, [collector])
    assert page.nat is collector.firewall
    assert service.topology_page(daemon, []).nat is None


def test_the_nat_command_reports_the_rules_a_scrape_serves(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(firewall_commands(tmp_path / "bin")))
    snap = topology.build(golden_state())
    served = parse_metrics(render(NatCollector().collect(snap)))
    present = {
        (l["container_id"], l["host_ip"], l["host_port"]): v
        for l, v in served["dockernet_published_port_rule_present"]
    }
    report = nat.report(snap, read_once(snap))
    assert report["backend"] == "iptables-nft"
    reported = {
        (p["container_id"], p["host_ip"], str(p["host_port"])): int(p["rule"] == "present")
        for p in report["published_ports"]
        if p["rule"] != "none expected"
    }
    assert reported == present and len(present) == 6
