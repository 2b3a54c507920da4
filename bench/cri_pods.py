"""Pods made through the CRI exactly as the kubelet makes them (RunPodSandbox with metadata, the
io.kubernetes.pod.* labels, a log directory, a cgroup parent and namespace options; then
CreateContainer and StartContainer), against the standalone containerd that
scripts/cri-env.sh starts. The messages are built with the exporter's protowire; the field
numbers are runtime.v1's. Used by the pods benchmark and by the tests (tests/cri_helpers.py)."""

from __future__ import annotations

import os
import shutil
import uuid
from dataclasses import dataclass, field

from exporter.sources import cri_api
from exporter.sources import protowire as pw

CRI_SOCKET = os.environ.get("CRI_SOCKET", "/run/dockernet-cri/containerd.sock")
BUSYBOX = "dockernet.test/busybox:1"
LOG_ROOT = "/run/dockernet-cri/pods"
POD, CONTAINER, NODE = 0, 1, 2  # NamespaceMode


@dataclass
class Pod:
    id: str
    name: str
    namespace: str
    uid: str
    host_network: bool
    config: list
    containers: dict[str, str] = field(default_factory=dict)  # name -> container id


def _namespace_options(host_network: bool) -> list:
    # NamespaceOption: network = 1, pid = 2, ipc = 3 (the kubelet's defaults: own pid namespace
    # per container, ipc shared in the pod)
    return [(1, NODE if host_network else POD), (2, CONTAINER), (3, POD)]


def sandbox_config(name: str, namespace: str, uid: str, host_network: bool) -> list:
    log_dir = f"{LOG_ROOT}/{namespace}_{name}_{uid}"
    os.makedirs(log_dir, exist_ok=True)
    labels = {
        "io.kubernetes.pod.name": name,
        "io.kubernetes.pod.namespace": namespace,
        "io.kubernetes.pod.uid": uid,
    }
    return [
        (1, [(1, name), (2, uid), (3, namespace), (4, 0)]),  # PodSandboxMetadata
        (2, "" if host_network else name),  # hostname (the host's own for hostNetwork)
        (3, log_dir),  # log_directory
        (6, labels),
        (7, {"kubernetes.io/config.source": "api"}),
        # LinuxPodSandboxConfig: cgroup_parent = 1, security_context = 2
        # (LinuxSandboxSecurityContext.namespace_options = 1)
        (8, [(1, f"/kubepods/besteffort/pod{uid}"), (2, [(1, _namespace_options(host_network))])]),
    ]


class CriPods:
    """The pods of one test, stopped and removed after it."""

    def __init__(self, endpoint: str = CRI_SOCKET) -> None:
        self.client = cri_api.CriClient(endpoint, 30.0)
        self.pods: list[Pod] = []

    def call(self, method: str, fields: list) -> pw.Decoded:
        return pw.decode(self.client.call(method, pw.encode(fields)))

    def run(
        self,
        name: str = "",
        namespace: str = "dnx",
        host_network: bool = False,
        containers: tuple[str, ...] = ("app",),
    ) -> Pod:
        name = name or f"pod-{uuid.uuid4().hex[:8]}"
        uid = str(uuid.uuid4())
        config = sandbox_config(name, namespace, uid, host_network)
        reply = self.call("RunPodSandbox", [(1, config)])
        pod = Pod(pw.string(reply, 1), name, namespace, uid, host_network, config)
        self.pods.append(pod)
        for c in containers:
            self.start_container(pod, c)
        return pod

    def start_container(self, pod: Pod, name: str, command: str = "sleep 3600") -> str:
        labels = {
            "io.kubernetes.container.name": name,
            "io.kubernetes.pod.name": pod.name,
            "io.kubernetes.pod.namespace": pod.namespace,
            "io.kubernetes.pod.uid": pod.uid,
        }
        config = [
            (1, [(1, name), (2, 0)]),  # ContainerMetadata
            (2, [(1, BUSYBOX)]),  # ImageSpec
            *[(3, part) for part in ("/bin/sh", "-c", command)],  # command
            (9, labels),
            (11, f"{name}/0.log"),  # log_path, under the sandbox's log directory
            # LinuxContainerConfig.security_context = 2 (namespace_options = 3)
            (15, [(2, [(3, _namespace_options(pod.host_network))])]),
        ]
        reply = self.call("CreateContainer", [(1, pod.id), (2, config), (3, pod.config)])
        container_id = pw.string(reply, 1)
        self.call("StartContainer", [(1, container_id)])
        pod.containers[name] = container_id
        return container_id

    def status(self, pod: Pod) -> cri_api.Sandbox:
        data = self.client.call("PodSandboxStatus", cri_api.sandbox_status_request(pod.id))
        return cri_api.parse_sandbox_status(data)

    def stop(self, pod: Pod) -> None:
        self.call("StopPodSandbox", [(1, pod.id)])

    def remove(self, pod: Pod) -> None:
        self.call("StopPodSandbox", [(1, pod.id)])
        self.call("RemovePodSandbox", [(1, pod.id)])
        shutil.rmtree(sandbox_log_dir(pod), ignore_errors=True)
        self.pods.remove(pod)

    def cleanup(self) -> None:
        for pod in list(self.pods):
            try:
                self.remove(pod)
            except (cri_api.CallFailed, cri_api.NotFound):
                pass
        self.client.close()


def sandbox_log_dir(pod: Pod) -> str:
    return f"{LOG_ROOT}/{pod.namespace}_{pod.name}_{pod.uid}"
