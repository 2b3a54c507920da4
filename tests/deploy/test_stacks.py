"""Compose, Swarm and systemd: each file checked by its own tool (docker-compose,
promtool, systemd-analyze), its privileges compared with the documented `docker
run` line, and the systemd unit's capability bounding set run for real (setpriv)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import requests
import yaml
from deployspec import GRAFANA, documented_spec

from helpers import EXPORTER, ROOT, free_port, wait_for

DEPLOY = ROOT / "deploy"
COMPOSE = DEPLOY / "compose" / "docker-compose.yml"
COMPOSE_PODMAN = DEPLOY / "compose" / "docker-compose.podman.yml"
SWARM = DEPLOY / "swarm" / "dockernet-exporter.yml"
UNIT = DEPLOY / "systemd" / "dockernet-exporter.service"
NETNS_MOUNT = "/var/run/docker/netns:/var/run/docker/netns:ro"


def compose_config(*paths: str | Path) -> dict:
    """The files (the first overridden by the others) as docker-compose validates and merges them."""
    files = [arg for path in paths for arg in ("-f", str(path))]
    r = subprocess.run(
        ["docker-compose", *files, "config"],
        capture_output=True,
        text=True,
        timeout=60,
        env=dict(os.environ, DOCKERNET_IMAGE="dockernet-exporter"),
    )
    assert r.returncode == 0, r.stderr
    return yaml.safe_load(r.stdout)


def caps(service: dict) -> tuple:
    return {c.upper() for c in service.get("cap_add", ())}, {
        c.upper() for c in service.get("cap_drop", ())
    }


def volume_strings(service: dict) -> set:
    out = set()
    for v in service.get("volumes", ()):
        if isinstance(v, str):
            out.add(v)
        else:
            out.add(f"{v['source']}:{v['target']}" + (":ro" if v.get("read_only") else ""))
    return out


def test_compose_exporter_has_the_documented_privileges():
    spec = documented_spec()
    svc = compose_config(COMPOSE)["services"]["exporter"]
    assert svc["network_mode"] == "host" and svc["pid"] == "host" and svc["read_only"] is True
    assert caps(svc) == (spec.cap_add, spec.cap_drop)
    assert any(o.startswith("no-new-privileges") for o in svc["security_opt"])
    assert volume_strings(svc) == spec.volumes


def merge_independent(service: dict) -> dict:
    """A service with the lists a merge of compose files may reorder or reshape made comparable."""
    out = dict(service, volumes=sorted(volume_strings(service)))
    for key in ("cap_add", "cap_drop"):
        if key in service:
            out[key] = sorted(service[key])
    hosts = service.get("extra_hosts")
    if isinstance(hosts, list):
        out["extra_hosts"] = dict(h.split(":", 1) for h in hosts)
    return out


def test_compose_podman_override_swaps_only_the_socket_and_the_runtime():
    """Over the base file, the exporter follows Podman's socket (read-only, at the Docker socket's
    place) with Docker off; its privileges and every other service stay the base file's."""
    base, podman = compose_config(COMPOSE), compose_config(COMPOSE, COMPOSE_PODMAN)
    exporter = podman["services"]["exporter"]
    assert volume_strings(exporter) == {"/run/podman/podman.sock:/var/run/docker.sock:ro"}
    assert exporter["command"] == [
        "--web.listen-address=:9917",
        "--docker.host=",
        "--podman.host=unix:///var/run/docker.sock",
    ]
    assert base["services"]["exporter"]["command"] == ["--web.listen-address=:9917"]
    for config in (base, podman):
        config["services"] = {k: merge_independent(v) for k, v in config["services"].items()}
        for key in ("volumes", "command"):
            del config["services"]["exporter"][key]
    assert podman == base


def test_compose_provisions_the_files_of_grafana():
    services = compose_config(COMPOSE)["services"]
    prom_mounts = volume_strings(services["prometheus"])
    assert f"{GRAFANA / 'prometheus'}:/etc/prometheus/rules:ro" in prom_mounts
    grafana = services["grafana"]
    mounts = volume_strings(grafana)
    provider = yaml.safe_load(
        (GRAFANA / "provisioning" / "dashboards" / "dockernet.yml").read_text()
    )
    dashboards_path = provider["providers"][0]["options"]["path"]
    assert f"{GRAFANA / 'dashboards'}:{dashboards_path}:ro" in mounts
    for kind in ("datasources", "dashboards"):
        assert f"{GRAFANA / 'provisioning' / kind}:/etc/grafana/provisioning/{kind}:ro" in mounts
    datasource = (GRAFANA / "provisioning" / "datasources" / "dockernet.yml").read_text()
    assert (
        "${PROMETHEUS_URL}" in datasource
        and grafana["environment"]["PROMETHEUS_URL"] == "http://prometheus:9090"
    )


def test_compose_prometheus_config_loads_the_rules_and_names_the_job():
    config = DEPLOY / "compose" / "prometheus.yml"
    r = subprocess.run(["promtool", "check", "config", str(config)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    rule_files = len(list((GRAFANA / "prometheus").glob("*.yml")))
    assert f"SUCCESS: {rule_files} rule files found" in r.stdout
    jobs = [j["job_name"] for j in yaml.safe_load(config.read_text())["scrape_configs"]]
    assert (
        jobs == ["dockernet"]
        and 'job="dockernet"' in (GRAFANA / "prometheus" / "dockernet.rules.yml").read_text()
    )


def test_swarm_stack_runs_globally_with_the_documented_privileges():
    spec = documented_spec()
    svc = compose_config(SWARM)["services"]["exporter"]
    assert svc["deploy"]["mode"] == "global"
    assert caps(svc) == (spec.cap_add, spec.cap_drop) and svc["read_only"] is True
    # Swarm has no host PID namespace: the host's /proc instead, read-only; Docker's exec root's
    # netns/ for the overlays' namespaces.
    assert volume_strings(svc) == spec.volumes | {"/proc:/host/proc:ro", NETNS_MOUNT}
    assert "--path.procfs=/host/proc" in svc["command"]
    (network,) = svc["networks"]
    assert compose_config(SWARM)["networks"][network] == {"external": True, "name": "host"}


def test_swarm_stack_sees_overlay_namespaces_made_after_it_started():
    """As the Swarm CLI reads the stack: Docker's netns/ read-only at the exporter's default exec
    root, with rslave propagation (each overlay's namespace is a mount made there later); a dockerd
    with another --exec-root is DOCKER_EXEC_ROOT."""
    for exec_root in ("", "/run/docker-alt"):
        env = dict(os.environ, DOCKERNET_IMAGE="dockernet-exporter", DOCKER_EXEC_ROOT=exec_root)
        r = subprocess.run(
            ["docker", "stack", "config", "-c", str(SWARM)],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
        )
        assert r.returncode == 0, r.stderr
        (svc,) = yaml.safe_load(r.stdout)["services"].values()
        (mount,) = [v for v in svc["volumes"] if v["target"] == "/var/run/docker/netns"]
        assert mount == {
            "type": "bind",
            "source": f"{exec_root or '/var/run/docker'}/netns",
            "target": "/var/run/docker/netns",
            "read_only": True,
            "bind": {"propagation": "rslave"},
        }


def unit_settings() -> dict:
    settings = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            settings[key] = value
    return settings


def test_systemd_unit_verifies_and_is_hardened(tmp_path):
    installed = Path(sys.executable).parent / "dockernet-exporter"
    text = UNIT.read_text().replace("/usr/local/bin/dockernet-exporter", str(installed))
    unit = tmp_path / UNIT.name
    unit.write_text(text)
    r = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 0 and UNIT.name not in r.stderr, r.stderr
    s = unit_settings()
    assert set(s["CapabilityBoundingSet"].split()) == {
        f"CAP_{c}" for c in documented_spec().cap_add
    }
    assert (
        s["NoNewPrivileges"] == "yes"
        and s["ProtectSystem"] == "strict"
        and s["ProtectHome"] == "yes"
    )
    assert "AmbientCapabilities" not in s and "User" not in s


def bounded(caps_: set, port: int) -> subprocess.Popen:
    """The exporter as the unit runs it: root, bounding set limited to caps_, no new privileges."""
    bounding = "-all," + ",".join(f"+{c.lower()}" for c in sorted(caps_))
    return subprocess.Popen(
        [
            "setpriv",
            f"--bounding-set={bounding}",
            "--inh-caps=-all",
            "--no-new-privs",
            "--",
            *EXPORTER,
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_systemd_bounding_set_is_enough_and_each_capability_needed(containers):
    cap_set = {c.removeprefix("CAP_") for c in unit_settings()["CapabilityBoundingSet"].split()}
    c = containers.run()
    port = free_port()
    p = bounded(cap_set, port)
    try:

        def veth_of_container():
            assert p.poll() is None, p.stderr and p.stderr.read()
            try:
                text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
            except requests.RequestException:
                return False
            return [
                l for l in text.splitlines() if l.startswith("dockernet_veth_info") and c.id in l
            ]

        (line,) = wait_for(veth_of_container, what="the container's veth under the bounding set")
        assert 'interface="eth0"' in line and 'bridge="docker0"' in line
    finally:
        p.terminate()
        p.wait(10)
    for cap in ("NET_ADMIN", "SYS_PTRACE"):
        q = bounded(cap_set - {cap}, free_port())
        _, err = q.communicate(timeout=20)
        assert q.returncode == 1 and f"CAP_{cap}" in err, err
