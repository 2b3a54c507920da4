"""Dashboards, alert and recording rules for dockernet-exporter, generated
from one config (config.py), the way the monitoring mixins do it.

`python -m grafana.mixin` writes the outputs under grafana/; with `--check`
it only compares them and fails on any difference.
"""
