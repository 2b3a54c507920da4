"""The committed Grafana dashboards: up to date with their generator, and well formed."""

from __future__ import annotations

import ast
import importlib
import itertools
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DASHBOARDS = sorted((ROOT / "grafana/dashboards").glob("*.json"))
DS_VAR = "${datasource}"
# Metrics (raw or recorded) whose series are per container: their legends must name it.
PER_CONTAINER = re.compile(r"dockernet_container_(?!info)|dockernet_published_port_")
PER_POD = re.compile(r"dockernet_pod_(?!info)")


def load(path: Path) -> dict:
    return json.loads(path.read_text())


def panels(dash: dict) -> list:
    return [p for p in dash["panels"] if p["type"] != "row"]


def overlaps(a: dict, b: dict) -> bool:
    return (
        a["x"] < b["x"] + b["w"]
        and b["x"] < a["x"] + a["w"]
        and a["y"] < b["y"] + b["h"]
        and b["y"] < a["y"] + a["h"]
    )


def test_generated_files_are_up_to_date():
    run = subprocess.run(
        [sys.executable, "-m", "grafana.mixin", "--check"], cwd=ROOT, capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr


def test_seven_dashboards_with_unique_uids_and_titles():
    dashes = [load(p) for p in DASHBOARDS]
    assert len(dashes) == 7
    assert len({d["uid"] for d in dashes}) == 7
    assert len({d["title"] for d in dashes}) == 7
    assert all(len(d["uid"]) <= 40 for d in dashes)  # Grafana's limit


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.stem)
def test_every_panel_and_query_uses_the_datasource_variable(path):
    dash = load(path)
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for v in variables.values():
        if v["type"] == "query":
            assert v["datasource"]["uid"] == DS_VAR, v["name"]
    for p in panels(dash):
        assert p["datasource"]["uid"] == DS_VAR, p["title"]
        assert p["targets"], p["title"]
        for t in p["targets"]:
            assert t["datasource"]["uid"] == DS_VAR, p["title"]


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.stem)
def test_unique_panel_ids_and_no_overlap(path):
    dash = load(path)
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    titles = [p["title"] for p in panels(dash)]
    assert len(titles) == len(set(titles)), "two panels with one title"
    grid = [p["gridPos"] for p in dash["panels"]]
    for g in grid:
        assert g["x"] >= 0 and g["w"] > 0 and g["h"] > 0 and g["x"] + g["w"] <= 24
    for (a, pa), (b, pb) in itertools.combinations(zip(grid, dash["panels"], strict=False), 2):
        assert not overlaps(a, b), f"{pa['title']!r} overlaps {pb['title']!r}"


def test_overlap_check_sees_an_overlap():
    assert overlaps({"x": 0, "y": 0, "w": 12, "h": 8}, {"x": 11, "y": 7, "w": 12, "h": 8})
    assert not overlaps({"x": 0, "y": 0, "w": 12, "h": 8}, {"x": 12, "y": 0, "w": 12, "h": 8})


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.stem)
def test_units_and_legends(path):
    for p in panels(load(path)):
        if p["type"] in ("timeseries", "bargauge", "stat"):
            assert p["fieldConfig"]["defaults"].get("unit"), f"{p['title']!r} has no unit"
        if p["type"] in ("timeseries", "bargauge"):
            for t in p["targets"]:
                assert t["legendFormat"], p["title"]
                if PER_CONTAINER.search(t["expr"]):
                    assert "{{container_name}}" in t["legendFormat"], p["title"]
                if PER_POD.search(t["expr"]):
                    assert "{{namespace}}/{{pod}}" in t["legendFormat"], p["title"]


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.stem)
def test_every_panel_has_a_description_and_a_doc_section(path):
    dash = load(path)
    doc = ROOT / "docs/dashboards" / (dash["uid"].removeprefix("dockernet-") + ".md")
    text = doc.read_text()
    for p in panels(dash):
        assert p["description"], p["title"]
        assert f"\n### {p['title']}\n" in text, (
            f"{doc.name} has no section for panel {p['title']!r}"
        )


def test_pod_dashboard_has_every_panel_of_the_container_one_but_dockers_own():
    """Same panels, pod variables instead of the container's, every query filtered by both."""
    pods, containers = (
        load(ROOT / f"grafana/dashboards/dockernet-{k}-network.json") for k in ("pod", "container")
    )
    titles = {p["title"].replace("container", "pod") for p in panels(containers)}
    assert {p["title"] for p in panels(pods)} == titles - {"Firewall drops"}
    assert [v["name"] for v in pods["templating"]["list"]][-2:] == ["namespace", "pod"]
    for p in panels(pods):
        for t in p["targets"]:
            per_pod = "dockernet_pod_" in t["expr"] or p["type"] == "table"
            assert not per_pod or (
                'namespace=~"$namespace"' in t["expr"] and 'pod=~"$pod"' in t["expr"]
            ), p["title"]


def test_boards_declare_panels_only_through_the_mixins_public_helpers():
    """A panel kind or column that two boards share is one helper of grafana/mixin/panels.py: no
    board builds raw panels with its private ones."""
    for module in sorted((ROOT / "grafana/mixin/dashboards").glob("*.py")):
        tree = ast.parse(module.read_text())
        imported = [
            a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) for a in n.names
        ]
        reached = [n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)]
        assert [n for n in imported + reached if n.startswith("_")] == [], module.name


def test_shared_panel_helpers():
    p = importlib.import_module("grafana.mixin.panels")  # by name: mypy reads grafana/ as `mixin`

    table = p.host_table("t", "d", "x", {"a": "A"}, value="V", w=12)
    organize = table["transformations"][1]["options"]
    assert organize["renameByName"] == {"a": "A", "instance": "Host", "Value": "V"}
    assert (
        list(organize["indexByName"]) == ["a", "instance", "Value"] and table["gridPos"]["w"] == 12
    )
    assert list(
        p.host_table("t", "d", "x", {"a": "A"})["transformations"][1]["options"]["renameByName"]
    ) == ["a", "instance"]
    graph = p.summed("t", "d", "rate(m[5m])", "instance, a", "{{a}}", "cps", stack=True)
    assert graph["targets"][0]["expr"] == "sum by (instance, a) (rate(m[5m]))"
    assert graph["fieldConfig"]["defaults"]["custom"]["stacking"]["mode"] == "normal"
    orange = p.problems("t", "d", "m == 0", color="orange")
    assert orange["targets"][0]["expr"] == "count(m == 0) or vector(0)"
    assert orange["fieldConfig"]["defaults"]["thresholds"]["steps"][1] == {
        "value": 1,
        "color": "orange",
    }
    nodes = p.node_graph("t", "d", "edges_expr", "nodes_expr")
    assert [(t["refId"], t["expr"], t["format"]) for t in nodes["targets"]] == [
        ("edges", "edges_expr", "table"),
        ("nodes", "nodes_expr", "table"),
    ]


def test_provisioning_points_grafana_at_the_dashboards_and_a_prometheus_datasource():
    prov = ROOT / "grafana/provisioning"
    ds = yaml.safe_load((prov / "datasources/dockernet.yml").read_text())
    assert ds["apiVersion"] == 1
    assert [d["type"] for d in ds["datasources"]] == ["prometheus"]
    dash = yaml.safe_load((prov / "dashboards/dockernet.yml").read_text())
    provider = dash["providers"][0]
    assert provider["type"] == "file" and provider["options"]["path"]


def differences(ours: object, theirs: object, path: str = "") -> list:
    """Paths of ours that theirs lacks or holds another value for."""
    if isinstance(ours, dict):
        return [
            p
            for k, v in ours.items()
            for p in (
                differences(v, theirs[k], f"{path}/{k}")
                if isinstance(theirs, dict) and k in theirs
                else [f"{path}/{k}"]
            )
        ]
    if isinstance(ours, list) and isinstance(theirs, list) and len(ours) == len(theirs):
        return [
            p
            for i, (a, b) in enumerate(zip(ours, theirs, strict=False))
            for p in differences(a, b, f"{path}[{i}]")
        ]
    return [] if ours == theirs else [path]


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.stem)
def test_every_field_is_known_to_grafanas_own_schema(path):
    """A round trip through Grafana's typed dashboard and panel models (grafana-foundation-sdk, generated
    from Grafana's schema) drops every field and option those do not know."""
    from grafana_foundation_sdk.cog.encoder import JSONEncoder
    from grafana_foundation_sdk.cog.plugins import register_default_plugins
    from grafana_foundation_sdk.models.dashboard import Dashboard

    register_default_plugins()
    ours = load(path)
    theirs = json.loads(json.dumps(Dashboard.from_json(ours), cls=JSONEncoder))
    # `definition` is the text Grafana's editor shows for a query variable; the model does not keep it.
    ignored = {f"/templating/list[{i}]/definition" for i in range(len(ours["templating"]["list"]))}
    assert [d for d in differences(ours, theirs) if d not in ignored] == []
