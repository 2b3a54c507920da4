"""The two exporters under test, started on loopback, and what /proc says about them."""

from __future__ import annotations

import http.client
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")
ROOT = Path(__file__).resolve().parent.parent
NODE_EXPORTER = "prometheus-node-exporter"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Exporter:
    """A scrape target running as a child process, on 127.0.0.1."""

    def __init__(self, name: str, argv: list, log_path: Path, port: int) -> None:
        self.name = name
        self.port = port
        self._log = open(log_path, "w")
        self.proc = subprocess.Popen(
            argv, cwd=ROOT, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def wait_ready(self, timeout: float = 30.0) -> Exporter:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(
                    f"{self.name} exited with {self.proc.returncode}; see {self._log.name}"
                )
            try:
                self.scrape()
                return self
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"{self.name} did not answer within {timeout}s; see {self._log.name}")

    def scrape(self, gzip: bool = False) -> tuple:
        """One full GET /metrics on a new connection: (seconds, body bytes as received)."""
        started = time.perf_counter()
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.request("GET", "/metrics", headers={"Accept-Encoding": "gzip"} if gzip else {})
            resp = conn.getresponse()
            body = resp.read()
        finally:
            conn.close()
        if resp.status != 200:
            raise OSError(f"{self.name}: HTTP {resp.status}")
        return time.perf_counter() - started, body

    def text(self) -> str:
        return self.scrape()[1].decode()

    def cpu_seconds(self) -> float:
        """CPU time of the process and of its children it waited for (iptables-save and nft, for NAT)."""
        with open(f"/proc/{self.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return sum(int(f) for f in fields[11:15]) / CLK_TCK  # utime, stime, cutime, cstime

    def rss_bytes(self) -> int:
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        return 0

    def stop(self) -> None:
        if self.alive():
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


def ours(out: Path, extra: tuple = ()) -> Exporter:
    port = free_port()
    return Exporter(
        "dockernet-exporter",
        [
            sys.executable,
            "-m",
            "exporter",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
            *extra,
        ],
        out / "dockernet-exporter.log",
        port,
    )


def node_exporter(out: Path) -> Exporter:
    binary = shutil.which(NODE_EXPORTER)
    if binary is None:
        raise RuntimeError(f"{NODE_EXPORTER} is not installed (apt-get install {NODE_EXPORTER})")
    port = free_port()
    return Exporter(
        "node_exporter",
        [
            binary,
            f"--web.listen-address=127.0.0.1:{port}",
            "--collector.disable-defaults",
            "--collector.netdev",
        ],
        out / "node-exporter.log",
        port,
    )
