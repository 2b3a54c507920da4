"""The dashboards and rules against a real Prometheus (Debian's package)
scraping the real exporter every second, while our own containers exchange
traffic and publish a port, beside a pod of the real containerd (made through the
CRI) for the pod dashboard, and three faults are made on purpose: an orphaned
veth pair on our network's bridge, our published port's DNAT rule deleted,
our network's MASQUERADE rule deleted.

Every panel and variable query of every dashboard and every rule expression
is evaluated through Prometheus's HTTP API: each must parse, panel and
recording queries must return data, and the fault alerts must be pending or
firing exactly while their fault is present.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import requests
import yaml

from cri_helpers import CRI_SOCKET, CriPods, cri_ready
from helpers import Containers, ExporterProcess, free_port, sh, unique, wait_for

if TYPE_CHECKING:
    from docker import DockerClient

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "grafana/prometheus/dockernet.rules.yml"
DASHBOARDS = sorted((ROOT / "grafana/dashboards").glob("*.json"))
PROMETHEUS = "/usr/bin/prometheus"
JOB = "dockernet"  # the job name grafana/mixin/config.py selects
# Grafana's variables as a user who selects "All" sees them.
VARIABLES = {
    "$__rate_interval": "10s",
    "$instance": ".+",
    "$container": ".*",
    "$project": ".*",
    "$namespace": ".*",
    "$pod": ".+",
    "$network": ".*",
}
# Metrics the dashboards and rules use that the exporter does not serve yet: their queries must parse
# but may return nothing. Empty: every metric of the contracts (issues 2, 3 and 4) is served.
NOT_LANDED: tuple = ()
# Served only on a Swarm node with an overlay network (this stack's host is none): parsed and
# evaluated, not required to return data; tests/integration/test_overlay*.py check them on nodes.
SWARM_ONLY = ("dockernet_overlay_",)
FAULT_ALERTS = (
    "DockernetOrphanedVeth",
    "DockernetPublishedPortRuleMissing",
    "DockernetMasqueradeRuleMissing",
)


class Prometheus:
    def __init__(self, workdir: Path, target: str) -> None:
        self.url = f"http://127.0.0.1:{free_port()}"
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(RULES)],
            "scrape_configs": [{"job_name": JOB, "static_configs": [{"targets": [target]}]}],
        }
        (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.log = open(workdir / "prometheus.log", "w+")
        self.proc = subprocess.Popen(
            [
                PROMETHEUS,
                f"--config.file={workdir / 'prometheus.yml'}",
                f"--storage.tsdb.path={workdir / 'data'}",
                f"--web.listen-address={self.url.removeprefix('http://')}",
                "--log.level=warn",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    def wait_ready(self) -> None:
        wait_for(self._ready, 30, what="prometheus /-/ready")

    def _ready(self) -> bool:
        assert self.proc.poll() is None, f"prometheus exited: {Path(self.log.name).read_text()}"
        try:
            return requests.get(self.url + "/-/ready", timeout=1).status_code == 200
        except requests.RequestException:
            return False

    def api(self, path: str, **params: str) -> dict:
        r = requests.get(f"{self.url}/api/v1/{path}", params=params, timeout=10)
        body = r.json()
        assert body["status"] == "success", f"{path} {params}: {body.get('error')}"
        return body["data"]

    def query(self, expr: str) -> list:
        return self.api("query", query=expr)["result"]

    def active(self, alertname: str, **labels: object) -> list:
        return [
            a
            for a in self.api("alerts")["alerts"]
            if a["labels"]["alertname"] == alertname
            and all(a["labels"].get(k) == v for k, v in labels.items())
        ]

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)
        self.log.close()


class Stack:
    """Our network with a server publishing a port, a client pinging it and a container whose interface
    is down; a pod; the exporter; Prometheus."""

    def __init__(self, docker_client: DockerClient) -> None:
        self.containers = Containers(docker_client)
        self.pods = CriPods()
        self.exporter: ExporterProcess | None = None
        self.prometheus: Prometheus | None = None

    def start(self, workdir: Path) -> None:
        # Our containers, still being set up, are no orphans. The netstat collector, on by
        # default, feeds the TCP and UDP health rows.
        self.exporter = exporter = ExporterProcess(
            "--collector.orphans.grace=5s", "--collector.flows", f"--cri.endpoint={CRI_SOCKET}"
        )
        exporter.wait_ready()
        self.prometheus = prometheus = Prometheus(workdir, exporter.url.removeprefix("http://"))
        prometheus.wait_ready()
        self.pod = self.pods.run(namespace=unique("dnxns"))
        net = self.containers.network()
        net.reload()
        self.bridge = "br-" + net.short_id
        self.subnet = net.attrs["IPAM"]["Config"][0]["Subnet"]
        self.host_port = free_port()
        self.project = unique("dnxproj")  # as docker compose labels its containers
        compose = {
            "com.docker.compose.project": self.project,
            "com.docker.compose.service": "server",
        }
        self.server = self.containers.run(
            command="httpd -f -p 8080 -h /",
            network=net.name,
            labels=compose,
            ports={"8080/tcp": ("127.0.0.1", self.host_port)},
        )
        address = self.server.attrs["NetworkSettings"]["Networks"][net.name]["IPAddress"]
        self.client = self.containers.run(command=f"ping -i 0.2 {address}", network=net.name)
        # a container whose eth0 is down: its bridge port is disabled, a port that does not forward
        self.containers.run(
            command="sh -c 'ip link set eth0 down && exec sleep 3600'",
            network=net.name,
            cap_add=["NET_ADMIN"],
        )

    def stop(self) -> None:
        self.containers.cleanup()
        self.pods.cleanup()
        for process in (self.prometheus, self.exporter):
            if process is not None:
                process.stop()


@pytest.fixture(scope="module")
def stack(docker_client, tmp_path_factory):
    if not cri_ready():
        pytest.fail(f"no CRI at {CRI_SOCKET}; run `make test-env` (as root) first")
    s = Stack(docker_client)
    try:
        s.start(tmp_path_factory.mktemp("prometheus"))
        yield s
    finally:
        s.stop()


def nat_rule(chain: str, *words: str) -> list:
    """The one rule of the nat chain with all these words, as iptables -S prints it (without -A CHAIN)."""
    rules = [
        shlex.split(line)[2:]
        for line in sh("iptables", "-t", "nat", "-S", chain).splitlines()
        if line.startswith("-A ") and all(f" {w} " in f" {line} " for w in words)
    ]
    assert len(rules) == 1, f"expected one {chain} rule with {words}, found {rules}"
    return rules[0]


@contextmanager
def deleted(chain: str, rule: list[str]) -> Iterator[None]:
    sh("iptables", "-t", "nat", "-D", chain, *rule)
    try:
        yield
    finally:
        sh("iptables", "-t", "nat", "-A", chain, *rule)


@contextmanager
def orphan_pair(bridge: str) -> Iterator[tuple[str, str]]:
    """A veth pair left in the host namespace (reason peer_in_host), one end on our Docker bridge."""
    tag = unique("")[1:]
    ends = (f"dnxo-{tag}", f"dnxp-{tag}")
    sh("ip", "link", "add", ends[0], "type", "veth", "peer", "name", ends[1])
    try:
        sh("ip", "link", "set", ends[0], "master", bridge)
        yield ends
    finally:
        sh("ip", "link", "del", ends[0], check=False)


@contextmanager
def faults(stack: Stack) -> Iterator[tuple[str, str]]:
    dnat = nat_rule("DOCKER", "--dport", str(stack.host_port), "DNAT")
    masquerade = nat_rule("POSTROUTING", stack.subnet, "MASQUERADE")
    with (
        orphan_pair(stack.bridge) as ends,
        deleted("DOCKER", dnat),
        deleted("POSTROUTING", masquerade),
    ):
        yield ends


def fault_alerts(stack: Stack, orphan: str = "") -> dict:
    """Our objects' fault alerts that are pending or firing, by alert name."""
    p = stack.prometheus
    assert p is not None
    found = {
        "DockernetOrphanedVeth": p.active("DockernetOrphanedVeth", bridge=stack.bridge)
        + (p.active("DockernetOrphanedVeth", veth=orphan) if orphan else []),
        "DockernetPublishedPortRuleMissing": p.active(
            "DockernetPublishedPortRuleMissing", container_name=stack.server.name
        ),
        "DockernetMasqueradeRuleMissing": p.active(
            "DockernetMasqueradeRuleMissing", bridge=stack.bridge
        ),
    }
    return {name: alerts for name, alerts in found.items() if alerts}


def wait_for_every_fault_alert(stack: Stack, peer: str) -> dict:
    """The active fault alerts, once all three faults (both orphan ends) are seen."""
    seen: dict = {}

    def complete() -> bool:
        seen.clear()
        seen.update(fault_alerts(stack, peer))
        return len(seen) == 3 and len(seen["DockernetOrphanedVeth"]) == 2

    try:
        wait_for(complete, 30)
    except pytest.fail.Exception:
        pytest.fail(f"not all of {FAULT_ALERTS} pending or firing after 30 s; seen: {sorted(seen)}")
    return seen


def wait_until_healthy_state_is_scraped(stack: Stack) -> None:
    name, p = stack.server.name, stack.prometheus
    assert p is not None
    wait_for(
        lambda: p.query(f'dockernet_published_port_rule_present{{container_name="{name}"}} == 1'),
        30,
        what="our published port's DNAT rule seen present",
    )
    wait_for(
        lambda: p.query(f'dockernet_masquerade_rule_present{{bridge="{stack.bridge}"}} == 1'),
        10,
        what="our bridge's MASQUERADE rule seen present",
    )
    wait_for(
        lambda: p.query(
            f"container_interface:dockernet_container_receive_bytes:rate5m"
            f'{{container_name="{name}"}} > 0'
        ),
        20,
        what="our server's traffic recorded",
    )
    wait_for(
        lambda: p.query(
            f'pod_interface:dockernet_pod_receive_bytes:rate5m{{pod="{stack.pod.name}"}}'
        ),
        what="our pod's traffic recorded",
    )


def test_fault_alerts_are_active_exactly_while_the_fault_is_present(stack):
    wait_until_healthy_state_is_scraped(stack)
    assert fault_alerts(stack) == {}, "an alert about our healthy objects"
    with faults(stack) as (orphan, peer):
        active = wait_for_every_fault_alert(stack, peer)
        assert {a["state"] for alerts in active.values() for a in alerts} <= {"pending", "firing"}
        assert {a["labels"]["veth"] for a in active["DockernetOrphanedVeth"]} == {orphan, peer}
        assert {a["labels"]["reason"] for a in active["DockernetOrphanedVeth"]} == {"peer_in_host"}
        (port,) = active["DockernetPublishedPortRuleMissing"]
        assert port["labels"]["host_port"] == str(stack.host_port)
        assert (
            f"127.0.0.1:{stack.host_port}/tcp of container {stack.server.name}"
            in port["annotations"]["summary"]
        )
        (masq,) = active["DockernetMasqueradeRuleMissing"]
        assert masq["labels"]["subnet"] == stack.subnet
    wait_for(lambda: fault_alerts(stack, peer) == {}, what="the fault alerts cleared")


def substitute(expr: str) -> str:
    for name in sorted(VARIABLES, key=len, reverse=True):
        expr = expr.replace(name, VARIABLES[name])
    assert "$" not in expr, f"unknown variable in {expr}"
    return expr


def dashboard_queries() -> list:
    """(dashboard, panel, target or variable) for every query of every dashboard."""
    out = []
    for path in DASHBOARDS:
        dash = json.loads(path.read_text())
        for v in dash["templating"]["list"]:
            if v["type"] == "query":
                out.append((dash, {"type": "variable", "title": v["name"]}, v))
        for panel in dash["panels"]:
            for t in panel.get("targets", []):
                out.append((dash, panel, t))
    return out


def lands(expr: str) -> bool:
    return not any(m in expr for m in NOT_LANDED + SWARM_ONLY)


def check_variable(p: Prometheus, where: str, variable: dict) -> None:
    m = re.fullmatch(r"label_values\((.*), (\w+)\)", variable["query"]["query"], re.S)
    assert m, f"{where}: {variable['query']['query']}"
    result = p.query(substitute(m.group(1)))
    found = any(m.group(2) in s["metric"] for s in result)
    assert found or not lands(m.group(1)), f"{where}: no values"


def check_panel_target(p: Prometheus, where: str, panel: dict, target: dict) -> None:
    result = p.query(substitute(target["expr"]))
    assert result or not lands(target["expr"]), f"{where}: no data for {target['expr']}"
    if panel["type"] in ("timeseries", "bargauge") and any(
        s["metric"].get("container_name") for s in result
    ):
        assert "{{container_name}}" in target["legendFormat"], (
            f"{where}: legend does not name the container"
        )
    if panel["type"] in ("timeseries", "bargauge") and any(s["metric"].get("pod") for s in result):
        assert "{{pod}}" in target["legendFormat"], f"{where}: legend does not name the pod"
    if panel["type"] == "table":
        columns = panel["transformations"][0]["options"]["include"]["names"]
        missing = [c for c in columns if c != "Value" and not any(c in s["metric"] for s in result)]
        assert not missing or not lands(target["expr"]), (
            f"{where}: no column {missing} in the result"
        )


def test_every_dashboard_and_rule_query_evaluates_with_data(stack):
    wait_until_healthy_state_is_scraped(stack)
    p = stack.prometheus
    assert p is not None
    with faults(stack) as (_, peer):
        wait_for_every_fault_alert(stack, peer)
        wait_for(
            lambda: p.query("veth:dockernet_veth_orphaned:first_seen_timestamp_seconds"),
            10,
            what="orphan first sighting recorded",
        )
        for dash, panel, t in dashboard_queries():
            where = f"{dash['title']} / {panel['title']}"
            if panel["type"] == "variable":
                check_variable(p, where, t)
            else:
                check_panel_target(p, where, panel, t)
        groups = p.api("rules")["groups"]
        for rule in (r for g in groups for r in g["rules"]):
            assert rule["health"] == "ok", f"{rule['name']}: {rule.get('lastError')}"
            result = p.query(rule["query"])  # parses and evaluates
            if rule["type"] == "recording":
                assert result or not lands(rule["query"]), f"{rule['name']} records nothing"
    assert {r["name"] for g in groups for r in g["rules"]} >= set(FAULT_ALERTS)
    if NOT_LANDED:
        print(
            f"queries of metrics not served yet (parsed, not required to return data): {NOT_LANDED}"
        )


HEALTH_ROW = "TCP and UDP health"


def health_row(dash: dict) -> list:
    """The panels of a dashboard's TCP, UDP and conntrack health row."""
    out, inside = [], False
    for panel in dash["panels"]:
        if panel["type"] == "row":
            inside = panel["title"] == HEALTH_ROW
        elif inside:
            out.append(panel)
    return out


def test_the_health_rows_show_our_workloads_with_the_default_collectors(stack):
    """No "No data" in the TCP, UDP and conntrack rows of a default exporter: each query of the
    container dashboard's row has a series of our server, each of the pod dashboard's one of our
    pod, and the host conntrack table a value."""
    wait_until_healthy_state_is_scraped(stack)
    p = stack.prometheus
    assert p is not None
    owners = {
        "dockernet-container-network": ("container_name", stack.server.name),
        "dockernet-pod-network": ("pod", stack.pod.name),
    }
    for path in DASHBOARDS:
        dash = json.loads(path.read_text())
        if path.stem not in owners:
            continue
        label, name = owners[path.stem]
        panels = health_row(dash)
        assert {"TCP retransmit ratio", "UDP errors", "Host conntrack table"} <= {
            panel["title"] for panel in panels
        }
        for panel in panels:
            for t in panel["targets"]:
                expr = substitute(t["expr"])
                where = f"{dash['title']} / {panel['title']}"
                if "dockernet_conntrack_entries" in expr:
                    assert p.query(expr), f"{where}: no data"
                    continue
                if "dockernet_firewall" in expr:
                    continue  # the NAT collector's, beside the row's netstat panels
                wait_for(
                    partial(series_of, p, expr, label, name),
                    30,
                    what=f"{where}: a series of {name}",
                )


def series_of(p: Prometheus, expr: str, label: str, name: str) -> list:
    return [s for s in p.query(expr) if s["metric"].get(label) == name]
