"""Swarm nodes on one machine: a dockerd per network namespace, entered with `nsenter --net=` (not
`ip netns exec`, which remounts /sys and hides the cgroup mounts from dockerd), each with its own
data root, exec root, pid file, socket, cgroup parent, bridge and address pools, all in
198.18.0.0/15; veth links between the namespaces carry the underlay. The exporter runs in a node's
namespace against that node's dockerd and exec root; the test reaches it through a socket made in
that namespace.

Everything is undone by `Cluster.close()`, whatever step failed: the swarm left, the dockerds
stopped (and what they started killed by pid), their mounts undone, the namespaces removed.
"""

from __future__ import annotations

import contextlib
import functools
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from exporter.sources.kernel.overlay import in_namespace
from helpers import (
    EXPORTER,
    ROOT,
    TEST_IMAGE,
    ExporterProcess,
    Metrics,
    free_port,
    parse_metrics,
    sh,
    wait_for,
)

UNDERLAY = "198.18.250"  # the nodes' link: 198.18.250.<node index + 1>/24
UNDERLAY_BRIDGE = "dnxunder"  # in the first node's namespace, with its address
SWARM_POOL = "198.18.224.0/20"  # overlay subnets, cluster-wide (ingress's among them)


def http_get(netns: str, port: int, path: str, timeout: float = 10.0) -> tuple[int, str]:
    """GET http://127.0.0.1:<port><path> in that namespace: (status, body)."""
    sock = in_namespace(netns, lambda: socket.create_connection(("127.0.0.1", port), timeout))
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    conn.sock = sock
    try:
        conn.request("GET", path)
        r = conn.getresponse()
        return r.status, r.read().decode()
    finally:
        conn.close()


def gone(pid: int) -> bool:
    return not os.path.exists(f"/proc/{pid}")


class Node:
    """One dockerd in a network namespace of its own (`index` picks its addresses)."""

    def __init__(self, name: str, index: int) -> None:
        self.name, self.index = name, index
        self.netns = f"/var/run/netns/{name}"
        self.run_dir = Path(f"/run/{name}")
        self.exec_root = self.run_dir / "exec"
        self.data_root = Path(f"/var/lib/{name}")
        self.socket = f"unix://{self.run_dir}/docker.sock"
        self.address = f"{UNDERLAY}.{index + 1}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        sh("ip", "netns", "add", self.name)
        sh("ip", "-n", self.name, "link", "set", "lo", "up")
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.data_root.mkdir(parents=True, exist_ok=True)
        log = open(self.run_dir / "dockerd.log", "w")
        # The bridge and local pools differ per node; the nodes are apart from the host anyway.
        self.proc = subprocess.Popen(
            [
                "nsenter",
                f"--net={self.netns}",
                "dockerd",
                f"--data-root={self.data_root}",
                f"--exec-root={self.exec_root}",
                f"--pidfile={self.run_dir}/docker.pid",
                f"-H={self.socket}",
                f"--bip=198.18.{200 + self.index}.1/24",
                f"--default-address-pool=base=198.18.{208 + 8 * self.index}.0/21,size=24",
                f"--cgroup-parent=/{self.name}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        wait_for(self._answers, 60, interval=0.2, what=f"dockerd of {self.name}")
        image = subprocess.Popen(["docker", "save", TEST_IMAGE], stdout=subprocess.PIPE)
        self.docker("load", stdin=image.stdout)
        image.wait()

    def _answers(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            log = (self.run_dir / "dockerd.log").read_text()[-2000:]
            pytest.fail(f"dockerd of {self.name} exited:\n{log}")
        return (
            subprocess.run(["docker", "-H", self.socket, "info"], capture_output=True).returncode
            == 0
        )

    def docker(self, *args: str, **kw: Any) -> str:
        return sh("docker", "-H", self.socket, *args, **kw).strip()

    def inspect(self, kind: str, name: str, *flags: str) -> dict:
        return json.loads(self.docker(kind, "inspect", *flags, name))[0]

    def run(self, name: str, network: str, command: str = "sleep 3600") -> dict:
        self.docker("run", "-d", "--name", name, "--network", network, TEST_IMAGE, *command.split())
        return self.inspect("container", name)

    def exec(self, container: str, *cmd: str, check: bool = True) -> str:
        return self.docker("exec", container, *cmd, check=check)

    def nsenter(self, *cmd: str, netns: str | None = None, **kw: Any) -> str:
        """A command in this node's namespace, or in one of its dockerd's (a file under netns/)."""
        path = f"{self.exec_root}/netns/{netns}" if netns else self.netns
        return sh("nsenter", f"--net={path}", *cmd, **kw)

    def overlay_netns(self, network_id: str) -> str:
        """The file name of that overlay's namespace on this node."""
        names = os.listdir(self.exec_root / "netns")
        return next(n for n in names if n.partition("-")[2] == network_id[:10])

    def close(self) -> None:
        """Leave the swarm, stop dockerd and whatever it started, undo its mounts, remove all: each
        step whatever the others did."""
        for step in (
            self._leave,
            self._stop_dockerd,
            self._kill_leftovers,
            self._unmount,
            self._remove,
        ):
            try:
                step()
            except Exception as exc:  # the next steps still run
                print(f"cleanup of {self.name}: {step.__name__}: {exc!r}", file=sys.stderr)

    def _leave(self) -> None:
        sh("docker", "-H", self.socket, "swarm", "leave", "--force", check=False, timeout=120)
        running = sh("docker", "-H", self.socket, "ps", "-aq", check=False, timeout=30).split()
        if running:
            sh("docker", "-H", self.socket, "rm", "-f", *running, check=False, timeout=300)

    def _unmount(self) -> None:
        for mount in _mounts_under(self.exec_root, self.data_root):
            subprocess.run(["umount", "-l", mount], capture_output=True)

    def _remove(self) -> None:
        sh("ip", "netns", "del", self.name, check=False)
        shutil.rmtree(self.run_dir, ignore_errors=True)
        shutil.rmtree(self.data_root, ignore_errors=True)
        for controller in Path("/sys/fs/cgroup").iterdir():
            for directory, _subdirs, _files in sorted(
                os.walk(controller / self.name), key=lambda w: -len(w[0])
            ):
                with contextlib.suppress(OSError):
                    os.rmdir(directory)

    def _stop_dockerd(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def _kill_leftovers(self) -> None:
        """Processes still in this node's namespace (its containerd, shims) or in its cgroups (its
        containers): all started by this node's dockerd."""
        pids = set(_pids_in_cgroups(self.name))
        with contextlib.suppress(OSError):
            pids.update(_pids_in_netns(os.stat(self.netns).st_ino))
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for pid in pids:
            wait_for(functools.partial(gone, pid), 10, what=f"pid {pid} to exit")


def _pids_in_cgroups(parent: str) -> list[int]:
    """Every process in the cgroups under `parent`, in every controller (os.walk skips what goes
    while it walks)."""
    out: list = []
    for controller in Path("/sys/fs/cgroup").iterdir():
        for directory, _subdirs, files in os.walk(controller / parent):
            if "cgroup.procs" in files:
                with contextlib.suppress(OSError):
                    out.extend(int(p) for p in Path(directory, "cgroup.procs").read_text().split())
    return out


def _pids_in_netns(inode: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            with contextlib.suppress(OSError):
                if os.stat(f"/proc/{entry}/ns/net").st_ino == inode:
                    out.append(int(entry))
    return out


def _mounts_under(*roots: Path) -> list[str]:
    """Mount points under those directories, deepest first."""
    prefixes = tuple(f"{r}/" for r in roots)
    with open("/proc/self/mounts") as f:
        points = [line.split()[1] for line in f]
    under = {p for p in points if p.startswith(prefixes) or p in map(str, roots)}
    return sorted(under, key=len, reverse=True)


class Cluster:
    """Nodes joined by veth links (a full mesh of one /24), closed together."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.nodes: list[Node] = []

    def add(self) -> Node:
        node = Node(f"{self.prefix}-{len(self.nodes)}", len(self.nodes))
        self.nodes.append(node)  # before start: a node that fails half way is still closed
        node.start()
        self._link(node)
        return node

    def _link(self, node: Node) -> None:
        """The first node's address is on a bridge in its namespace; each other node is a veth
        whose other end is a port of that bridge."""
        first = self.nodes[0]
        if node is first:
            sh("ip", "-n", node.name, "link", "add", UNDERLAY_BRIDGE, "type", "bridge")
            sh("ip", "-n", node.name, "addr", "add", f"{node.address}/24", "dev", UNDERLAY_BRIDGE)
            sh("ip", "-n", node.name, "link", "set", UNDERLAY_BRIDGE, "up")
            return
        mine, theirs = f"dnxu{node.index}a", f"dnxu{node.index}b"
        sh("ip", "-n", node.name, "link", "add", mine, "type", "veth", "peer", "name", theirs)
        sh("ip", "-n", node.name, "link", "set", theirs, "netns", first.name)
        sh("ip", "-n", node.name, "addr", "add", f"{node.address}/24", "dev", mine)
        sh("ip", "-n", first.name, "link", "set", theirs, "master", UNDERLAY_BRIDGE)
        for ns, link in ((node.name, mine), (first.name, theirs)):
            sh("ip", "-n", ns, "link", "set", link, "up")

    def init(self) -> None:
        first = self.nodes[0]
        first.docker(
            "swarm",
            "init",
            "--advertise-addr",
            first.address,
            "--default-addr-pool",
            SWARM_POOL,
            "--default-addr-pool-mask-length",
            "24",
        )

    def join(self, node: Node) -> None:
        first = self.nodes[0]
        token = first.docker("swarm", "join-token", "-q", "worker")
        node.docker(
            "swarm",
            "join",
            "--token",
            token,
            "--advertise-addr",
            node.address,
            f"{first.address}:2377",
        )

    def close(self) -> None:
        for node in reversed(self.nodes):
            node.close()


class NodeExporter(ExporterProcess):
    """The real daemon in a node's namespace, against that node's dockerd and exec root."""

    def __init__(self, node: Node, *args: str) -> None:  # not super(): it would start another
        self.node = node
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = Path(f"/tmp/dockernet-exporter-test-{node.name}-{self.port}.log")
        self._log = open(self.log_path, "w+")
        flags = [
            f"--web.listen-address=127.0.0.1:{self.port}",
            f"--docker.host={node.socket}",
            f"--docker.exec-root={node.exec_root}",
            "--podman.host=",
            "--cri.endpoint=",
        ]
        self.proc = subprocess.Popen(
            ["nsenter", f"--net={node.netns}", *EXPORTER, *flags, *args],
            cwd=ROOT,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=dict(os.environ, PYTHONUNBUFFERED="1"),
        )

    def get(self, path: str) -> tuple[int, str]:
        return http_get(self.node.netns, self.port, path)

    def wait_ready(self, timeout: float = 20.0) -> NodeExporter:
        def ready() -> bool:
            if self.proc.poll() is not None:
                pytest.fail(f"exporter exited with {self.proc.returncode}:\n{self.log()}")
            try:
                return self.get("/healthz")[0] == 200
            except OSError:
                return False

        wait_for(ready, timeout, what="exporter /healthz")
        return self

    def text(self, **_headers: str) -> str:
        status, body = self.get("/metrics")
        assert status == 200, body
        return body

    def metrics(self) -> Metrics:
        return Metrics(parse_metrics(self.text()))


def container_net_dev(node: Node, container: str) -> dict[str, list[int]]:
    """interface -> the 16 counters of the container's own /proc/net/dev."""
    out = {}
    for line in node.exec(container, "cat", "/proc/net/dev").splitlines()[2:]:
        name, _, rest = line.partition(":")
        out[name.strip()] = [int(x) for x in rest.split()]
    return out
