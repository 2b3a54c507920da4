"""A tenant's strings through every table and tree command (issue 24, item 4): a compose label, a
renamed interface and a pod name holding ESC [2J, CR, a newline, DEL and U+202E, on the real
dockerd and the real containerd. Tables and trees show them escaped, one line per object; JSON
keeps them exact."""

from __future__ import annotations

import json
import re
import subprocess
import uuid
from typing import Any

import pytest
from test_cri import CRI, pods  # noqa: F401 (a fixture)
from test_cri_leaked_pod import leak  # noqa: F401 (a fixture)

from cri_helpers import CriPods, Pod
from helpers import EXPORTER, ROOT

# Clears the screen, returns to the start of the line, forges a row, deletes, reverses the rest.
HOSTILE = "\x1b[2J\rx\nveth0000000 forged\x7f\u202edne"
SHOWN = r"\x1b[2J\x0dx\x0aveth0000000 forged\x7f\u202edne"
# What must never reach a terminal: C0 (the line feeds that end lines apart), DEL, C1, bidi marks.
RAW = re.compile(r"[\x00-\x09\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")
# An interface name takes no whitespace: ESC and U+202E (busybox printf: octal bytes).
IFNAME_BYTES = r"\033x\342\200\256y"
IFNAME, IFNAME_SHOWN = "\\x1bx\u202ey", r"\x1bx\u202ey"


def run(*args: str) -> bytes:
    """stdout of one command, as bytes: text mode would turn a raw CR into a newline."""
    done = subprocess.run(
        EXPORTER + [*args, CRI], cwd=ROOT, capture_output=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr.decode("utf-8", "replace")
    return done.stdout


def table(*args: str) -> list[str]:
    """The command's table or tree, lines split on line feeds only; nothing raw in it."""
    text = run(*args).decode("utf-8")  # strict
    assert not RAW.search(text), f"raw control character in `{' '.join(args)}`:\n{text!r}"
    assert not [l for l in text.split("\n") if l.startswith("veth0000000")], text
    return text.split("\n")


def document(*args: str) -> Any:
    return json.loads(run(*args, "-o", "json"))


def lines_with(lines: list[str], text: str) -> list[str]:
    return [l for l in lines if text in l]


@pytest.fixture
def tenant(containers):
    """A container with hostile compose labels whose eth0 it renamed itself."""
    labels = {"com.docker.compose.project": HOSTILE, "com.docker.compose.service": HOSTILE}
    c = containers.run(labels=labels, cap_add=["NET_ADMIN"], ports={"80/tcp": ("127.0.0.1", None)})
    rename = f"ip link set eth0 down && ip link set eth0 name \"$(printf '{IFNAME_BYTES}')\""
    done = c.exec_run(
        ["sh", "-c", rename + " && ip link set \"$(printf '" + IFNAME_BYTES + "')\" up"]
    )
    assert done.exit_code == 0, done.output
    return c


@pytest.fixture
def hostile_pod(pods: CriPods) -> Pod:  # noqa: F811
    return pods.run(name=f"p{uuid.uuid4().hex[:6]}-{HOSTILE}", namespace="dnx")


def test_veths_ips_and_bridges_show_one_escaped_row_per_object(tenant, hostile_pod):
    pod_shown = hostile_pod.name.replace(HOSTILE, SHOWN)
    for command in ("veths", "ips", "bridges"):
        rows = document(command)
        if command == "bridges":
            rows = [p for b in rows for p in b["ports"]]
        ours = [r for r in rows if r["pod"] == hostile_pod.name]
        assert ours, f"{command}: the pod is missing from JSON"
        assert len(lines_with(table(command), pod_shown)) == len(ours), command
    veths = document("veths")
    (mine,) = [r for r in veths if r["container_id"] == tenant.id]
    assert mine["interface"] == IFNAME  # the kernel's name: escaped once (docs/names.md), exact
    (line,) = lines_with(table("veths"), tenant.id[:12])
    assert IFNAME_SHOWN in line and mine["veth"] in line


def test_topology_tree_escapes_labels_and_names_json_keeps_them(tenant, hostile_pod):
    doc = document("topology")
    workloads = [c for ns in doc["namespaces"] for c in ns["containers"]]
    (mine,) = [c for c in workloads if c["id"] == tenant.id]
    assert (mine["compose_project"], mine["compose_service"]) == (HOSTILE, HOSTILE)
    assert [c for c in workloads if c["pod"] and c["pod"]["name"] == hostile_pod.name]
    lines = table("topology")
    (line,) = lines_with(lines, f"project={SHOWN}")
    assert "->80/tcp dnat=" in line  # the container's line goes on to its port
    assert len(lines_with(lines, f"pod=dnx/{hostile_pod.name.replace(HOSTILE, SHOWN)}")) == 1
    (veth,) = lines_with(lines, IFNAME_SHOWN)
    assert f"<-> {IFNAME_SHOWN} [" in veth


def test_nat_shows_the_tenants_published_port_on_one_row(tenant, hostile_pod):
    ports = [p for p in document("nat")["published_ports"] if p["container_id"] == tenant.id]
    assert len(ports) == 1
    lines = table("nat")
    (row,) = lines_with(lines, tenant.id[:12])
    assert str(ports[0]["host_port"]) in row


def test_netns_links_the_pod_under_its_escaped_name(tenant, hostile_pod, pods):  # noqa: F811
    sandbox = pods.status(hostile_pod).id
    try:
        lines = [l for l in table("netns", "visible", sandbox[:12]) if l]
        (row,) = lines_with(lines, sandbox[:12])
        assert f"dnx_{hostile_pod.name}".replace(HOSTILE, SHOWN) in row and len(lines) == 2
    finally:
        lines = [l for l in table("netns", "invisible", sandbox[:12]) if l]
    assert len(lines) == 2 and "removed" in lines[1]


def test_orphans_names_a_leaked_pod_on_one_escaped_row(leak):  # noqa: F811
    ((pod, veth),) = leak(f"p{uuid.uuid4().hex[:6]}-{HOSTILE}")
    (row,) = [r for r in document("orphans", "--grace", "0s") if r["veth"] == veth]
    assert (row["namespace"], row["pod"]) == ("shop", pod.name)
    (line,) = lines_with(table("orphans", "--grace", "0s"), veth)
    assert pod.name.replace(HOSTILE, SHOWN) in line
