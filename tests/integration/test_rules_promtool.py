"""The Prometheus rules file, checked and unit-tested with the real promtool (Debian's prometheus
package, which `make test-env` installs; the pure checks of the file are in tests/unit/test_rules.py).

Each alert is tested on the same shape of input: healthy for 6 minutes, then
faulty; it must be pending when the fault starts (T0), silent one minute
before T0 + for, firing at T0 + for with exactly the expected labels and
annotations, and cleared when its series go away (a container removed, a
rule or veth gone).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from overlay_alert_cases import overlay_cases

from helpers import alert_rules

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "grafana/prometheus/dockernet.rules.yml"
HOST = {"job": "dockernet", "instance": "host1:9917"}
CID = "c" * 64
CONTAINER = {"container_id": CID, "container_name": "web"}
INFO = (
    f'dockernet_container_info{{job="dockernet",instance="host1:9917",container_id="{CID}",'
    'container_name="web",image="busybox",network_mode="bridge",compose_project="shop",'
    'compose_service="web"}'
)
HEALTHY_MINUTES = 6  # the fault starts at 6m


def matchers(labels: dict) -> str:
    return ",".join(f'{k}="{v}"' for k, v in labels.items())


def series(name: str, labels: dict) -> str:
    return name + "{" + matchers({**HOST, **labels}) + "}"


# alert -> (input series: [(series, healthy value or "_", faulty value)], minutes from the fault's
# start until the expression is true, labels of the alert beyond HOST, its summary, its description)
PORT = {
    **CONTAINER,
    "protocol": "tcp",
    "host_ip": "0.0.0.0",
    "host_port": "8080",
    "container_port": "80",
}
COMPOSED = {**CONTAINER, "compose_project": "shop", "compose_service": "web"}
DROPS = {"network": "shop", "bridge": "br-0123456789ab", "reason": "isolation"}
FLOW = {
    "source": "web",
    "source_namespace": "shop",
    "destination": "db",
    "destination_namespace": "shop",
    "protocol": "tcp",
    "port": "5432",
}
CASES = {
    "DockernetExporterDown": (
        [(series("up", {}), "1", "0")],
        0,
        {},
        "dockernet-exporter on host1:9917 is down",
        "Prometheus cannot scrape dockernet-exporter at host1:9917: this host has no container network "
        "metrics, and no other dockernet alert can fire for it.",
    ),
    "DockernetDockerUnreachable": (
        [(series("dockernet_docker_up", {}), "1", "0")],
        0,
        {},
        "Docker is unreachable from dockernet-exporter on host1:9917",
        "The Docker API has not answered dockernet-exporter on host1:9917: containers started since then "
        "are not mapped to their veths and published ports are not checked.",
    ),
    "DockernetRuntimeUnreachable": (
        [(series("dockernet_runtime_up", {"runtime": "containerd"}), "1", "0")],
        0,
        {"runtime": "containerd"},
        "containerd is unreachable from dockernet-exporter on host1:9917",
        "The containerd runtime has not answered dockernet-exporter on host1:9917: its workloads "
        "started since then are not mapped to their veths, and their namespaces are not judged "
        "orphaned meanwhile.",
    ),
    "DockernetCollectorFailing": (
        [(series("dockernet_scrape_collector_success", {"collector": "nat"}), "1", "0")],
        0,
        {"collector": "nat"},
        "Collector nat of dockernet-exporter fails on host1:9917",
        "The nat collector fails on every scrape on host1:9917; its metrics are missing (the exporter's "
        "log has one line with the error).",
    ),
    "DockernetOrphanedVeth": (
        [
            (
                series(
                    "dockernet_veth_orphaned",
                    {"veth": "veth1a2b3c", "bridge": "docker0", "reason": "no_endpoint"},
                ),
                "_",
                "1",
            )
        ],
        0,
        {"veth": "veth1a2b3c", "bridge": "docker0", "reason": "no_endpoint"},
        "Orphaned veth veth1a2b3c on bridge docker0 on host1:9917",
        "The veth veth1a2b3c on host1:9917 belongs to no running container (reason no_endpoint, bridge "
        "docker0). Leaked veths hold bridge ports, and a bridge holds at most 1,023.",
    ),
    # 920 ports is the most below 90% of the kernel's 1,023 (920.7), 921 the fewest above it.
    "DockernetBridgePortsNearLimit": (
        [(series("dockernet_bridge_ports", {"bridge": "br-0123456789ab"}), "920", "921")],
        0,
        {"bridge": "br-0123456789ab"},
        "Bridge br-0123456789ab on host1:9917 has 921 of 1,023 ports",
        "Bridge br-0123456789ab on host1:9917 has 921 ports; a Linux bridge holds at most 1,023, "
        "and then no further container can join its network.",
    ),
    "DockernetPublishedPortRuleMissing": (
        [(series("dockernet_published_port_rule_present", PORT), "1", "0")],
        0,
        PORT,
        "Published port 0.0.0.0:8080/tcp of container web on host1:9917 has no DNAT rule",
        "Docker publishes 0.0.0.0:8080/tcp to port 80 of container web on host1:9917, but the nat table "
        "has no DNAT rule for it: connections to that port from other hosts fail.",
    ),
    "DockernetMasqueradeRuleMissing": (
        [
            (
                series(
                    "dockernet_masquerade_rule_present",
                    {"bridge": "docker0", "subnet": "198.18.0.0/24"},
                ),
                "1",
                "0",
            )
        ],
        0,
        {"bridge": "docker0", "subnet": "198.18.0.0/24"},
        "Bridge docker0 (198.18.0.0/24) on host1:9917 has no MASQUERADE rule",
        "Docker masquerades traffic from 198.18.0.0/24 on bridge docker0 on host1:9917, but the nat "
        "table has no MASQUERADE rule for it: its containers cannot reach other hosts.",
    ),
    "DockernetContainerInterfaceFaults": (
        [
            (
                series(
                    "dockernet_container_receive_dropped_total", {**CONTAINER, "interface": "eth0"}
                ),
                "0",
                "0+6000",
            ),
            (INFO, "1", "1"),
        ],
        1,
        {
            **CONTAINER,
            "interface": "eth0",
            "counter": "receive_dropped",
            "compose_project": "shop",
            "compose_service": "web",
        },
        "Container web eth0 on host1:9917: receive_dropped at 100/s",
        f"Container web ({CID}) on host1:9917 counts 100 receive_dropped per second on eth0, "
        "above 1/s for 15m.",
    ),
    "DockernetContainerListenOverflows": (
        [
            (series("dockernet_container_tcp_listen_overflows_total", CONTAINER), "0", "0+6000"),
            (INFO, "1", "1"),
        ],
        1,
        COMPOSED,
        "Container web on host1:9917 overflows a TCP listen queue",
        f"Container web ({CID}) on host1:9917 drops 100 connections per second because a listener's "
        "accept queue is full: the application accepts too slowly, or its backlog (listen(2), capped "
        "by net.core.somaxconn) is too small.",
    ),
    "DockernetContainerTcpRetransmits": (
        [
            (
                series("dockernet_container_tcp_retransmitted_segments_total", CONTAINER),
                "0",
                "0+60",
            ),
            # 10 segments sent per second throughout: 1 in 10 retransmitted once the window is full
            (series("dockernet_container_tcp_segments_sent_total", CONTAINER), "0+600", "3600+600"),
            (INFO, "1", "1"),
        ],
        3,  # above 5% from the third minute: the window holds more retransmits each minute
        COMPOSED,
        "Container web on host1:9917 retransmits 10% of its TCP segments",
        f"Container web ({CID}) on host1:9917 retransmits 10% of the TCP segments it sends, above 5% "
        "for 15m: packets are lost on the way to or from its peers.",
    ),
    "DockernetContainerUdpReceiveBufferErrors": (
        [
            (
                series(
                    "dockernet_container_udp_receive_buffer_errors_total",
                    {**CONTAINER, "family": "ipv4"},
                ),
                "0",
                "0+600",
            ),
            (INFO, "1", "1"),
        ],
        1,
        {**COMPOSED, "family": "ipv4"},
        "Container web on host1:9917 drops UDP datagrams (ipv4): receive buffer full",
        f"Container web ({CID}) on host1:9917 drops 10 ipv4 UDP datagrams per second because a "
        "socket's receive buffer is full: the application reads too slowly, or its SO_RCVBUF "
        "(capped by net.core.rmem_max) is too small.",
    ),
    "DockernetConntrackTableNearLimit": (
        [
            (series("dockernet_conntrack_entries", {}), "1000", "249037"),
            (series("dockernet_conntrack_entries_limit", {}), "262144", "262144"),
        ],
        0,
        {},
        "The conntrack table on host1:9917 is 95% full",
        "The host's conntrack table on host1:9917 holds 95% of its limit (nf_conntrack_max); when it "
        "is full, new connections through Docker's NAT and bridges are dropped.",
    ),
    "DockernetConntrackInsertFailures": (
        [(series("dockernet_conntrack_insert_failed_total", {}), "0", "0+120")],
        1,
        {},
        "Conntrack insertions fail on host1:9917",
        "The host's conntrack on host1:9917 fails to insert 2 entries per second: the table is full, "
        "or concurrent packets of one new flow race (often UDP, such as DNS through Docker's NAT); "
        "those packets are dropped.",
    ),
    "DockernetFirewallDrops": (
        [(series("dockernet_firewall_dropped_packets_total", DROPS), "0", "0+600")],
        1,
        DROPS,
        "Docker drops isolation traffic to bridge br-0123456789ab on host1:9917",
        "Docker's isolation rule drops 10 packets per second bound for bridge br-0123456789ab "
        "(network shop) on host1:9917, above 1/s for 15m: something keeps sending where Docker's "
        "firewall does not let it.",
    ),
    "DockernetFlowUnanswered": (
        [(series("dockernet_flow_connections_unanswered_total", FLOW), "0", "0+60")],
        1,
        FLOW,
        "Connections web → db tcp/5432 on host1:9917 go unanswered",
        "1 connections per second from web to db (tcp port 5432) on host1:9917 got no reply packet "
        "at all, for 5m: a firewall dropping them, a dead peer, or nothing listening on a UDP port.",
    ),
    "DockernetFlowEventsLost": (
        [(series("dockernet_flow_events_lost_total", {}), "0", "0+600")],
        1,
        {},
        "dockernet-exporter on host1:9917 loses conntrack events",
        "The kernel drops conntrack events for want of room in dockernet-exporter's socket on "
        "host1:9917: connections opened and closed between two reads of the table are not counted. "
        "Raise --collector.flows.rcvbuf.",
    ),
}


POD = {"namespace": "shop", "pod": "web-0"}
POD_INFO = series(
    "dockernet_pod_info",
    {**POD, "uid": "u1", "sandbox_id": "s" * 64, "runtime": "containerd", "host_network": "false"},
)


def pod_case(case: tuple) -> tuple:
    """A container alert's case, made a pod's: its counters under dockernet_pod_ with namespace and
    pod, dockernet_pod_info for the container's info, and the texts naming the pod."""
    inputs, delay, labels, summary, description = case
    pod_inputs = [
        (
            POD_INFO
            if s == INFO
            else s.replace("dockernet_container_", "dockernet_pod_").replace(
                matchers(CONTAINER), matchers(POD)
            ),
            healthy,
            faulty,
        )
        for s, healthy, faulty in inputs
    ]
    kept = {k: v for k, v in labels.items() if k not in COMPOSED}
    name = "Pod shop/web-0"
    return (
        pod_inputs,
        delay,
        {**POD, **kept},
        summary.replace("Container web", name),
        description.replace(f"Container web ({CID})", name),
    )


CASES.update(
    {
        name.replace("Container", "Pod"): pod_case(CASES[name])
        for name in (
            "DockernetContainerInterfaceFaults",
            "DockernetContainerListenOverflows",
            "DockernetContainerTcpRetransmits",
            "DockernetContainerUdpReceiveBufferErrors",
        )
    }
)
CASES.update(overlay_cases(series))


def minutes(duration: str) -> int:
    m = re.fullmatch(r"(\d+)([mh])", duration)
    assert m, duration
    return int(m.group(1)) * (60 if m.group(2) == "h" else 1)


def promtool(*args: str) -> subprocess.CompletedProcess:
    binary = shutil.which("promtool")
    if binary is None:
        pytest.fail("promtool is not on PATH: `make test-env` installs Debian's prometheus package")
    return subprocess.run([binary, *args], capture_output=True, text=True)


def promtool_test(tmp_path: Path, tests: list) -> None:
    path = tmp_path / "test.yml"
    path.write_text(
        yaml.safe_dump({"rule_files": [str(RULES)], "evaluation_interval": "1m", "tests": tests})
    )
    run = promtool("test", "rules", str(path))
    assert run.returncode == 0, run.stdout + run.stderr


def values(healthy: str, faulty: str, faulty_steps: int) -> str:
    """Healthy samples until the fault starts, faulty ones (counters keep rising), then a stale
    marker. promtool expands "1x2" to three samples but "_x2" to two gaps."""
    healthy_steps = HEALTHY_MINUTES if healthy == "_" else HEALTHY_MINUTES - 1
    return f"{healthy}x{healthy_steps} {faulty}x{faulty_steps} stale"


def firing(name: str, severity: str) -> dict:
    """The alert as CASES expects it once firing."""
    _, _, labels, summary, description = CASES[name]
    return {
        "exp_labels": {**HOST, **labels, "severity": severity},
        "exp_annotations": {
            "summary": summary,
            "description": description,
            "runbook_url": f"docs/runbook.md#{name.lower()}",
        },
    }


def alert_test(name: str, rule: dict) -> dict:
    inputs, delay, labels, _, _ = CASES[name]
    t0 = HEALTHY_MINUTES + delay
    fire = t0 + minutes(rule["for"])
    gone = (
        fire + 2
    )  # the series end one minute after firing: the first minute with the stale marker
    # The severity is the file's (tests/unit/test_rules.py holds the file to which alerts page).
    severity = rule["labels"]["severity"]
    expected = firing(name, severity)
    pending = f'ALERTS{{alertname="{name}", alertstate="pending"}}'
    return {
        "interval": "1m",
        "input_series": [
            {"series": s, "values": values(h, f, gone - 1 - HEALTHY_MINUTES)} for s, h, f in inputs
        ],
        "promql_expr_test": [
            {"expr": pending, "eval_time": f"{t0 - 1}m", "exp_samples": []},
            {
                "expr": pending,
                "eval_time": f"{t0}m",
                "exp_samples": [
                    {
                        "labels": series(
                            "ALERTS",
                            {
                                "alertname": name,
                                "alertstate": "pending",
                                **labels,
                                "severity": severity,
                            },
                        ),
                        "value": 1,
                    }
                ],
            },
        ],
        "alert_rule_test": [
            {"alertname": name, "eval_time": f"{fire - 1}m", "exp_alerts": []},
            {"alertname": name, "eval_time": f"{fire}m", "exp_alerts": [expected]},
            {"alertname": name, "eval_time": f"{gone}m", "exp_alerts": []},
        ],
    }


def test_promtool_check_alert_rules():
    run = promtool("check", "rules", str(RULES))
    assert run.returncode == 0, run.stdout + run.stderr
    assert "SUCCESS" in run.stdout


def test_every_alert_has_a_test_case():
    assert set(alert_rules()) == set(CASES)


@pytest.mark.parametrize("name", sorted(CASES))
def test_alert_fires_at_its_for_window_and_clears(tmp_path, name):
    promtool_test(tmp_path, [alert_test(name, alert_rules()[name])])


def test_container_restart_counter_reset_fires_nothing(tmp_path):
    """A restarted container keeps its id and interface while its counters start again from 0."""
    counters = [
        series(f"dockernet_container_{c}_total", {**CONTAINER, "interface": "eth0"})
        for c in ("receive_errors", "transmit_errors", "receive_dropped", "transmit_dropped")
    ]
    no_alerts = [
        {"expr": "ALERTS", "eval_time": f"{m}m", "exp_samples": []}
        for m in (10, 11, 12, 15, 20, 30, 40)
    ]
    promtool_test(
        tmp_path,
        [
            {
                "interval": "1m",
                "input_series": [{"series": s, "values": "5000000+10x9 10+10x30"} for s in counters]
                + [{"series": INFO, "values": "1x40"}],
                "promql_expr_test": no_alerts
                + [
                    # the reset is a restart from 0 (10 errors in its first minute), not a fall
                    # of 5,000,000
                    {
                        "expr": "count(container_interface:dockernet_container_faults:rate5m"
                        '{counter="receive_errors"} > 0.1666 < 0.1667)',
                        "eval_time": "12m",
                        "exp_samples": [{"labels": "{}", "value": 1}],
                    }
                ],
            }
        ],
    )


def test_pod_alert_clears_once_its_sandbox_is_not_ready(tmp_path):
    """A sandbox whose pause process died leaves dockernet_pod_info while its counters stay."""
    name = "DockernetPodListenOverflows"
    overflows = series("dockernet_pod_tcp_listen_overflows_total", POD)
    promtool_test(
        tmp_path,
        [
            {
                "interval": "1m",
                "input_series": [
                    {"series": overflows, "values": "0+6000x40"},
                    {"series": POD_INFO, "values": "1x20 stale"},
                ],
                "alert_rule_test": [
                    {
                        "alertname": name,
                        "eval_time": "20m",
                        "exp_alerts": [firing(name, "warning")],
                    },
                    {"alertname": name, "eval_time": "22m", "exp_alerts": []},
                ],
            }
        ],
    )


def test_orphan_age_is_kept_while_the_orphan_lasts(tmp_path):
    orphan = series(
        "dockernet_veth_orphaned", {"veth": "dnxo-1", "bridge": "", "reason": "peer_in_host"}
    )
    age = 'time() - veth:dockernet_veth_orphaned:first_seen_timestamp_seconds{veth="dnxo-1"}'
    # Prometheus drops empty labels
    labels = series("", {"veth": "dnxo-1", "reason": "peer_in_host"})
    promtool_test(
        tmp_path,
        [
            {
                "interval": "1m",
                "input_series": [{"series": orphan, "values": "_x3 1x30 stale"}],
                "promql_expr_test": [
                    {
                        "expr": age,
                        "eval_time": "3m",
                        "exp_samples": [{"labels": labels, "value": 0}],
                    },
                    {
                        "expr": age,
                        "eval_time": "30m",
                        "exp_samples": [{"labels": labels, "value": 27 * 60}],
                    },
                    {"expr": age, "eval_time": "35m", "exp_samples": []},
                ],
            }
        ],
    )


def test_bridge_ports_alert_fires_from_921_of_1023_and_never_at_920(tmp_path):
    """The threshold is 90% of the 1,023 ports the kernel lets a bridge hold: a bridge at 920 ports
    never alerts, however long it stays there; a full one (1,023) does after the `for` window."""
    name = "DockernetBridgePortsNearLimit"
    window = minutes(alert_rules()[name]["for"])
    full = {
        "exp_labels": {**HOST, "bridge": "br-full", "severity": "warning"},
        "exp_annotations": {
            "summary": "Bridge br-full on host1:9917 has 1023 of 1,023 ports",
            "description": "Bridge br-full on host1:9917 has 1023 ports; a Linux bridge holds at "
            "most 1,023, and then no further container can join its network.",
            "runbook_url": f"docs/runbook.md#{name.lower()}",
        },
    }
    below = series("dockernet_bridge_ports", {"bridge": "br-below"})
    promtool_test(
        tmp_path,
        [
            {
                "interval": "1m",
                "input_series": [
                    {"series": below, "values": "920x60"},
                    {
                        "series": series("dockernet_bridge_ports", {"bridge": "br-full"}),
                        "values": "1023x60",
                    },
                ],
                "promql_expr_test": [
                    {
                        "expr": 'ALERTS{bridge="br-below"}',
                        "eval_time": f"{m}m",
                        "exp_samples": [],
                    }
                    for m in (0, window, 60)
                ],
                "alert_rule_test": [
                    {"alertname": name, "eval_time": f"{window - 1}m", "exp_alerts": []},
                    {"alertname": name, "eval_time": f"{window}m", "exp_alerts": [full]},
                    {"alertname": name, "eval_time": "60m", "exp_alerts": [full]},
                ],
            }
        ],
    )
