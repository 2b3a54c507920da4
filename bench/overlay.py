"""Overlay networks' cost, on a Swarm node of its own: a dockerd in a network namespace of its own
(tests/swarm_helpers.py), with the exporter in that namespace against it. The node serves, one after
the other, the same number of containers (`--containers`, 200):

- bridge-only: on two bridge networks;
- overlay: on one attachable overlay per ten containers (20), each container also on docker_gwbridge;

each beside synthetic veth pairs, four per container (800), on bridges in the node's namespace, so
that both sides have as many veths there (1,000: the containers' own on their bridges or on
docker_gwbridge, and the synthetic ones). The median `/metrics` of each side, in the same run, and
the collectors' durations; then `--freshness` containers started on the first overlay one at a
time: from Docker's start event to the first response showing the container's eth0 series, scraped
back to back. Everything it makes goes with the node, also after a failure.
"""

from __future__ import annotations

import concurrent.futures
import functools
import http.client
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from .checks import check
from .freshness import DockerEvents, while_polling
from .load import LABEL, PER_NETNS
from .scrape_curve import collector_ms, settle
from .stats import median, percentile

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from swarm_helpers import Cluster, Node, NodeExporter  # the tests' helpers, by path

from exporter.sources.kernel.overlay import in_namespace

SCRAPE_RATIO, START_P99_MS = 1.25, 150.0
CONTAINERS_PER_OVERLAY, SYNTHETIC_PER_CONTAINER = 10, 4
WORKERS = 4
# In the node's namespace and its overlays' only: the host's Docker networks are not in sight.
BRIDGE_SUBNETS, OVERLAY_SUBNETS = "198.19.{}.0/24", "198.19.{}.0/24"


def scrape_ms(exporter: NodeExporter, repeats: int) -> tuple[float, str]:
    """Median wall time of a full GET /metrics, from the request to the last byte, on a connection
    made in the node's namespace beforehand (entering it costs the client, not the exporter)."""
    times, text = [], ""
    for _ in range(repeats + 2):  # two to warm up
        sock = in_namespace(
            exporter.node.netns, lambda: socket.create_connection(("127.0.0.1", exporter.port), 30)
        )
        conn = http.client.HTTPConnection("127.0.0.1", exporter.port, timeout=30)
        conn.sock = sock
        try:
            started = time.perf_counter()
            conn.request("GET", "/metrics")
            text = conn.getresponse().read().decode()
            times.append((time.perf_counter() - started) * 1000)
        finally:
            conn.close()
    return median(times[2:]), text


def node_veths(node: Node) -> int:
    out = subprocess.run(
        ["ip", "-n", node.name, "-o", "link", "show", "type", "veth"], capture_output=True
    ).stdout
    return len(out.splitlines())


def synthetic_veths(node: Node, n: int) -> list[str]:
    """n veth pairs on a bridge in the node's namespace, their peers ten to a namespace of their
    own; returns those namespaces (deleting them removes the pairs)."""
    spaces = [f"{node.name}-x{k}" for k in range((n + PER_NETNS - 1) // PER_NETNS)]
    lines = [f"netns add {ns}" for ns in spaces]
    subprocess.run(["ip", "-batch", "-"], input="\n".join(lines) + "\n", text=True, check=True)
    lines = ["link add name xbr0 type bridge", "link set xbr0 up"] + [
        f"link add name x{i} master xbr0 up type veth peer name eth{i % PER_NETNS} "
        f"netns {spaces[i // PER_NETNS]}"
        for i in range(n)
    ]
    subprocess.run(
        ["ip", "-n", node.name, "-batch", "-"], input="\n".join(lines) + "\n", text=True, check=True
    )
    return spaces


def shows_eth0(name: str, text: str) -> bool:
    return f'container_name="{name}",interface="eth0"' in text


def run_all(node: Node, network: str, names: list[str], prefix: str, image: str) -> None:
    def run(name: str) -> None:
        node.docker(
            "run", "-d", "--name", name, "--network", network, "--label", f"{LABEL}={prefix}",
            image, "sleep", "3600",
        )  # fmt: skip

    with concurrent.futures.ThreadPoolExecutor(WORKERS) as pool:
        list(pool.map(run, names))


def until(exporter: NodeExporter, shown: Callable[[str], bool], what: str) -> None:
    deadline = time.monotonic() + 300
    while not shown(exporter.text()):
        if time.monotonic() > deadline:
            raise RuntimeError(f"the node's exporter did not show {what} within 300 s")
        time.sleep(1)


def side(node: Node, exporter: NodeExporter, containers: int, repeats: int) -> dict:
    """The figures of one side, once the exporter shows every container and veth and is quiet."""
    until(
        exporter,
        lambda t: t.count("\ndockernet_container_info{") >= containers,
        f"{containers} containers",
    )
    settle(exporter, present=lambda: node_veths(node))  # type: ignore[arg-type]
    ms, text = scrape_ms(exporter, repeats)
    return {
        "ms": round(ms, 3),
        "bytes": len(text),
        "veths": node_veths(node),
        "containers": text.count("\ndockernet_container_info{"),
        "collectors_ms": collector_ms(text),
    }


def bridge_only(
    node: Node, exporter: NodeExporter, prefix: str, image: str, n: int, r: int
) -> dict:
    names = []
    for i in range(2):
        node.docker("network", "create", "--subnet", BRIDGE_SUBNETS.format(200 + i), f"br{i}")
        names.append([f"b{i}-{j}" for j in range(n // 2 + (n % 2 if i == 0 else 0))])
        run_all(node, f"br{i}", names[-1], prefix, image)
    out = side(node, exporter, n, r)
    node.docker("rm", "-f", *(name for group in names for name in group))
    node.docker("network", "rm", "br0", "br1", check=False)  # left empty if Docker refuses
    return out


def overlays(
    node: Node, exporter: NodeExporter, prefix: str, image: str, n: int, networks: int, r: int
) -> dict:
    for i in range(networks):
        node.docker(
            "network", "create", "-d", "overlay", "--attachable",
            "--subnet", OVERLAY_SUBNETS.format(i), f"ov{i}",
        )  # fmt: skip
        count = n // networks + (1 if i < n % networks else 0)
        run_all(node, f"ov{i}", [f"o{i}-{j}" for j in range(count)], prefix, image)
    until(
        exporter,
        lambda t: (
            t.count("\ndockernet_overlay_network_info{") >= networks
            and t.count('interface="eth0"} ') >= 8 * n
        ),  # every container's eth0 counters
        f"{networks} overlays and every container's eth0",
    )
    return side(node, exporter, n, r) | {"networks": networks}


def starts(node: Node, exporter: NodeExporter, prefix: str, image: str, n: int) -> dict:
    """ms from Docker's start event (and from the start call's return) to the first response
    showing the new container's eth0 series; each container removed before the next."""
    import docker

    client = docker.DockerClient(base_url=node.socket, timeout=120)
    events = DockerEvents(client, prefix)
    from_event: list[float] = []
    from_return: list[float] = []
    returned: list[int]
    try:
        for k in range(n):
            name, returned = f"fresh{k}", []
            container = client.containers.create(
                image, "sleep 3600", name=name, network="ov0", labels={LABEL: prefix}
            )
            assert container.id is not None  # a created container has its id
            seen = while_polling(
                exporter,  # type: ignore[arg-type]
                container.start,
                functools.partial(shows_eth0, name),
                name,
                returned,
            )
            from_event.append((seen - events.wait(container.id, "start")) / 1e6)
            from_return.append((seen - returned[0]) / 1e6)
            container.remove(force=True)
    finally:
        events.close()
        client.close()
    return {
        "appear_ms": [round(x, 1) for x in from_event],
        "appear_after_return_ms": [round(x, 1) for x in from_return],
        "appear_p50_ms": round(percentile(from_event, 50), 1),
        "appear_p99_ms": round(percentile(from_event, 99), 1),
        "appear_max_ms": round(max(from_event), 1),
    }


def run(image: str, prefix: str, containers: int, repeats: int, starts_n: int) -> dict:
    networks = max(1, containers // CONTAINERS_PER_OVERLAY)
    cluster = Cluster(f"{prefix}-ov")
    spaces: list[str] = []
    try:
        node = cluster.add()
        cluster.init()
        exporter = NodeExporter(node).wait_ready()
        try:
            spaces = synthetic_veths(node, SYNTHETIC_PER_CONTAINER * containers)
            bridge = bridge_only(node, exporter, prefix, image, containers, repeats)
            print(f"  bridge-only: {figures(bridge)}", flush=True)
            over = overlays(node, exporter, prefix, image, containers, networks, repeats)
            print(f"  overlay: {figures(over)}", flush=True)
            fresh = starts(node, exporter, prefix, image, starts_n)
            print(
                f"  overlay start -> eth0 series: p50 {fresh['appear_p50_ms']} ms, "
                f"p99 {fresh['appear_p99_ms']} ms of {starts_n}",
                flush=True,
            )
        finally:
            exporter.stop()
    finally:
        subprocess.run(
            ["ip", "-force", "-batch", "-"],
            input="".join(f"netns del {ns}\n" for ns in spaces),
            text=True,
            capture_output=True,
        )
        cluster.close()
    result = {"bridge_only": bridge, "overlay": over, "starts": fresh}
    return result | {"checks": checks(result, starts_n)}


def figures(row: dict) -> str:
    return (
        f"{row['containers']} containers, {row['veths']} veths: /metrics {row['ms']} ms, "
        f"{row['bytes']} bytes; collectors (ms) {row['collectors_ms']}"
    )


def checks(result: dict, starts_n: int) -> list:
    bridge, over, fresh = result["bridge_only"], result["overlay"], result["starts"]
    ratio = over["ms"] / bridge["ms"]
    return [
        check(
            f"overlay: /metrics, {over['containers']} containers on {over['networks']} overlays, "
            f"{over['veths']} veths",
            round(ratio, 3),
            "x",
            f"<= {SCRAPE_RATIO}x bridge-only",
            ratio <= SCRAPE_RATIO,
            f"{over['ms']:.1f} ms against bridge-only {bridge['ms']:.1f} ms "
            f"({bridge['containers']} containers, {bridge['veths']} veths), same node and run",
        ),
        check(
            "overlay: start -> eth0 series, p99",
            fresh["appear_p99_ms"],
            "ms",
            f"<= {START_P99_MS:g} ms",
            fresh["appear_p99_ms"] <= START_P99_MS,
            f"from Docker's start event; {starts_n} starts; upper bound: first scrape showing it",
        ),
    ]
