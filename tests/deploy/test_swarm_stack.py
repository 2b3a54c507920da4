"""The Swarm stack deployed for real: the image as deploy/swarm/dockernet-exporter.yml runs it, on a
Swarm node of its own (tests/swarm_helpers.py: a dockerd in a network namespace, with its own exec
root and socket, which DOCKER_EXEC_ROOT and DOCKER_SOCKET name). An overlay network and a container
on it made after the exporter started are mapped: its namespace reached the exporter's container
through the stack's read-only, rslave mount of the exec root's netns/."""

from __future__ import annotations

import os
import subprocess

import pytest
import test_image
from swarm_helpers import Cluster, Node, http_get

from helpers import ROOT, Metrics, parse_metrics, sh, unique, wait_for

STACK = ROOT / "deploy" / "swarm" / "dockernet-exporter.yml"
PORT = 9917  # the stack's, in the node's namespace
OVERLAY_SUBNET = "198.18.235.0/24"

image = test_image.image


def shared(directory: str) -> None:
    """The directory as a mount of its own in a shared peer group, as a systemd host's `/` is (this
    machine's is private): Docker refuses an rslave mount of a directory that is in none."""
    sh("mkdir", "-p", directory)
    sh("mount", "--bind", directory, directory, check=True)
    sh("mount", "--make-shared", directory, check=True)


@pytest.fixture
def node(image):
    cluster = Cluster(unique("dnxstk"))
    try:
        n = cluster.add()
        shared(f"{n.exec_root}/netns")
        cluster.init()
        saved = subprocess.Popen(["docker", "save", image], stdout=subprocess.PIPE)
        n.docker("load", stdin=saved.stdout)
        saved.wait()
        yield n
    finally:
        cluster.close()


def metrics(node: Node) -> Metrics | None:
    try:
        status, body = http_get(node.netns, PORT, "/metrics")
    except OSError:
        return None
    return Metrics(parse_metrics(body)) if status == 200 else None


def test_stack_maps_an_overlay_container_made_after_it_started(node, image):
    env = dict(
        os.environ,
        DOCKERNET_IMAGE=image,
        DOCKER_EXEC_ROOT=str(node.exec_root),
        DOCKER_SOCKET=f"{node.run_dir}/docker.sock",
    )
    node.docker("stack", "deploy", "--resolve-image", "never", "-c", str(STACK), "dnx", env=env)
    wait_for(lambda: metrics(node), 120, interval=1, what="the stack's exporter on the node")
    node.docker(
        "network", "create", "-d", "overlay", "--attachable", "--subnet", OVERLAY_SUBNET, "ov"
    )
    c = node.run("c1", "ov")
    address = c["NetworkSettings"]["Networks"]["ov"]["IPAddress"]

    def mapped():
        m = metrics(node)
        found = m and m.select(
            "dockernet_container_address_info", container_name="c1", interface="eth0"
        )
        return found and (m, found)

    m, found = wait_for(mapped, 60, interval=1, what="c1's overlay eth0 in the stack's /metrics")
    assert [(l["network"], l["address"]) for l, _ in found] == [("ov", address)]
    assert m.select(
        "dockernet_container_receive_bytes_total", container_name="c1", interface="eth0"
    )
    # The stack grants no CAP_SYS_ADMIN: the overlay's namespace is not entered, its counters are
    # read by its id from the host, its peers are unknown, and the collector still succeeds.
    assert m.get_value("dockernet_scrape_collector_success", collector="overlay") == 1
    assert m.select("dockernet_overlay_network_info", network="ov")
    assert m.select("dockernet_overlay_vxlan_transmit_packets_total", network="ov")
    assert not m.select("dockernet_overlay_peers", network="ov")
