"""Benchmark of dockernet-exporter against node_exporter on a loaded host: `make bench`."""
