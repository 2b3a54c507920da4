"""Builders of Grafana dashboard JSON (schema 39) as plain dicts.

Panels are declared with a width and height only; layout() flows them left
to right into the 24-column grid and numbers them, so no two ever overlap.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from . import config

GRID_WIDTH = 24
DS = {"type": config.DATASOURCE_TYPE, "uid": f"${{{config.DATASOURCE_VAR}}}"}


def sel(*matchers: str, instance: bool = True) -> str:
    """The shared selector plus the instance variable and extra matchers."""
    parts = [config.SELECTOR] + (['instance=~"$instance"'] if instance else []) + list(matchers)
    return "{" + ", ".join(parts) + "}"


def target(expr: str, legend: str = "") -> dict:
    return {"datasource": DS, "expr": expr, "legendFormat": legend, "range": True, "instant": False}


def instant(expr: str) -> dict:
    """A query whose result is a table of label columns (one row per series)."""
    return {"datasource": DS, "expr": expr, "format": "table", "range": False, "instant": True}


def steps(*pairs: tuple[float | None, str]) -> dict:
    """steps((None, 'green'), (0.9, 'red')): threshold steps, the first one the base."""
    return {"mode": "absolute", "steps": [{"value": v, "color": c} for v, c in pairs]}


def mapping(values: dict) -> list:
    """{'1': ('present', 'green')} -> a Grafana value mapping."""
    return [
        {
            "type": "value",
            "options": {
                k: {"text": t, "color": c, "index": i}
                for i, (k, (t, c)) in enumerate(values.items())
            },
        }
    ]


def _panel(
    kind: str, title: str, description: str, targets: list, w: int, h: int, **extra: object
) -> dict:
    for i, t in enumerate(targets):
        t["refId"] = chr(ord("A") + i)
    return {
        "type": kind,
        "title": title,
        "description": description,
        "datasource": DS,
        "targets": targets,
        "gridPos": {"w": w, "h": h},
        **extra,
    }


def timeseries(
    title: str,
    description: str,
    targets: list,
    unit: str,
    w: int = 12,
    h: int = 8,
    thresholds: dict | None = None,
    stack: bool = False,
) -> dict:
    custom = {
        "drawStyle": "line",
        "lineWidth": 1,
        "fillOpacity": 10,
        "showPoints": "never",
        "spanNulls": False,
        "stacking": {"mode": "normal" if stack else "none", "group": "A"},
        "thresholdsStyle": {"mode": "line" if thresholds else "off"},
    }
    defaults = {
        "unit": unit,
        "min": 0,
        "custom": custom,
        "thresholds": thresholds or steps((None, "green")),
    }
    options = {
        "legend": {
            "displayMode": "table",
            "placement": "bottom",
            "showLegend": True,
            "calcs": ["mean", "max", "lastNotNull"],
            "sortBy": "Max",
            "sortDesc": True,
        },
        "tooltip": {"mode": "multi", "sort": "desc"},
    }
    return _panel(
        "timeseries",
        title,
        description,
        targets,
        w,
        h,
        fieldConfig={"defaults": defaults, "overrides": []},
        options=options,
    )


def stat(
    title: str,
    description: str,
    targets: list,
    unit: str = "none",
    w: int = 6,
    h: int = 4,
    thresholds: dict | None = None,
    mappings: list | None = None,
    text_mode: str = "auto",
) -> dict:
    defaults = {
        "unit": unit,
        "thresholds": thresholds or steps((None, "green")),
        "mappings": mappings or [],
        "color": {"mode": "thresholds"},
    }
    options = {
        "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
        "colorMode": "background",
        "graphMode": "none",
        "textMode": text_mode,
        "justifyMode": "auto",
        "orientation": "auto",
    }
    return _panel(
        "stat",
        title,
        description,
        targets,
        w,
        h,
        fieldConfig={"defaults": defaults, "overrides": []},
        options=options,
    )


def bargauge(
    title: str,
    description: str,
    targets: list,
    unit: str,
    w: int = 12,
    h: int = 8,
    max_value: float | None = None,
    thresholds: dict | None = None,
) -> dict:
    defaults = {
        "unit": unit,
        "min": 0,
        "thresholds": thresholds or steps((None, "green")),
        "color": {"mode": "thresholds"},
    }
    if max_value is not None:
        defaults["max"] = max_value
    options = {
        "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
        "orientation": "horizontal",
        "displayMode": "gradient",
        "showUnfilled": True,
        "minVizHeight": 10,
        "minVizWidth": 0,
        "valueMode": "color",
    }
    return _panel(
        "bargauge",
        title,
        description,
        targets,
        w,
        h,
        fieldConfig={"defaults": defaults, "overrides": []},
        options=options,
    )


def table(
    title: str,
    description: str,
    expr: str,
    columns: dict,
    w: int = 24,
    h: int = 8,
    mappings: list | None = None,
    unit: str = "none",
) -> dict:
    """columns: {field name (label, or 'Value'): header}, in display order; the rest is hidden."""
    names = list(columns)
    transformations = [
        {"id": "filterFieldsByName", "options": {"include": {"names": names}}},
        {
            "id": "organize",
            "options": {
                "indexByName": {n: i for i, n in enumerate(names)},
                "renameByName": columns,
                "excludeByName": {},
            },
        },
    ]
    defaults = {
        "unit": unit,
        "mappings": mappings or [],
        "thresholds": steps((None, "green")),
        "custom": {
            "align": "auto",
            "filterable": True,
            "cellOptions": {"type": "color-background" if mappings else "auto"},
        },
    }
    options = {
        "showHeader": True,
        "cellHeight": "sm",
        "footer": {"show": False, "reducer": ["sum"]},
    }
    return _panel(
        "table",
        title,
        description,
        [instant(expr)],
        w,
        h,
        transformations=transformations,
        fieldConfig={"defaults": defaults, "overrides": []},
        options=options,
    )


def host_table(
    title: str, description: str, expr: str, columns: dict, value: str = "", **extra: Any
) -> dict:
    """A table of `columns`, then each row's host and, when `value` names it, the series' value."""
    ends = {"instance": "Host"} | ({"Value": value} if value else {})
    return table(title, description, expr, columns | ends, **extra)


def summed(
    title: str, description: str, series: str, by: str, legend: str, unit: str, **extra: Any
) -> dict:
    """A graph of `series` summed by the labels `by`: one line per group."""
    return timeseries(
        title, description, [target(f"sum by ({by}) ({series})", legend)], unit, **extra
    )


def node_graph(
    title: str, description: str, edges: str, nodes: str, w: int = 24, h: int = 14
) -> dict:
    """A Node Graph of two instant queries: edges (id, source, target) and nodes (id, title), the
    value of each its main statistic."""
    panel = _panel(
        "nodeGraph",
        title,
        description,
        [instant(edges), instant(nodes)],
        w,
        h,
        transformations=[
            {
                "id": "organize",
                "options": {
                    "renameByName": {"Value #edges": "mainstat", "Value #nodes": "mainstat"}
                },
            }
        ],
    )
    panel["targets"][0]["refId"], panel["targets"][1]["refId"] = "edges", "nodes"
    return panel


def row(title: str) -> dict:
    return {
        "type": "row",
        "title": title,
        "collapsed": False,
        "panels": [],
        "gridPos": {"w": GRID_WIDTH, "h": 1},
    }


def layout(panels: list) -> list:
    """Number the panels and flow them into the grid, a row panel starting a new line."""
    x = y = line_height = 0
    for pid, p in enumerate(panels, 1):
        w, h = p["gridPos"]["w"], p["gridPos"]["h"]
        if p["type"] == "row" or x + w > GRID_WIDTH:
            x, y, line_height = 0, y + line_height, 0
        p["id"] = pid
        p["gridPos"] = {"h": h, "w": w, "x": x, "y": y}
        x, line_height = x + w, max(line_height, h)
    return panels


def datasource_variable() -> dict:
    return {
        "name": config.DATASOURCE_VAR,
        "label": "Data source",
        "type": "datasource",
        "query": config.DATASOURCE_TYPE,
        "current": {},
        "hide": 0,
        "refresh": 1,
        "regex": "",
        "options": [],
        "includeAll": False,
        "multi": False,
    }


def query_variable(
    name: str, label: str, expr: str, label_name: str, all_value: str = ".*"
) -> dict:
    """A multi-value variable of the values of one label, with an All option."""
    query = f"label_values({expr}, {label_name})"
    return {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": DS,
        "query": {"query": query, "refId": f"{name}-variable"},
        "definition": query,
        "refresh": 2,
        "sort": 1,
        "multi": True,
        "includeAll": True,
        "allValue": all_value,
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
        "hide": 0,
        "regex": "",
        "options": [],
    }


def instance_variable() -> dict:
    return query_variable(
        "instance",
        "Host",
        f"dockernet_exporter_build_info{{{config.SELECTOR}}}",
        "instance",
        all_value=".+",
    )


def dashboard(
    slug: str, title: str, description: str, panels: list, variables: Sequence[dict] = ()
) -> dict:
    return {
        "uid": f"{config.UID_PREFIX}-{slug}",
        "title": title,
        "description": description,
        "tags": list(config.TAGS),
        "timezone": config.TIMEZONE,
        "refresh": config.REFRESH,
        "time": {"from": config.TIME_FROM, "to": "now"},
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "graphTooltip": 1,
        "links": [
            {
                "type": "dashboards",
                "title": "dockernet",
                "tags": [config.TAGS[0]],
                "asDropdown": True,
                "includeVars": True,
                "keepTime": True,
            }
        ],
        "annotations": {"list": []},
        "templating": {"list": [datasource_variable(), instance_variable(), *variables]},
        "panels": layout(panels),
    }


def problems(title: str, description: str, expr: str, w: int = 6, color: str = "red") -> dict:
    """A stat of how many series match expr: green at 0, `color` from 1."""
    return stat(
        title,
        description,
        [target(f"count({expr}) or vector(0)")],
        w=w,
        thresholds=steps((None, "green"), (1, color)),
    )
