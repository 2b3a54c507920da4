"""dockernet-exporter: Docker's host-side networking for Prometheus."""

__version__ = "0.1.0"
