"""The Helm chart, rendered and linted with Helm's own library (no helm binary)
for the default values and each ci/*-values.yaml, every manifest validated
offline against the Kubernetes schemas, the rules checked by promtool, and the
properties that matter asserted: host namespaces, read-only mounts, the
privileges of the documented `docker run` line, and the rules and dashboards
identical to the files in grafana/ (read now, not copied)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Mapping
from pathlib import Path

import helm_python as helm
import kubernetes_validate
import pytest
import yaml
from deployspec import GRAFANA, ROOT, documented_spec

from exporter.sources.runtimes.cni_cache import RESULTS as CNI_RESULTS

CHART = ROOT / "helm" / "dockernet-exporter"
CI_VALUES = sorted((CHART / "ci").glob("*-values.yaml"))
KUBE_VERSIONS = ("1.25.0", kubernetes_validate.latest_version())
CRD_KINDS = {"ServiceMonitor", "PrometheusRule"}
RULES = GRAFANA / "prometheus" / "dockernet.rules.yml"
DASHBOARDS = sorted((GRAFANA / "dashboards").glob("*.json"))

helm.disable_logging()


def render(values: dict) -> list:
    chart = helm.Chart.load(str(CHART))
    chart.validate_schema(values)
    out = chart.render(values, name="dnx", namespace="monitoring", is_install=True)
    docs = []
    for path, text in sorted(out.items()):
        if not path.endswith(".yaml"):
            continue
        docs += [d for d in yaml.safe_load_all(text) if d]
    return docs


def one(docs: list, kind: str) -> dict:
    (doc,) = [d for d in docs if d["kind"] == kind]
    return doc


def values_of(path: Path) -> dict:
    return yaml.safe_load(path.read_text()) or {}


@pytest.fixture(scope="module")
def everything() -> list:
    return render(values_of(CHART / "ci" / "all-features-values.yaml"))


def test_ci_values_cover_the_opt_ins():
    names = {p.name for p in CI_VALUES}
    assert {
        "default-values.yaml",
        "all-features-values.yaml",
        "host-proc-values.yaml",
        "secure-values.yaml",
        "docker-values.yaml",
        "k3s-values.yaml",
        "containerd-and-docker-values.yaml",
        "crio-values.yaml",
    } <= names


@pytest.mark.parametrize("values_file", CI_VALUES, ids=lambda p: p.name)
def test_lint_and_validate_every_manifest(values_file):
    values = values_of(values_file)
    report = helm.lint(str(CHART), values, strict=True)
    problems = [m for m in report["messages"] if m["severity"] >= 2] + report["errors"]
    assert not problems, problems
    docs = render(values)
    assert {"DaemonSet", "Service", "ServiceAccount"} <= {d["kind"] for d in docs}
    for doc in docs:
        if doc["kind"] in CRD_KINDS:
            continue
        for version in KUBE_VERSIONS:
            kubernetes_validate.validate(doc, version, strict=True)


def test_schema_rejects_nonsense():
    chart = helm.Chart.load(str(CHART))
    bad: Mapping[str, object]
    for bad in (
        {"port": "http"},
        {"hostPID": "yes"},
        {"serviceMonitor": {"scheme": "ftp"}},
        {"imagee": {}},
        {"extraArgs": ["no-dashes"]},
        {"cri": {"events": "inotify"}},
        {"cri": {"pollInterval": "soon"}},
    ):
        with pytest.raises(helm.HelmValuesError):
            chart.validate_schema(bad)


def test_daemonset_has_the_privileges_of_the_documented_run_line():
    spec = documented_spec()
    docker_node = values_of(CHART / "ci" / "docker-values.yaml")
    pod = one(render(docker_node), "DaemonSet")["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    sc = c["securityContext"]
    assert pod["hostNetwork"] is spec.network_host is True
    assert pod["hostPID"] is spec.pid_host is True
    assert sc["readOnlyRootFilesystem"] is spec.read_only is True
    assert sc["allowPrivilegeEscalation"] is False and spec.no_new_privileges
    assert set(sc["capabilities"]["drop"]) == spec.cap_drop
    assert set(sc["capabilities"]["add"]) == spec.cap_add
    assert sc["privileged"] is False
    mounts = {m["name"]: m for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert all(m.get("readOnly") for m in mounts.values())
    (socket,) = [v for v in spec.volumes if "docker.sock" in v]
    host_path, _, mode = socket.partition(":")[0], None, socket.rsplit(":", 1)[1]
    assert (
        volumes["docker-socket"]["hostPath"] == {"path": host_path, "type": "Socket"}
        and mode == "ro"
    )
    assert f"--docker.host=unix://{mounts['docker-socket']['mountPath']}" in c["args"]
    assert pod["tolerations"] == [{"operator": "Exists"}]
    assert "limits" not in c["resources"] and c["resources"]["requests"]
    assert pod["automountServiceAccountToken"] is False


def test_containerd_node_by_default_docker_optional():
    (c,) = one(render({}), "DaemonSet")["spec"]["template"]["spec"]["containers"]
    pod = one(render({}), "DaemonSet")["spec"]["template"]["spec"]
    mounts = {m["name"]: m for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "--cri.endpoint=/host/cri.sock" in c["args"] and "--docker.host=" in c["args"]
    assert "--cri.events=auto" in c["args"] and "--cri.poll-interval=1s" in c["args"]
    assert "docker-socket" not in mounts
    assert volumes["cri-socket"]["hostPath"] == {
        "path": "/run/containerd/containerd.sock",
        "type": "Socket",
    }
    assert (
        mounts["cri-socket"]["mountPath"] == "/host/cri.sock" and mounts["cri-socket"]["readOnly"]
    )
    # Pods' namespace files, at the path the CRI names them, bound after the exporter started.
    assert mounts["netns"]["mountPath"] == volumes["netns"]["hostPath"]["path"] == "/var/run/netns"
    assert mounts["netns"]["mountPropagation"] == "HostToContainer" and mounts["netns"]["readOnly"]
    assert mounts["cni-cache"]["mountPath"] == "/var/lib/cni/results" == CNI_RESULTS
    assert (
        volumes["cni-cache"]["hostPath"]["path"] == CNI_RESULTS and mounts["cni-cache"]["readOnly"]
    )
    k3s = one(render(values_of(CHART / "ci" / "k3s-values.yaml")), "DaemonSet")
    k3s_volumes = {v["name"]: v for v in k3s["spec"]["template"]["spec"]["volumes"]}
    assert k3s_volumes["cri-socket"]["hostPath"]["path"] == "/run/k3s/containerd/containerd.sock"
    both = one(render(values_of(CHART / "ci" / "containerd-and-docker-values.yaml")), "DaemonSet")
    (c,) = both["spec"]["template"]["spec"]["containers"]
    assert {"docker-socket", "cri-socket", "netns"} <= {m["name"] for m in c["volumeMounts"]}


def test_crio_node_reads_its_socket_with_the_same_mounts():
    pod = one(render(values_of(CHART / "ci" / "crio-values.yaml")), "DaemonSet")["spec"][
        "template"
    ]["spec"]
    (c,) = pod["containers"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["cri-socket"]["hostPath"] == {
        "path": "/var/run/crio/crio.sock",
        "type": "Socket",
    }
    assert "--cri.endpoint=/host/cri.sock" in c["args"] and "--cri.events=auto" in c["args"]
    assert volumes["netns"]["hostPath"]["path"] == "/var/run/netns"
    assert volumes["cni-cache"]["hostPath"]["path"] == CNI_RESULTS
    polled = one(render({"cri": {"events": "poll", "pollInterval": "500ms"}}), "DaemonSet")
    (c,) = polled["spec"]["template"]["spec"]["containers"]
    assert {"--cri.events=poll", "--cri.poll-interval=500ms"} <= set(c["args"])


def test_host_proc_instead_of_host_pid():
    pod = one(render(values_of(CHART / "ci" / "host-proc-values.yaml")), "DaemonSet")["spec"][
        "template"
    ]["spec"]
    (c,) = pod["containers"]
    assert pod["hostPID"] is False
    mount = next(m for m in c["volumeMounts"] if m["name"] == "proc")
    assert mount["readOnly"] and f"--path.procfs={mount['mountPath']}" in c["args"]
    assert next(v for v in pod["volumes"] if v["name"] == "proc")["hostPath"]["path"] == "/proc"


def test_secure_values_mount_the_web_config_and_scrape_https():
    docs = render(values_of(CHART / "ci" / "secure-values.yaml"))
    pod = one(docs, "DaemonSet")["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert "--web.config.file=/etc/dockernet-exporter/web.yml" in c["args"]
    assert next(v for v in pod["volumes"] if v["name"] == "web-config")["secret"]["secretName"]
    assert "tcpSocket" in c["readinessProbe"]
    endpoint = one(docs, "ServiceMonitor")["spec"]["endpoints"][0]
    assert endpoint["scheme"] == "https" and endpoint["tlsConfig"] and endpoint["basicAuth"]


def test_probes_live_on_the_port_and_ready_on_healthz_where_it_is_open():
    def probes(values: dict) -> tuple:
        (c,) = one(render(values), "DaemonSet")["spec"]["template"]["spec"]["containers"]
        return c["livenessProbe"], c["readinessProbe"]

    live, ready = probes({})
    assert live["tcpSocket"] == {"port": "metrics"}  # a failed render is no reason to restart
    assert ready["httpGet"] == {"path": "/healthz", "port": "metrics"}
    live, ready = probes({"webConfig": {"secretName": "web"}})
    assert live["tcpSocket"] == ready["tcpSocket"] == {"port": "metrics"}


def test_opt_ins_are_off_by_default():
    assert {d["kind"] for d in render({})} == {"DaemonSet", "Service", "ServiceAccount"}


def test_prometheus_rule_is_the_rules_file(everything, tmp_path):
    rule = one(everything, "PrometheusRule")
    assert rule["spec"] == yaml.safe_load(RULES.read_text())
    extracted = tmp_path / "rules.yml"
    extracted.write_text(yaml.safe_dump(rule["spec"]))
    r = subprocess.run(
        ["promtool", "check", "rules", str(extracted)], capture_output=True, text=True
    )
    assert r.returncode == 0, r.stdout + r.stderr


def test_dashboards_are_the_dashboard_files(everything):
    assert DASHBOARDS, "grafana/dashboards has no dashboard"
    maps = [d for d in everything if d["kind"] == "ConfigMap"]
    shipped = {}
    for cm in maps:
        assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
        shipped.update(cm["data"])
    assert sorted(shipped) == [p.name for p in DASHBOARDS]
    for path in DASHBOARDS:
        assert shipped[path.name] == path.read_text().rstrip("\n")
        assert json.loads(shipped[path.name]) == json.loads(path.read_text())


def test_service_monitor_selects_the_service_and_sets_the_rules_job(everything):
    service = one(everything, "Service")
    monitor = one(everything, "ServiceMonitor")["spec"]
    assert service["spec"]["clusterIP"] == "None"
    assert monitor["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["endpoints"][0]["port"] == service["spec"]["ports"][0]["name"]
    # The rules and dashboards select job="dockernet": that is the value of the jobLabel label.
    assert service["metadata"]["labels"][monitor["jobLabel"]] == "dockernet"
    assert 'job="dockernet"' in RULES.read_text()


def test_network_policy_opens_only_the_metrics_port(everything):
    policy = one(everything, "NetworkPolicy")["spec"]
    (rule,) = policy["ingress"]
    assert rule["ports"] == [{"port": 9917, "protocol": "TCP"}] and rule["from"]
    assert (
        policy["podSelector"]["matchLabels"]
        == one(everything, "DaemonSet")["spec"]["selector"]["matchLabels"]
    )


def test_notes_render():
    notes = helm.Chart.load(str(CHART)).render({}, name="dnx", namespace="monitoring")
    text = notes["dockernet-exporter/templates/NOTES.txt"]
    assert "port-forward ds/dnx-dockernet-exporter 9917" in text and 'job="dockernet"' in text
    assert "through the CRI at /run/containerd/containerd.sock" in text and "Docker's" not in text
    crio = helm.Chart.load(str(CHART)).render(
        values_of(CHART / "ci" / "crio-values.yaml"), name="dnx", namespace="monitoring"
    )["dockernet-exporter/templates/NOTES.txt"]
    assert "through the CRI at /var/run/crio/crio.sock" in crio
