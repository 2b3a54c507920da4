"""The Prometheus rules file as data: every alert labelled, annotated, in the runbook, with the
`for` window and the thresholds of grafana/mixin/config.py. Pure: no promtool, no Prometheus.

What Prometheus makes of the rules (they load, and each alert is pending, silent, firing and
cleared exactly when it should) is tested with the real promtool in
tests/integration/test_rules_promtool.py.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from helpers import alert_rules

ROOT = Path(__file__).resolve().parents[2]
# grafana/ is run as `python -m grafana.mixin` from the checkout, not installed: load its config by path.
_spec = importlib.util.spec_from_file_location("mixin_config", ROOT / "grafana/mixin/config.py")
assert _spec is not None and _spec.loader is not None  # a .py file has a source loader
config = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(config)
RULES = ROOT / "grafana/prometheus/dockernet.rules.yml"
RUNBOOK = ROOT / "docs/runbook.md"

# A container cut off now pages; the rest waits for working hours.
CRITICAL = {
    "DockernetPublishedPortRuleMissing",
    "DockernetMasqueradeRuleMissing",
    # Containers on other nodes of the overlay are unreachable now.
    "DockernetOverlayVxlanTransmitWithoutReceive",
}
# Checked on this kernel: the 1,024th `ip link set <veth> master <bridge>` fails with
# "Exchange full" (BR_MAX_PORTS is 1,024 port numbers, and number 0 is reserved).
KERNEL_BRIDGE_PORTS = 1023


def severity(name: str) -> str:
    return "critical" if name in CRITICAL else "warning"


def test_every_alert_is_labelled_annotated_and_in_the_runbook():
    runbook = RUNBOOK.read_text()
    assert set(alert_rules()) == set(config.FOR)
    for name, rule in alert_rules().items():
        assert rule["labels"]["severity"] == severity(name), name
        assert {"summary", "description", "runbook_url"} <= set(rule["annotations"]), name
        assert rule["annotations"]["runbook_url"] == f"docs/runbook.md#{name.lower()}", name
        assert f"\n## {name}\n" in runbook, f"docs/runbook.md has no section for {name}"


def test_every_alert_waits_for_its_configured_window():
    assert {name: rule["for"] for name, rule in alert_rules().items()} == config.FOR


def test_bridge_alert_threshold_and_text_use_the_kernels_port_limit():
    assert config.BRIDGE_PORT_LIMIT == KERNEL_BRIDGE_PORTS
    rule = alert_rules()["DockernetBridgePortsNearLimit"]
    assert rule["expr"] == 'dockernet_bridge_ports{job="dockernet"} > 0.9 * 1023'
    assert "of 1,023 ports" in rule["annotations"]["summary"]
    assert "holds at most 1,023," in rule["annotations"]["description"]
    assert (
        "holds at most 1,023."
        in alert_rules()["DockernetOrphanedVeth"]["annotations"]["description"]
    )
    assert "1024" not in RULES.read_text() and "1,024" not in RULES.read_text()
