"""One module per dashboard; each build() returns the dashboard's JSON as a dict."""

from __future__ import annotations

from . import bridges, container_network, flows, health, nat, overlay, pod_network

# output file name (under grafana/dashboards/) -> builder
ALL = {
    "dockernet-container-network.json": container_network.build,
    "dockernet-pod-network.json": pod_network.build,
    "dockernet-bridges.json": bridges.build,
    "dockernet-nat.json": nat.build,
    "dockernet-overlay.json": overlay.build,
    "dockernet-exporter.json": health.build,
    "dockernet-flows.json": flows.build,
}
