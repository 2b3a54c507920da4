"""The CRI side of the tests: the kubelet-like pod maker (bench/cri_pods.py), whether the test
containerd answers, and restarting it."""

from __future__ import annotations

import subprocess
import time

from bench.cri_pods import CRI_SOCKET, CriPods, Pod
from exporter.sources.runtimes import cri_api
from helpers import ROOT, wait_for

__all__ = ["CRI_SOCKET", "CriPods", "Pod", "cri_ready", "restart_containerd"]

CRI_ENV = ROOT / "scripts" / "cri-env.sh"


def cri_ready(endpoint: str = CRI_SOCKET) -> bool:
    """Whether the CRI serves pods: a restarted containerd answers Version while its CRI plugin
    still refuses the rest ("server is not initialized yet")."""
    client = cri_api.CriClient(endpoint, 2.0)
    try:
        client.call("ListPodSandbox", cri_api.list_sandboxes_request())
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
    wait_for(cri_ready, what="the test containerd serving the CRI again")
