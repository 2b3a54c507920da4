"""The workload sources that the flags ask for: one per runtime."""

from __future__ import annotations

import argparse

from .sources.docker import DockerSource
from .sources.workloads import WorkloadSource


class SourceConfigError(ValueError):
    """A source's address is not one the exporter can use; one line."""


def from_args(args: argparse.Namespace) -> list[WorkloadSource]:
    try:
        return [DockerSource(args.docker_host, args.docker_timeout)]
    except ValueError as exc:
        raise SourceConfigError(f"--docker.host: {exc}") from None
