"""Command-line building blocks shared by the daemon, the collectors and the
commands: argument types, the parser that fails in one line, the flags of the
workload sources (declared once, accepted before and after a command's name),
and ``--output``. Imports nothing heavy: ``--help`` loads this and little else.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from typing import NoReturn

DEFAULT_DOCKER_HOST = "unix:///var/run/docker.sock"
DEFAULT_DOCKER_EXEC_ROOT = "/var/run/docker"  # dockerd's own default --exec-root
DEFAULT_CRI_ENDPOINT = "/run/containerd/containerd.sock"
OUTPUT_FORMATS = ("table", "json")
CRI_EVENT_MODES = ("auto", "containerd", "cri", "poll")  # exporter.sources.cri_events.MODES


class Parser(argparse.ArgumentParser):
    """Usage errors are one line and exit code 2."""

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"{self.prog}: error: {message} (see --help)\n")
        raise SystemExit(2)


def duration(text: str) -> float:
    """'300', '300s', '5m', '1h', '1.5s', '250ms' -> seconds."""
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m|h)?", text.strip())
    if not m:
        raise argparse.ArgumentTypeError(f"invalid duration {text!r}: use e.g. 30s, 5m, 1h")
    scale = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, None: 1}[m.group(2)]
    return float(m.group(1)) * scale


def positive_duration(text: str) -> float:
    seconds = duration(text)
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"invalid duration {text!r}: must be more than 0")
    return seconds


def byte_size(text: str) -> int:
    """'8MiB', '512KiB', '65536' -> bytes."""
    m = re.fullmatch(r"(\d+)(KiB|MiB)?", text.strip())
    if not m:
        raise argparse.ArgumentTypeError(f"invalid size {text!r}: use e.g. 65536, 512KiB, 8MiB")
    return int(m.group(1)) * {"KiB": 1024, "MiB": 1024 * 1024, None: 1}[m.group(2)]


def procfs_path(text: str) -> str:
    """A procfs mount point: it has a directory per process, pid 1's among them."""
    marker = os.path.join(text, "1", "ns")
    if not os.path.isdir(marker):
        raise argparse.ArgumentTypeError(f"{text!r} is not a procfs mount (no {marker})")
    return text


def parse_listen_address(address: str) -> tuple[str, int]:
    """':9917' -> ('', 9917); '[::1]:9917' -> ('::1', 9917). Raises ValueError."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"invalid listen address {address!r}: expected [host]:port")
    return host.strip("[]"), int(port)


def listen_address(text: str) -> str:
    try:
        parse_listen_address(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def default_docker_host() -> str:
    return os.environ.get("DOCKER_HOST") or DEFAULT_DOCKER_HOST


def add_first_scrape_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--web.first-scrape-wait",
        dest="first_scrape_wait",
        type=duration,
        default="5s",
        help="how long a scrape that arrives before the first read of every runtime waits for it, "
        "then answers with what is known (the server listens at once; default: 5s)",
    )


def add_source_flags(p: argparse.ArgumentParser, after_command: bool = False) -> None:
    """The workload sources' flags. After a command's name they repeat the global ones: their
    default is then SUPPRESS, so that a value given before the name is kept."""

    def default(value: object) -> object:
        return argparse.SUPPRESS if after_command else value

    p.add_argument(
        "--docker.host",
        dest="docker_host",
        default=default(default_docker_host()),
        help="Docker Engine API address; '' turns Docker off (default: $DOCKER_HOST, else the "
        "local socket)",
    )
    p.add_argument(
        "--docker.exec-root",
        dest="docker_exec_root",
        default=default(DEFAULT_DOCKER_EXEC_ROOT),
        help="Docker's exec root (dockerd --exec-root): its network namespaces are the files under "
        f"its netns/ directory (default: {DEFAULT_DOCKER_EXEC_ROOT})",
    )
    p.add_argument(
        "--docker.timeout",
        dest="docker_timeout",
        type=duration,
        default=default(10.0),
        help="timeout of each Docker API call (default: 10s)",
    )
    p.add_argument(
        "--podman.host",
        dest="podman_host",
        default=default(None),
        help="rootful Podman's Docker-compatible API socket; '' turns it off (default: "
        "unix:///run/podman/podman.sock, used when it exists and answers)",
    )
    p.add_argument(
        "--cri.endpoint",
        dest="cri_endpoint",
        default=default(None),
        help="CRI socket of containerd (or CRI-O, k3s) for Kubernetes pods; '' turns it off "
        f"(default: {DEFAULT_CRI_ENDPOINT}, used when it exists and answers the CRI)",
    )
    p.add_argument(
        "--cri.timeout",
        dest="cri_timeout",
        type=duration,
        default=default(10.0),
        help="timeout of each CRI call (default: 10s)",
    )
    p.add_argument(
        "--cri.events",
        dest="cri_events",
        choices=CRI_EVENT_MODES,
        default=default("auto"),
        help="how pods' lifecycle is followed: containerd's events service, the CRI's event stream "
        "(GetContainerEvents: containerd 1.7+, CRI-O), or polling the CRI's listing; auto tries "
        "them in that order, containerd's only where the runtime is containerd (default: auto)",
    )
    p.add_argument(
        "--cri.poll-interval",
        dest="cri_poll_interval",
        type=positive_duration,
        default=default(1.0),
        help="with --cri.events=poll (or auto on a runtime that serves neither stream), the time "
        "between two listings of the pods (default: 1s)",
    )
    p.add_argument(
        "--path.procfs",
        dest="procfs",
        type=procfs_path,
        default=default("/proc"),
        help="procfs mount point: the host's /proc when running in a container (default: /proc)",
    )


def add_output_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--output",
        "-o",
        choices=OUTPUT_FORMATS,
        default="table",
        help="output format (default: table)",
    )
