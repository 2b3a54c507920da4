"""The CRI side of the tests: the kubelet-like pod maker (bench/cri_pods.py), whether the test
containerd answers, and restarting it."""

from __future__ import annotations

import subprocess
import time

from bench.cri_pods import CRI_SOCKET, CriPods, Pod
from exporter.sources.runtimes import cri_api
from helpers import ROOT

__all__ = ["CRI_SOCKET", "CriPods", "Pod", "cri_ready", "restart_containerd"]

CRI_ENV = ROOT / "scripts" / "cri-env.sh"


def cri_ready(endpoint: str = CRI_SOCKET) -> bool:
    client = cri_api.CriClient(endpoint, 2.0)
    try:
        client.call("Version", cri_api.version_request())
        return True
    except (cri_api.CallFailed, cri_api.NotFound):
        return False
    finally:
        client.close()


def restart_containerd(down_for: float = 0.0) -> None:
    """Stop the test containerd (its pods' shims and processes keep running), wait, start it."""
    subprocess.run(["bash", str(CRI_ENV), "stop"], check=True)
    deadline = time.monotonic() + 10
    while cri_ready() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(down_for)
    subprocess.run(["bash", str(CRI_ENV), "start"], check=True, capture_output=True)
