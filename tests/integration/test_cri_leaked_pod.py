"""A pod's namespace leaked on the real test containerd, the way a runtime that loses a sandbox
leaves it (issue 23, section 3): the sandbox's process killed and its container deleted behind the
CRI's back, then containerd restarted, so that it no longer lists the pod while the namespace
file (bind-mounted by containerd), the veth in it and CNI's cached result stay. The orphan names
the pod from the cache: dockernet_veth_orphaned's namespace and pod labels, the `orphans`
command's NAMESPACE and POD."""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from functools import partial

import pytest
from test_cri import CRI, flagged, pods  # noqa: F401 (a fixture)

from cri_helpers import CRI_SOCKET, CriPods, Pod, restart_containerd
from helpers import ROOT, ExporterProcess, ip_json, sh, unique, wait_for

CTR = ("ctr", "--address", CRI_SOCKET, "-n", "k8s.io")
IPAM = "/var/lib/cni/networks/dockernet-pods"
GRACE = 1.0


def host_veth(netns: str) -> str:
    (eth0,) = json.loads(sh("ip", "-n", netns, "-j", "link", "show", "eth0"))
    (host,) = [l["ifname"] for l in ip_json("link") if l["ifindex"] == eth0["link_index"]]
    return host


def dead(cri: CriPods, pod: Pod) -> bool:
    return not cri.status(pod).ready


def forget_sandboxes(cri: CriPods, *leaked: Pod) -> None:
    """containerd loses the sandboxes: their tasks killed and deleted and their containers removed
    through containerd's own API, which the CRI plugin learns only when it restarts (once)."""
    for pod in leaked:
        subprocess.run([*CTR, "tasks", "kill", "-s", "SIGKILL", pod.id], check=False)
        wait_for(partial(dead, cri, pod), what="the sandbox's process dead")
        subprocess.run([*CTR, "tasks", "delete", "-f", pod.id], check=False, capture_output=True)
        sh(*CTR, "containers", "delete", pod.id)
        cri.pods.remove(pod)  # nothing left for the CRI to stop
    restart_containerd()


def release(sandbox_id: str, netns: str) -> None:
    """What a teardown would have done: the namespace (and so the veth), the cached results and
    the address reserved for the sandbox."""
    subprocess.run(["ip", "netns", "delete", netns], check=False)
    for path in glob.glob(f"/var/lib/cni/results/*-{sandbox_id}-*"):
        os.unlink(path)
    for path in glob.glob(f"{IPAM}/*"):
        try:
            with open(path) as f:
                if f.readline().strip() == sandbox_id:
                    os.unlink(path)
        except OSError:
            pass


@pytest.fixture
def leak(pods: CriPods) -> Iterator[Callable[..., list[tuple[Pod, str]]]]:  # noqa: F811
    """leak(*pod names in namespace shop) -> [(pod, host veth)]: pods made, then their namespaces
    leaked (containerd restarted once)."""
    made: list[tuple[str, str]] = []

    def make(*names: str) -> list[tuple[Pod, str]]:
        out = []
        for name in names:
            pod = pods.run(name=name, namespace="shop", containers=())
            netns = os.path.basename(pods.status(pod).netns_path)
            made.append((pod.id, netns))
            out.append((pod, host_veth(netns)))
        forget_sandboxes(pods, *(pod for pod, _ in out))
        return out

    yield make
    for sandbox_id, netns in made:
        release(sandbox_id, netns)


def orphans(*args: str) -> list[dict]:
    done = subprocess.run(
        [sys.executable, "-m", "exporter", "orphans", "-o", "json", *args, CRI],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def veth_orphaned(e: ExporterProcess, veth: str) -> dict:
    (labels,) = wait_for(
        lambda: [l for l, _ in e.metrics().select("dockernet_veth_orphaned", veth=veth)],
        timeout=60,
        what=f"{veth} flagged",
    )
    return labels


def test_a_leaked_pod_namespace_is_flagged_with_its_pod_while_the_cache_has_it(exporter, leak):
    e = exporter(CRI, f"--collector.orphans.grace={GRACE}s")
    (named, veth), (uncached, bare_veth) = leak(unique("web"), unique("db"))
    assert glob.glob(f"/var/lib/cni/results/*-{named.id}-eth0"), "the cache kept the result"
    for path in glob.glob(f"/var/lib/cni/results/*-{uncached.id}-*"):
        os.unlink(path)  # as when the cache was cleaned since
    assert veth_orphaned(e, veth) == {
        "veth": veth,
        "bridge": "dncni0",
        "reason": "netns_without_container",
        "namespace": "shop",
        "pod": named.name,
    }
    assert veth_orphaned(e, bare_veth) == {
        "veth": bare_veth,
        "bridge": "dncni0",
        "reason": "netns_without_container",
    }
    rows = {r["veth"]: r for r in orphans("--grace", "0s")}
    assert (rows[veth]["namespace"], rows[veth]["pod"]) == ("shop", named.name)
    assert rows[veth]["container_id"] == "" and rows[veth]["reason"] == "netns_without_container"
    assert (rows[bare_veth]["namespace"], rows[bare_veth]["pod"]) == ("", "")
