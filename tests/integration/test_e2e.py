"""End to end, in node_exporter's style: the real daemon against a known set
of containers; its /metrics, normalised (ids, names, counters), must equal
tests/fixtures/e2e-output.txt, and `promtool check metrics` must pass.

After an intended change of the output, regenerate the golden file with
    UPDATE_GOLDEN=1 .venv/bin/pytest tests/integration/test_e2e.py
(the test then skips instead of passing), review the diff, and run it again.
"""

from __future__ import annotations

import os
import re
import subprocess
from typing import TYPE_CHECKING

import pytest

from helpers import ROOT, wait_for

if TYPE_CHECKING:
    from docker.models.containers import Container

GOLDEN = ROOT / "tests" / "fixtures" / "e2e-output.txt"
FOREIGN_KEYS = (
    "container_id",
    "container_name",
    "veth",
    "bridge",
    "network",
    "subnet",
    "interface",
    "address",
    "mac",
    "host_port",
    "container_port",
    "host_ip",
    "gateway",
)
HOST_DEPENDENT = ("dockernet_netfilter_rules",)  # which chains exist depends on the host's firewall
KEEP_VALUE = re.compile(r"(_info|_up|_success|_present)$")
SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})? (.+)$")


def normalise(text: str, names: dict) -> list:
    """Keep our own objects' samples and the host-independent ones, with placeholders for what varies."""
    out = set()
    for line in text.splitlines():
        if line.startswith("#"):
            if line.split()[2].startswith("dockernet_"):
                out.add(line)
            continue
        sample = SAMPLE.match(line)
        assert sample, line
        name, label_text, value = sample.groups()
        if not name.startswith("dockernet_") or name in HOST_DEPENDENT:
            continue
        label_text = label_text or ""
        mine = [k for k in names if k in label_text]
        if not mine and any(
            f'{key}="' in label_text and f'{key}=""' not in label_text for key in FOREIGN_KEYS
        ):
            continue
        for real, role in sorted(names.items(), key=lambda kv: -len(kv[0])):
            label_text = label_text.replace(real, role)
        label_text = re.sub(r'veth="veth[0-9a-f]+"', 'veth="<veth>"', label_text)
        label_text = re.sub(r'ifindex="\d+"', 'ifindex="<n>"', label_text)
        for key in ("address", "mac", "subnet", "gateway"):  # allocated by Docker from its pools
            label_text = re.sub(f'{key}="[^"]+"', f'{key}="<{key}>"', label_text)
        out.add(f"{name}{label_text} {value if KEEP_VALUE.search(name) else '<v>'}")
    return sorted(out)


NETSTAT_SERIES = re.compile(r"^dockernet_container_(tcp|udp|ip|sockets|conntrack)[_{].*\n", re.M)


def sampled(text: str, *owners: Container) -> bool:
    """Whether the netstat collector's sampler has read the namespaces of these containers."""
    return all(
        f'dockernet_container_tcp_attempt_fails_total{{container_id="{c.id}"' in text
        for c in owners
    )


def test_metrics_match_golden_output_and_lint(containers, exporter, tmp_path):
    net = containers.network()
    a = containers.run(network=net.name)
    b = containers.run()
    containers.client.networks.get(net.id).connect(b)
    host = containers.run(network_mode="host")
    none = containers.run(network_mode="none")
    guest = containers.run(network_mode=f"container:{a.id}")
    names = {net.id[:12]: "<net-id>", net.name: "<net>"}
    for role, c in (("a", a), ("b", b), ("host", host), ("none", none), ("guest", guest)):
        names[c.id] = f"<id-{role}>"
        names[c.name] = f"<name-{role}>"
    e = exporter()
    text = wait_for(
        lambda: (
            (t := e.text())
            and (mapped := NETSTAT_SERIES.sub("", t)).count(b.id) >= 2
            and mapped.count(a.id) >= 3
            and sampled(t, a, b, none)
            and t
        ),
        what="all mapped",
    )
    out = tmp_path / "metrics.txt"
    out.write_text(text)
    lint = subprocess.run(
        ["promtool", "check", "metrics"], stdin=out.open(), capture_output=True, text=True
    )
    assert lint.returncode == 0, lint.stdout + lint.stderr
    lines = normalise(text, names)
    if os.environ.get("UPDATE_GOLDEN"):  # a rewritten file proves nothing: say so, do not pass
        GOLDEN.write_text("\n".join(lines) + "\n")
        pytest.skip(f"rewrote {GOLDEN.relative_to(ROOT)}: review `git diff` and run again")
    assert lines == GOLDEN.read_text().splitlines()
