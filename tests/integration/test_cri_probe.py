"""The default CRI socket when it is not a CRI (issue 23, section 3): a real containerd without the
CRI plugin (as Docker's own is) started on a socket of the test's own, and a unix socket that
answers no gRPC, each put where the exporter looks for containerd by default. One probe, one line
in the log, and neither grpcio nor the CRI's modules loaded; the test containerd with its CRI
plugin at that place is used."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from test_cri import pods  # noqa: F401 (a fixture)

from cri_helpers import CRI_SOCKET
from exporter.sources.runtimes import grpc_probe
from helpers import ROOT

VERSION = "/runtime.v1.RuntimeService/Version"

# `veths` with the default CRI endpoint moved to argv[1]; the modules loaded are written to argv[2].
COMMAND = """
import atexit, json, sys
from exporter.app import runtimes
from pathlib import Path
from pathlib import Path
runtimes.DEFAULT_CRI_ENDPOINT = sys.argv[1]
def loaded():
    cri = "exporter.sources.runtimes.cri"
    names = [m for m in sys.modules if m.split(".")[0] == "grpc" or m.startswith(cri)]
    with open(sys.argv[2], "w") as f:
        json.dump(sorted(names), f)
atexit.register(loaded)
from exporter.app.cli import main
sys.exit(main(["veths", "-o", "json", "--podman.host="]))
"""

CONFIG = """version = 2
root = "{dir}/root"
state = "{dir}/state"
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.internal.v1.tracing"]

[grpc]
  address = "{dir}/containerd.sock"

[ttrpc]
  address = "{dir}/containerd.sock.ttrpc"

[debug]
  address = ""

[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = "{dir}/opt"
"""


def run_veths(default_endpoint: str, tmp_path: Path) -> tuple[list[str], list[str], list]:
    """(log lines about the CRI, modules loaded, the veths JSON) of one `veths` run."""
    modules = tmp_path / "modules.json"
    done = subprocess.run(
        [sys.executable, "-c", COMMAND, default_endpoint, str(modules)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    cri_lines = [l for l in done.stderr.splitlines() if "cri" in l.lower()]
    return cri_lines, json.loads(modules.read_text()), json.loads(done.stdout)


@pytest.fixture
def containerd_without_cri(tmp_path):
    """A real containerd of the test's own, its CRI plugin disabled, as Docker configures its own."""
    directory = tmp_path / "ctrd"
    directory.mkdir()
    config = directory / "config.toml"
    config.write_text(CONFIG.format(dir=directory))
    log = open(directory / "log", "w")
    proc = subprocess.Popen(["containerd", "--config", str(config)], stdout=log, stderr=log)
    path = str(directory / "containerd.sock")
    deadline = time.monotonic() + 20
    while grpc_probe.call(path, "/containerd.services.version.v1.Version/Version") is not None:
        assert proc.poll() is None, (directory / "log").read_text()
        assert time.monotonic() < deadline, "containerd did not answer"
        time.sleep(0.05)
    yield path
    proc.terminate()
    proc.wait(timeout=10)
    log.close()


class SilentSocket:
    """A unix socket that accepts, reads what it is sent, answers nothing and counts connections."""

    def __init__(self, path: str) -> None:
        self.path, self.accepted = path, 0
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(path)
        self.server.listen(8)
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            self.accepted += 1
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")
            conn.close()

    def close(self) -> None:
        self.server.close()


def test_a_containerd_without_the_cri_plugin_is_probed_once_without_grpcio(
    containerd_without_cri, tmp_path
):
    assert grpc_probe.call(containerd_without_cri, VERSION) == f"answers gRPC but not {VERSION}"
    lines, modules, _ = run_veths(containerd_without_cri, tmp_path)
    assert modules == []
    (line,) = lines
    assert "cri_not_used" in line and f"answers gRPC but not {VERSION}" in line, line


def test_a_socket_that_speaks_no_grpc_is_probed_once_without_grpcio(tmp_path):
    silent = SilentSocket(str(tmp_path / "containerd.sock"))
    try:
        lines, modules, _ = run_veths(silent.path, tmp_path)
    finally:
        silent.close()
    assert modules == []
    assert silent.accepted == 1
    (line,) = lines
    assert "cri_not_used" in line and "speaks no gRPC" in line, line


def test_the_test_containerd_with_its_cri_at_the_default_place_is_used(pods, tmp_path):  # noqa: F811
    pod = pods.run()
    lines, modules, veths = run_veths(CRI_SOCKET, tmp_path)
    assert lines == []
    assert "grpc" in modules and "exporter.sources.runtimes.cri" in modules
    assert [r for r in veths if (r["namespace"], r["pod"]) == (pod.namespace, pod.name)]
