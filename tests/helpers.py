"""Helpers the tests share: polling, shell commands, metrics parsing, the real
exporter as a subprocess, test containers, veths and namespaces made by hand,
the kernel's and a container's own view, and ways to make Docker vanish.

Fixtures live in conftest.py; everything a test imports by name lives here.
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

if TYPE_CHECKING:
    from docker import DockerClient
    from docker.models.containers import Container, ExecResult
    from docker.models.networks import Network

T = TypeVar("T")

ROOT = Path(__file__).resolve().parent.parent
TEST_IMAGE = os.environ.get("TEST_IMAGE", "dockernet-test:busybox")
EXPORTER = [sys.executable, "-m", "exporter"]
LOCK_PATH = "/run/dockernet-tests.lock"
# Headless Chromium as root, with nothing of its own going to the network; each run gets a fresh
# --user-data-dir.
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


def wait_for(
    predicate: Callable[[], T | Literal[False] | None],
    timeout: float = 30.0,
    interval: float = 0.05,
    what: str = "",
) -> T:
    """Poll until predicate() is truthy; return its value or fail with `what`. The default timeout
    is what a loaded 2-core machine may need; a test that checks a bound the product promises gives
    that bound (plus a margin) instead."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout}s waiting for {what or predicate}; last value: {last!r}")


def sh(*cmd: str | bytes, check: bool = True, **kw: Any) -> str:
    return subprocess.run(cmd, check=check, capture_output=True, text=True, **kw).stdout


def ip_json(*args: str) -> list:
    return json.loads(sh("ip", "-j", *args) or "[]")


def in_own_namespaces(code: str, timeout: float = 60.0) -> Any:
    """The JSON that Python ``code`` prints, run in a user and network namespace of its own (no
    privilege needed, nothing of the host's touched); fails with its stderr if it does."""
    run = subprocess.run(
        ["unshare", "--user", "--map-root-user", "--net", sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=timeout,
    )
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def unique(prefix: str = "dnx") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def alert_rules() -> dict:
    """The committed alerting rules, by alert name."""
    import yaml

    doc = yaml.safe_load((ROOT / "grafana/prometheus/dockernet.rules.yml").read_text())
    return {r["alert"]: r for g in doc["groups"] for r in g["rules"] if "alert" in r}


def parse_metrics(text: str) -> dict:
    """name -> list of (labels dict, value); sample names as exposed (with _total)."""
    out: dict = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out.setdefault(s.name, []).append((s.labels, s.value))
    return out


class Metrics(dict):
    def get_value(self, name: str, **labels: object) -> float | None:
        for l, v in self.get(name, ()):
            if all(l.get(k) == str(val) for k, val in labels.items()):
                return v
        return None

    def select(self, name: str, **labels: object) -> list:
        return [
            (l, v)
            for l, v in self.get(name, ())
            if all(l.get(k) == str(val) for k, val in labels.items())
        ]


class ExporterProcess:
    """The real daemon, started with `python -m exporter`, stopped with SIGTERM."""

    def __init__(self, *args: str, env: dict | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = Path(f"/tmp/dockernet-exporter-test-{self.port}.log")
        self._log = open(self.log_path, "w+")
        full_env = dict(os.environ, PYTHONUNBUFFERED="1", **(env or {}))
        self.proc = subprocess.Popen(
            EXPORTER + [f"--web.listen-address=127.0.0.1:{self.port}", *args],
            cwd=ROOT,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=full_env,
        )

    def wait_ready(self, timeout: float = 20.0) -> ExporterProcess:
        def ready():
            if self.proc.poll() is not None:
                pytest.fail(f"exporter exited with {self.proc.returncode}:\n{self.log()}")
            try:
                return requests.get(self.url + "/healthz", timeout=1).status_code == 200
            except requests.RequestException:
                return False

        wait_for(ready, timeout, what="exporter /healthz")
        return self

    def wait_first_read(self) -> Metrics:
        """The metrics once the first full read is done: /healthz answers before it, and what
        starts from then on reaches the exporter as events, never through that read."""
        return wait_for(
            lambda: (
                (m := self.metrics())
                and m.get_value("dockernet_resyncs_total", source="all", reason="start") == 1
                and m
            ),
            what="the first full read",
        )

    def text(self, **headers: str) -> str:
        r = requests.get(self.url + "/metrics", timeout=10, headers=headers)
        r.raise_for_status()
        return r.text

    def metrics(self) -> Metrics:
        return Metrics(parse_metrics(self.text()))

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text()

    def stop(self, timeout: float = 5.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode


class Containers:
    """Creates test containers (named dnx-*) and removes them afterwards."""

    def __init__(self, client: DockerClient) -> None:
        self.client = client
        self.names: list[str] = []
        self.networks: list = []

    def run(self, name: str | None = None, command: str = "sleep 3600", **kw: Any) -> Container:
        name = name or unique()
        self.names.append(name)
        c = self.client.containers.run(TEST_IMAGE, command, name=name, detach=True, **kw)
        c.reload()
        return c

    def network(self, name: str | None = None, **kw: Any) -> Network:
        net = self.client.networks.create(name or unique("dnxnet"), **kw)
        self.networks.append(net)
        return net

    def cleanup(self) -> None:
        for name in reversed(self.names):
            try:
                self.client.containers.get(name).remove(force=True)
            except Exception:
                pass
        for net in self.networks:
            try:
                net.remove()
            except Exception:
                pass


class Hand:
    """Veths, bridges and namespaces made by hand (named dnx-*), removed afterwards (the `hand`
    fixture)."""

    def __init__(self) -> None:
        self.links: list[str] = []
        self.mounts: list[str] = []
        self.named: list[str] = []

    def pair(self, host: str, peer: str, netns: str = "", master: str = "") -> str:
        sh(
            "ip",
            "link",
            "add",
            host,
            "type",
            "veth",
            "peer",
            "name",
            peer,
            *(["netns", netns] if netns else []),
        )
        self.links.append(host)
        if master:
            sh("ip", "link", "set", host, "master", master)
        return host

    def bridge(self, name: str) -> str:
        sh("ip", "link", "add", name, "type", "bridge")
        self.links.append(name)
        return name

    def anonymous_netns(self, name: str) -> str:
        """A namespace kept alive by a bind mount outside Docker's and ip's directories."""
        path = f"/run/{name}"
        open(path, "w").close()
        self.mounts.append(path)
        sh("unshare", f"--net={path}", "true")
        return path

    def named_netns(self, name: str) -> str:
        sh("ip", "netns", "add", name)
        self.named.append(name)
        return name

    def delete(self, link: str) -> None:
        sh("ip", "link", "del", link)
        self.links.remove(link)

    def cleanup(self) -> None:
        for link in self.links:
            sh("ip", "link", "del", link, check=False)
        for path in self.mounts:
            sh("umount", path, check=False)
            os.unlink(path)
        for name in self.named:
            sh("ip", "netns", "del", name, check=False)


def bridge_ports() -> dict:
    """port name -> (bridge name, STP state) from `bridge -j link`: the kernel's view."""
    return {
        p["ifname"]: (p.get("master", ""), p.get("state", ""))
        for p in json.loads(sh("bridge", "-j", "link") or "[]")
    }


def ipv6_network(containers: Containers) -> Network:
    """A dual-stack user network, in the benchmarking ranges (RFC 2544, RFC 5180)."""
    return containers.network(
        enable_ipv6=True,
        ipam={
            "Config": [
                {"Subnet": f"198.19.{random.randint(200, 249)}.0/24"},
                {"Subnet": f"2001:2:0:{random.randint(0x100, 0xFFF):x}::/64"},
            ]
        },
    )


def printed(result: ExecResult) -> str:
    """What a command run in a container (not streamed) printed."""
    assert isinstance(result.output, bytes)  # exec_run without stream=True
    return result.output.decode()


def inside(container: Container) -> set:
    """(interface, family, address, prefix) of every non-loopback address, as the container sees
    them (`ip -o addr` in the container)."""
    out = set()
    for line in printed(container.exec_run("ip -o addr")).splitlines():
        fields = line.split()
        interface, kind, cidr = fields[1], fields[2], fields[3]
        if interface != "lo":
            address, prefix = cidr.split("/")
            out.add((interface, "ipv4" if kind == "inet" else "ipv6", address, prefix))
    return out


def stop_dockerd(timeout: float = 30.0) -> None:
    """Stop the test dockerd (SIGTERM, as an init system would) and wait until it is gone."""
    pidfile = Path("/var/run/docker.pid")
    if pidfile.exists():
        pid = int(pidfile.read_text())
    else:  # started by hand, or its pid file removed: the oldest dockerd is the one serving
        pid = int(
            subprocess.run(
                ["pgrep", "-xo", "dockerd"], capture_output=True, text=True, check=True
            ).stdout
        )
    os.kill(pid, signal.SIGTERM)
    wait_for(
        lambda: not Path(f"/proc/{pid}").exists(), timeout, interval=0.1, what="dockerd to exit"
    )


def start_dockerd() -> None:
    """Start dockerd exactly as `make test-env` does, and wait until it answers."""
    subprocess.run([str(ROOT / "scripts" / "test-env.sh"), "dockerd"], check=True)


class DockerSocketProxy:
    """A unix socket that forwards to dockerd's, so a test can make "Docker"
    appear, vanish (every connection dropped) and come back without touching
    the real dockerd that other tests use. Two more faults: `hide()` moves the
    socket file away (connections made before go on working, new ones fail, as
    when someone moves /var/run/docker.sock), and `freeze()` stops forwarding
    in both directions while connections stay open (a dockerd under SIGSTOP)."""

    def __init__(self, path: str, target: str = "/var/run/docker.sock") -> None:
        self.path, self.target = path, target
        self._server: socket.socket | None = None
        self._conns: list[socket.socket] = []
        self.flowing = threading.Event()
        self.flowing.set()

    def hide(self) -> None:
        os.rename(self.path, self.path + ".away")

    def unhide(self) -> None:
        os.rename(self.path + ".away", self.path)

    def freeze(self) -> None:
        self.flowing.clear()

    def thaw(self) -> None:
        self.flowing.set()

    def start(self) -> None:
        if os.path.exists(self.path):
            os.unlink(self.path)
        self._server = socket.socket(socket.AF_UNIX)
        self._server.bind(self.path)
        self._server.listen(64)
        threading.Thread(target=self._accept, args=(self._server,), daemon=True).start()

    def stop(self) -> None:
        self.thaw()
        if os.path.exists(self.path + ".away"):
            self.unhide()
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for c in self._conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            c.close()
        self._conns.clear()
        if os.path.exists(self.path):
            os.unlink(self.path)

    def _accept(self, server: socket.socket) -> None:
        while True:
            try:
                client, _ = server.accept()
            except OSError:
                return
            upstream = socket.socket(socket.AF_UNIX)
            upstream.connect(self.target)
            self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                self.flowing.wait()
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
