"""Shared by the deployment checks: the one documented `docker run` line (read
from README.md, so the tests hold the docs to what was proven) and its
privileges as a comparable spec."""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent

GRAFANA = ROOT / "grafana"


def documented_run_line() -> list:
    """The tokens of README's `docker run` line for the exporter."""
    for line in (ROOT / "README.md").read_text().splitlines():
        if line.startswith("docker run ") and "dockernet-exporter" in line:
            return shlex.split(line)
    raise AssertionError("README.md has no `docker run ... dockernet-exporter` line")


@dataclass
class RunSpec:
    """What a way of running grants the exporter: comparable across docker run, compose, swarm, systemd."""

    network_host: bool = False
    pid_host: bool = False
    read_only: bool = False
    no_new_privileges: bool = False
    cap_add: set = field(default_factory=set)
    cap_drop: set = field(default_factory=set)
    volumes: set = field(default_factory=set)
    image: str = ""
    args: list = field(default_factory=list)


VALUED = {
    "--name",
    "--restart",
    "--network",
    "--pid",
    "--cap-add",
    "--cap-drop",
    "--security-opt",
    "-v",
    "--volume",
    "--tmpfs",
    "-p",
    "--user",
    "-e",
}


def parse_run(tokens: list) -> RunSpec:
    assert tokens[:2] == ["docker", "run"], tokens
    spec, i = RunSpec(), 2
    while i < len(tokens) and tokens[i].startswith("-"):
        flag, _, value = tokens[i].partition("=")
        if flag in VALUED and not value:
            i += 1
            value = tokens[i]
        if flag == "--network":
            spec.network_host = value == "host"
        elif flag == "--pid":
            spec.pid_host = value == "host"
        elif flag == "--read-only":
            spec.read_only = True
        elif flag == "--security-opt" and value.startswith("no-new-privileges"):
            spec.no_new_privileges = True
        elif flag == "--cap-add":
            spec.cap_add.add(value.upper())
        elif flag == "--cap-drop":
            spec.cap_drop.add(value.upper())
        elif flag in ("-v", "--volume"):
            spec.volumes.add(value)
        i += 1
    spec.image, spec.args = tokens[i], tokens[i + 1 :]
    return spec


def documented_spec() -> RunSpec:
    return parse_run(documented_run_line())
