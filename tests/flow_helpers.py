"""Flows tests' helpers: connections made from a container's own namespace (the host's Python
under nsenter), `conntrack -L` as the ground truth, and waits on the exporter's flow series."""

from __future__ import annotations

import subprocess
import sys
from typing import TYPE_CHECKING, NamedTuple

import pytest

from helpers import ExporterProcess, Metrics, sh, wait_for

if TYPE_CHECKING:
    from docker.models.containers import Container
    from docker.models.networks import Network

CONNECT = """
import socket, sys
host, port, n, timeout = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
ok = 0
for _ in range(n):
    s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    s.settimeout(timeout)
    try:
        s.connect((host, port))
        ok += 1
    except OSError:
        pass
    s.close()
print(ok)
"""


class Named(NamedTuple):
    """A peer that is not a container (host, other), as flow() takes one."""

    name: str


def start_exporter(*extra: str) -> ExporterProcess:
    exporter = ExporterProcess(
        "--collector.flows",
        "--collector.flows.unanswered-after=1s",
        "--collector.flows.counters-interval=1s",
        *extra,
    ).wait_ready()
    wait_for(
        lambda: (
            exporter.metrics().get_value("dockernet_scrape_collector_success", collector="flows")
            == 1
        ),
        30,
        what="the flows collector following the conntrack table",
    )
    return exporter


def address(container: Container, network: Network) -> str:
    container.reload()
    return container.attrs["NetworkSettings"]["Networks"][network.name]["IPAddress"]


def netns(container: Container) -> str:
    return f"--net=/proc/{container.attrs['State']['Pid']}/ns/net"


def in_netns(container: Container, code: str, *args: object) -> str:
    return sh("nsenter", netns(container), sys.executable, "-c", code, *map(str, args))


def connect(client: Container, host: str, port: int, n: int, timeout: float = 2.0) -> int:
    """n connections from the client's namespace; how many were accepted."""
    return int(in_netns(client, CONNECT, host, port, n, timeout))


def conntrack(*args: str) -> list[str]:
    """`conntrack -L` lines for a filter (the table as conntrack-tools sees it)."""
    out = subprocess.run(["conntrack", "-L", *args], capture_output=True, text=True, check=False)
    return [l for l in out.stdout.splitlines() if l.strip()]


def flow(
    metrics: Metrics,
    name: str,
    source: Container | Named,
    destination: Container | Named,
    port: object,
    proto: str = "tcp",
) -> float | None:
    return metrics.get_value(
        name, source=source.name, destination=destination.name, protocol=proto, port=port
    )


def settled(
    exporter: ExporterProcess,
    name: str,
    source: Container | Named,
    destination: Container | Named,
    port: object,
    want: float | None,
    proto: str = "tcp",
) -> Metrics:
    """Wait until the flow's value is `want`; return the metrics then."""
    found: dict = {}

    def check():
        found["m"] = exporter.metrics()
        found["v"] = flow(found["m"], name, source, destination, port, proto)
        return found["v"] == want

    what = f"{name} {source.name}->{destination.name}:{port}"
    try:
        wait_for(check, 15, what=f"{what} == {want}")
    except pytest.fail.Exception:
        lost = found["m"].get_value("dockernet_flow_events_lost_total") if "m" in found else None
        pytest.fail(f"{what} is {found.get('v')} after 15s, not {want} (events lost: {lost})")
    return found["m"]


def known(exporter: ExporterProcess, *workloads: Container) -> None:
    """Wait until the exporter's snapshot has the containers."""
    names = {c.name for c in workloads}
    wait_for(
        lambda: (
            names
            <= {
                l.get("container_name")
                for l, _v in exporter.metrics().get("dockernet_container_info", [])
            }
        ),
        15,
        what=f"the exporter knowing {names}",
    )


def drop_syns(server: Container, port: int) -> None:
    """A rule in the server's own namespace that drops what comes to that TCP port."""
    sh(
        "nsenter",
        netns(server),
        "iptables",
        "-A",
        "INPUT",
        "-p",
        "tcp",
        "--dport",
        str(port),
        "-j",
        "DROP",
    )
