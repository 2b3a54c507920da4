"""Pods made through the CRI exactly as the kubelet makes them (RunPodSandbox with metadata, the
io.kubernetes.pod.* labels, a log directory, a cgroup parent and namespace options; then
CreateContainer and StartContainer), against the standalone containerd that
scripts/cri-env.sh starts. The messages are the generated classes of the exporter's CRI subset
(exporter/sources/runtimes/proto/cri.proto). Used by the pods benchmark and by the tests
(tests/cri_helpers.py)."""

from __future__ import annotations

import os
import shutil
import uuid
from dataclasses import dataclass, field
from typing import Any

from exporter.sources.runtimes import cri_api
from exporter.sources.runtimes.proto import cri_pb2 as pb

CRI_SOCKET = os.environ.get("CRI_SOCKET", "/run/dockernet-cri/containerd.sock")
BUSYBOX = "dockernet.test/busybox:1"
LOG_ROOT = "/run/dockernet-cri/pods"


@dataclass
class Pod:
    id: str
    name: str
    namespace: str
    uid: str
    host_network: bool
    config: pb.PodSandboxConfig
    containers: dict[str, str] = field(default_factory=dict)  # name -> container id


def _namespace_options(host_network: bool) -> pb.NamespaceOption:
    # The kubelet's defaults: own pid namespace per container, ipc shared in the pod.
    return pb.NamespaceOption(
        network=pb.NODE if host_network else pb.POD, pid=pb.CONTAINER, ipc=pb.POD
    )


def sandbox_config(name: str, namespace: str, uid: str, host_network: bool) -> pb.PodSandboxConfig:
    log_dir = f"{LOG_ROOT}/{namespace}_{name}_{uid}"
    os.makedirs(log_dir, exist_ok=True)
    labels = {
        "io.kubernetes.pod.name": name,
        "io.kubernetes.pod.namespace": namespace,
        "io.kubernetes.pod.uid": uid,
    }
    return pb.PodSandboxConfig(
        metadata=pb.PodSandboxMetadata(name=name, uid=uid, namespace=namespace, attempt=0),
        hostname="" if host_network else name,  # the host's own for hostNetwork
        log_directory=log_dir,
        labels=labels,
        annotations={"kubernetes.io/config.source": "api"},
        linux=pb.LinuxPodSandboxConfig(
            cgroup_parent=f"/kubepods/besteffort/pod{uid}",
            security_context=pb.LinuxSandboxSecurityContext(
                namespace_options=_namespace_options(host_network)
            ),
        ),
    )


class CriPods:
    """The pods of one test, stopped and removed after it."""

    def __init__(self, endpoint: str = CRI_SOCKET) -> None:
        self.client = cri_api.CriClient(endpoint, 30.0)
        self.pods: list[Pod] = []

    def call(self, method: str, request: Any, reply: Any = None) -> Any:
        """One RuntimeService call; its reply decoded as `reply` (a message class), if given."""
        data = self.client.call(method, request.SerializeToString())
        return reply.FromString(data) if reply is not None else None

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
        reply = self.call(
            "RunPodSandbox", pb.RunPodSandboxRequest(config=config), pb.RunPodSandboxResponse
        )
        pod = Pod(reply.pod_sandbox_id, name, namespace, uid, host_network, config)
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
        config = pb.ContainerConfig(
            metadata=pb.ContainerMetadata(name=name, attempt=0),
            image=pb.ImageSpec(image=BUSYBOX),
            command=["/bin/sh", "-c", command],
            labels=labels,
            log_path=f"{name}/0.log",  # under the sandbox's log directory
            linux=pb.LinuxContainerConfig(
                security_context=pb.LinuxContainerSecurityContext(
                    namespace_options=_namespace_options(pod.host_network)
                )
            ),
        )
        request = pb.CreateContainerRequest(
            pod_sandbox_id=pod.id, config=config, sandbox_config=pod.config
        )
        container_id = self.call(
            "CreateContainer", request, pb.CreateContainerResponse
        ).container_id
        self.call("StartContainer", pb.StartContainerRequest(container_id=container_id))
        pod.containers[name] = container_id
        return container_id

    def status(self, pod: Pod) -> cri_api.Sandbox:
        data = self.client.call("PodSandboxStatus", cri_api.sandbox_status_request(pod.id))
        return cri_api.parse_sandbox_status(data)

    def stop(self, pod: Pod) -> None:
        self.call("StopPodSandbox", pb.StopPodSandboxRequest(pod_sandbox_id=pod.id))

    def remove(self, pod: Pod) -> None:
        self.stop(pod)
        self.call("RemovePodSandbox", pb.RemovePodSandboxRequest(pod_sandbox_id=pod.id))
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
