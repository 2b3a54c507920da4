"""The whole /metrics without root: every collector (netstat included) and the Scraper, on the
scene of golden_scene.py (recorded state, the kernel's reads and the firewall commands answered
from fixtures), compared byte for byte with tests/fixtures/golden/metrics.txt.

After an intended change of the output, regenerate the file with ``make golden`` (the test then
rewrites it and skips instead of passing), review ``git diff``, and run ``make unit``.

What is the machine's or the moment's rather than the exporter's is masked, and only that:

- the values of ``dockernet_scrape_collector_duration_seconds`` read ``<duration>``;
- the ``version`` label of ``dockernet_exporter_build_info`` reads ``<version>``;
- the samples of prometheus_client's own families (its default registry's ``process_*`` and
  ``python_*``: this process's numbers and this interpreter) read ``<masked>`` after their name;
  their HELP and TYPE lines are kept.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from golden_scene import (
    GOLDEN,
    OverlayKernel,
    firewall_commands,
    golden_state,
    link_stats,
    proc_root,
)

from exporter.app import cli, runtimes
from exporter.core import flow_peers, topology
from exporter.metrics import collectors
from exporter.metrics.collectors import overlay as overlay_collector
from exporter.metrics.collectors.base import Collector, Context
from exporter.metrics.collectors.containers import ContainersCollector
from exporter.metrics.collectors.flows import FlowsCollector, Follower
from exporter.metrics.collectors.orphans import OrphansCollector
from exporter.metrics.collectors.overlay import OverlayCollector
from exporter.metrics.scrape import Scraper
from exporter.sources.kernel.procfs import Procfs
from exporter.state.daemon import Daemon

METRICS = GOLDEN / "metrics.txt"
FLAGS = [
    "--docker.host=unix:///nonexistent/docker.sock",
    "--podman.host=",
    "--cri.endpoint=/nonexistent/containerd.sock",
    "--collector.netstat.fields=all",  # every family, not only the default (the dashboards')
    "--collector.netstat.interval=0s",
    "--collector.flows",  # off by default; its table stays empty (no conntrack is followed here)
]
# How long the orphan's veth has looked orphaned at the scrape: past the default grace (30s).
SUSPECT_FOR = 60.0
SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})? (.+)$")


def mask(text: str) -> str:
    """The exposition with what varies between machines and runs masked (see the docstring)."""
    out = []
    for line in text.splitlines():
        m = SAMPLE.match(line)
        if m is not None:
            name, label_text, _value = m.groups()
            if not name.startswith("dockernet_"):
                line = f"{name} <masked>"
            elif name == "dockernet_scrape_collector_duration_seconds":
                line = f"{name}{label_text} <duration>"
            elif name == "dockernet_exporter_build_info":
                line = re.sub(r'version="[^"]*"', 'version="<version>"', line)
        out.append(line)
    return "\n".join(out) + "\n"


def enabled(root: Path) -> list[Collector]:
    """Every collector, as the flags build them, with the scene's kernel reads and clock."""
    args = cli.build_parser().parse_args(FLAGS)
    found = collectors.enabled(args, Context(procfs=Procfs(str(root))))
    kernel = OverlayKernel()
    for c in found:
        if isinstance(c, ContainersCollector):  # and the pods collector, its subclass
            c.link_stats = link_stats
            c.sockets = kernel  # type: ignore[assignment]
        if isinstance(c, OverlayCollector):
            c.netlink = lambda: kernel  # type: ignore[assignment,return-value]
            c.sockets = kernel  # type: ignore[assignment]
        if isinstance(c, OrphansCollector):
            c.clock = lambda: SUSPECT_FOR
    return found


def with_flows(collector: FlowsCollector, snap: topology.Snapshot, root: Path) -> None:
    """The flows collector as if its thread had read the table: one flow between the scene's
    first two workloads, one to the outside (its follower is never started: no conntrack here)."""
    follower = Follower(collector.table, lambda: snap, str(root), 1 << 20, 15.0)
    follower.error = None
    collector.follower = follower
    first, second = (flow_peers.peer_of(v) for v in flow_peers.owners(snap)[:2])
    series = collector.table.series
    series[(first, second, "tcp", "80")] = [7, 2, 1, 0, 0, 0, 0]
    series[(first, flow_peers.EXTERNAL_PEER, "udp", "53")] = [3, 0, 0, 0, 0, 0, 0]


def scrape(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    failing: str = "",
    error: Exception | None = None,
) -> str:
    """One scrape, masked, by a Scraper of the daemon the flags build (never started) whose
    snapshot is the scene's; the collector named ``failing`` raises ``error``."""
    state = golden_state()
    root = proc_root(state, tmp_path / "proc")
    monkeypatch.setenv("PATH", str(firewall_commands(tmp_path / "bin")))
    # The scene's namespace files hold their namespaces (read by the overlay and containers
    # collectors alike).
    monkeypatch.setattr(overlay_collector, "is_bound", lambda _ns: True)
    found = enabled(root)
    for c in found:
        if c.name == failing:
            monkeypatch.setattr(c, "collect", lambda _snap: _raise(error))
    daemon = Daemon(runtimes.from_args(cli.build_parser().parse_args(FLAGS)), Procfs(str(root)))
    daemon.snapshot = topology.build(state)
    daemon.runtimes_up = dict(sorted(state.runtimes_up.items()))  # as the daemon publishes them
    for c in found:
        if isinstance(c, FlowsCollector):
            with_flows(c, daemon.snapshot, root)
    daemon.published.set()
    try:
        return mask(Scraper(daemon, found).render())
    finally:
        daemon.stop()


def _raise(error: Exception | None) -> list:
    raise error or RuntimeError("broken")


def test_metrics_match_the_golden_file(tmp_path, monkeypatch):
    text = scrape(tmp_path, monkeypatch)
    if os.environ.get("UPDATE_GOLDEN"):  # a rewritten file proves nothing: say so, do not pass
        METRICS.write_text(text)
        pytest.skip(f"rewrote {METRICS.name}: review `git diff` and run the test again")
    assert text == METRICS.read_text()


def test_every_collector_and_kernel_read_shows_in_the_golden_file():
    """The scene reaches every collector's families: a fixture that stopped being read would
    leave a family empty, and the golden file would still match."""
    text = METRICS.read_text()
    for name in (
        'dockernet_container_receive_bytes_total{container_id="209b',  # link counters
        "dockernet_pod_transmit_packets_total{",
        'dockernet_pod_info{namespace="shop",pod="web"',
        "dockernet_veth_info{",
        'dockernet_published_port_rule_present{container_id="2bc0',  # firewall commands
        'dockernet_netfilter_info{backend="iptables-nft"} 1',
        'dockernet_bridge_info{bridge="cni0"',
        "dockernet_pod_address_info{",
        'dockernet_veth_orphaned{veth="vethdead"',
        "dockernet_container_tcp_active_opens_total{",  # procfs of each namespace
        "dockernet_conntrack_entries 37",  # the host's conntrack table
        'dockernet_container_receive_bytes_total{container_id="a6e0',  # an overlay veth's counters
        'dockernet_overlay_network_info{network="ov"',
        'dockernet_overlay_vxlan_transmit_bytes_total{network="ov"} 14200',  # the namespace's dump
        'dockernet_overlay_peer_info{network="ov",peer="198.18.250.2"} 1',  # its VXLAN device's FDB
        'dockernet_overlay_underlay_mtu_bytes{network="ov",peer="198.18.250.2",interface="eth0"}',
    ):
        assert name in text
    success = re.findall(r"dockernet_scrape_collector_success\{collector=\"(\w+)\"\} (\d)", text)
    assert [c for c, _ in success] == [c.name for c in collectors.ALL]
    assert {v for _, v in success} == {"1"}


# The families of the collectors a test breaks, by the prefixes of their names.
FAMILIES = {
    "bridges": ("dockernet_bridge_",),
    "nat": (
        "dockernet_published_port_",
        "dockernet_masquerade_",
        "dockernet_netfilter_",
        "dockernet_firewall_",
    ),
}


def without(text: str, prefixes: tuple[str, ...]) -> str:
    """The exposition without the families whose names start with one of ``prefixes``."""
    kept = []
    for line in text.splitlines(keepends=True):
        name = line.split()[2] if line.startswith("#") else line.split("{")[0].split()[0]
        if not name.startswith(prefixes):
            kept.append(line)
    return "".join(kept)


@pytest.mark.parametrize(
    ("failing", "error"),
    [
        ("bridges", RuntimeError("a bug")),
        ("nat", OSError("iptables-nft-save -c did not answer")),  # run beside the others
    ],
)
def test_a_failing_collector_reports_success_0_and_the_rest_is_served(
    tmp_path, monkeypatch, failing, error
):
    text = scrape(tmp_path, monkeypatch, failing, error)
    success = f'dockernet_scrape_collector_success{{collector="{failing}"}}'
    expected = without(METRICS.read_text(), FAMILIES[failing])
    assert f"{success} 1\n" in expected
    assert text == expected.replace(f"{success} 1\n", f"{success} 0\n")
