"""The workload sources that the flags ask for: one per runtime."""

from __future__ import annotations

import argparse
import os

from exporter import logs
from exporter.app.flags import DEFAULT_CRI_ENDPOINT, DEFAULT_DOCKER_EXEC_ROOT
from exporter.sources.runtimes import grpc_probe
from exporter.sources.runtimes.docker import DockerSource
from exporter.sources.runtimes.workloads import WorkloadSource

log = logs.get_logger()

CRI_VERSION = "/runtime.v1.RuntimeService/Version"


class SourceConfigError(ValueError):
    """A source's address is not one the exporter can use; one line."""


def from_args(args: argparse.Namespace) -> list[WorkloadSource]:
    """Docker unless --docker.host is '' (a node without Docker), Podman and the CRI (see
    podman_source and cri_source)."""
    sources: list[WorkloadSource] = []
    if args.docker_host != "":
        try:
            exec_root = getattr(args, "docker_exec_root", DEFAULT_DOCKER_EXEC_ROOT)
            sources.append(DockerSource(args.docker_host, args.docker_timeout, exec_root))
        except ValueError as exc:
            raise SourceConfigError(f"--docker.host: {exc}") from None
    podman = podman_source(getattr(args, "podman_host", None), args.docker_timeout)
    cri = cri_source(
        getattr(args, "cri_endpoint", None),
        getattr(args, "cri_timeout", 10.0),
        getattr(args, "cri_events", "auto"),
        getattr(args, "cri_poll_interval", 1.0),
    )
    return sources + [s for s in (podman, cri) if s is not None]


def podman_source(host: str | None, timeout: float) -> WorkloadSource | None:
    """Podman: always when its socket is given; at the default path when it exists and answers."""
    if host == "":
        return None
    from exporter.sources.runtimes.podman import DEFAULT_HOST, PodmanSource

    try:
        source = PodmanSource(host or DEFAULT_HOST, timeout)
    except ValueError as exc:
        raise SourceConfigError(f"--podman.host: {exc}") from None
    if host is not None:
        return source
    if os.path.exists(DEFAULT_HOST.removeprefix("unix://")) and source.ping():
        return source
    source.close()
    return None


def cri_source(
    endpoint: str | None, timeout: float, events: str = "auto", poll_interval: float = 1.0
) -> WorkloadSource | None:
    """The CRI source: always when its endpoint is given (down until it answers); at the default
    endpoint only when the socket exists and answers the CRI's Version, so that a node without
    containerd (or whose containerd is Docker's, without the CRI plugin) keeps its runtimes all up.
    That one probe speaks HTTP/2 itself (sources/grpc_probe.py): grpcio and the CRI's modules load
    only where a CRI answers."""
    if endpoint == "" or (endpoint is None and not os.path.exists(DEFAULT_CRI_ENDPOINT)):
        return None
    if endpoint is None:
        why = grpc_probe.call(DEFAULT_CRI_ENDPOINT, CRI_VERSION)
        if why is not None:
            log.warning(
                "cri_not_used",
                endpoint=DEFAULT_CRI_ENDPOINT,
                error=why,
                detail="pods are not named; give --cri.endpoint to follow it anyway",
            )
            return None
    # The CRI's modules (and grpcio) only where a CRI answers.
    from exporter.sources.runtimes import cri

    return cri.CriSource(
        endpoint or DEFAULT_CRI_ENDPOINT, timeout, events=events, poll_interval=poll_interval
    )
