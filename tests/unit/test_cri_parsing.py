"""The CRI and containerd-event messages, without a runtime: bytes built with the generated
classes of the .proto subsets (runtime.v1's and containerd's field numbers) as the runtime sends
them, read back into pods; the pure rules of the CRI source."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from typing import Any

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from exporter.app import runtimes
from exporter.core.model import PodMember
from exporter.sources.runtimes import cni_cache, cri, cri_api, grpc_probe
from exporter.sources.runtimes.proto import cri_pb2 as pb
from exporter.sources.runtimes.proto import events_pb2
from exporter.sources.runtimes.workloads import Effect


def sandbox_status(
    state: int = 0, network_mode: int = 0, info: dict[str, object] | None = None
) -> bytes:
    # protobuf takes an int for an enum field; the generated stubs want the enum type.
    options = pb.NamespaceOption(network=network_mode, pid=pb.CONTAINER)  # type: ignore[arg-type]
    status = pb.PodSandboxStatus(
        id="sb1",
        metadata=pb.PodSandboxMetadata(name="web", uid="uid-1", namespace="shop", attempt=1),
        state=state,  # type: ignore[arg-type]  # an int, as above
        linux=pb.LinuxPodSandboxStatus(namespaces=pb.Namespace(options=options)),
        labels={"io.kubernetes.pod.name": "web"},
    )
    reply = pb.PodSandboxStatusResponse(status=status, info={"info": json.dumps(info or {})})
    return reply.SerializeToString()


INFO = {
    "pid": 4242,
    "runtimeSpec": {
        "linux": {
            "namespaces": [
                {"type": "pid"},
                {"type": "network", "path": "/var/run/netns/cni-1234"},
            ]
        }
    },
}


def test_sandbox_status_gives_identity_pid_and_netns_path():
    s = cri_api.parse_sandbox_status(sandbox_status(info=INFO))
    assert (s.id, s.name, s.namespace, s.uid) == ("sb1", "web", "shop", "uid-1")
    assert s.ready and not s.host_network
    assert (s.pid, s.netns_path) == (4242, "/var/run/netns/cni-1234")
    assert s.labels == {"io.kubernetes.pod.name": "web"}


def test_host_network_sandbox_and_closed_namespace():
    info = {"pid": 7, "runtimeSpec": {"linux": {"namespaces": [{"type": "pid"}]}}}
    s = cri_api.parse_sandbox_status(sandbox_status(network_mode=cri_api.NAMESPACE_NODE, info=info))
    assert s.host_network and s.netns_path == ""
    closed = cri_api.parse_sandbox_status(
        sandbox_status(state=1, info=INFO | {"netNamespaceClosed": True})
    )
    assert not closed.ready and closed.netns_path == ""


def test_list_responses():
    sandboxes = pb.ListPodSandboxResponse(
        items=[
            pb.PodSandbox(
                id="sb1",
                metadata=pb.PodSandboxMetadata(name="web", namespace="shop"),
                state=pb.SANDBOX_NOTREADY,
            )
        ]
    )
    (s,) = cri_api.parse_sandboxes(sandboxes.SerializeToString())
    assert (s.id, s.name, s.namespace, s.ready) == ("sb1", "web", "shop", False)
    containers = pb.ListContainersResponse(
        containers=[
            pb.Container(
                id="c1",
                pod_sandbox_id="sb1",
                metadata=pb.ContainerMetadata(name="app"),
                image=pb.ImageSpec(image="busybox:1"),
                state=pb.CONTAINER_RUNNING,
            )
        ]
    )
    assert cri_api.parse_containers(containers.SerializeToString()) == [
        cri_api.CriContainer("c1", "sb1", "app", "busybox:1", True)
    ]


def test_bytes_that_are_no_message_are_a_value_error():
    with pytest.raises(ValueError, match="ListPodSandboxResponse"):
        cri_api.parse_sandboxes(b"\x0a\x05ab")  # field 1 announces 5 bytes, 2 follow


def test_list_containers_request_filters():
    running = pb.ListContainersRequest.FromString(cri_api.list_containers_request("sb1")).filter
    assert running.pod_sandbox_id == "sb1" and running.state.state == pb.CONTAINER_RUNNING
    assert running.HasField("state")
    anything = pb.ListContainersRequest.FromString(
        cri_api.list_containers_request(container_id="c1", running=False)
    ).filter
    assert not anything.HasField("state") and anything.id == "c1"


def test_envelope():
    # A TaskStart: container_id = 1, pid = 2 (a field EventId does not know, skipped).
    event = events_pb2.EventId(id="sb1").SerializeToString() + b"\x10\x92\x21"  # pid 4242
    data = events_pb2.Envelope(
        timestamp=Timestamp(seconds=1700000000, nanos=500_000_000),
        namespace="k8s.io",
        topic="/tasks/start",
    )
    data.event.type_url = "containerd.events.TaskStart"
    data.event.value = event
    env = cri_api.parse_envelope(data.SerializeToString())
    assert env == cri_api.Envelope(1700000000.5, "k8s.io", "/tasks/start", "sb1")
    assert cri.parse_event(env).effect is Effect.CHANGED
    assert (
        cri.parse_event(cri_api.Envelope(0, "k8s.io", "/containers/delete", "x")).effect
        is Effect.GONE
    )
    assert (
        cri.parse_event(cri_api.Envelope(0, "k8s.io", "/snapshot/remove", "x")).effect
        is Effect.NOTHING
    )


def sandbox(
    ready: bool = True, netns: str = "/var/run/netns/cni-1", host: bool = False
) -> cri_api.Sandbox:
    return cri_api.Sandbox("sb1", "web", "shop", "u1", ready, host, 42, netns)


def test_pod_from_sandbox():
    pod = cri.parse_pod(sandbox(), (PodMember("c1", "app", "img"),))
    assert pod is not None and pod.is_pod
    assert (pod.id, pod.name, pod.pod_namespace, pod.pod_name, pod.pod_uid) == (
        "sb1",
        "shop_web",
        "shop",
        "web",
        "u1",
    )
    assert (pod.pid, pod.netns_path, pod.network_mode, pod.runtime) == (
        42,
        "/var/run/netns/cni-1",
        "pod",
        "containerd",
    )
    host = cri.parse_pod(sandbox(host=True, netns=""))
    assert host is not None and host.network_mode == "host"


def test_not_ready_sandbox_kept_while_its_namespace_lives():
    dead = cri.parse_pod(sandbox(ready=False), (PodMember("c1", "app", "img"),))
    assert dead is not None and not dead.ready and dead.pid == 0 and dead.members == ()
    assert cri.parse_pod(sandbox(ready=False, netns="")) is None


def test_members_trust_the_latest_event_over_the_state():
    containers = [
        cri_api.CriContainer("c2", "sb1", "side", "img", False),  # just started: still CREATED
        cri_api.CriContainer("c1", "sb1", "app", "img", True),
        cri_api.CriContainer("c3", "sb1", "old", "img", True),  # just exited: still RUNNING
        cri_api.CriContainer("c4", "sb2", "other", "img", True),
    ]
    members = cri.pod_members(containers, "sb1", started="c2", exited="c3")
    assert [m.name for m in members] == ["app", "side"]
    assert [m.name for m in cri.pod_members(containers, "sb1")] == ["app", "old"]


def test_target_of_an_endpoint():
    assert (
        cri_api.target("/run/containerd/containerd.sock")
        == "unix:///run/containerd/containerd.sock"
    )
    assert cri_api.target("unix:///run/x.sock") == "unix:///run/x.sock"


def args(**kw: Any) -> argparse.Namespace:
    base = {
        "docker_host": None,
        "docker_timeout": 1.0,
        "podman_host": "",  # off: this machine's Podman socket must not count here
        "cri_endpoint": None,
        "cri_timeout": 1.0,
    }
    return argparse.Namespace(**(base | kw))


def test_sources_from_flags(monkeypatch, tmp_path):
    monkeypatch.setattr(runtimes, "DEFAULT_CRI_ENDPOINT", str(tmp_path / "containerd.sock"))
    monkeypatch.setattr(
        grpc_probe, "call", lambda path, method: pytest.fail("probed a missing socket")
    )
    assert [s.runtime for s in runtimes.from_args(args())] == ["docker"]
    (tmp_path / "containerd.sock").touch()
    assert runtimes.from_args(args(docker_host="", cri_endpoint="")) == []
    (given,) = runtimes.from_args(args(docker_host="", cri_endpoint="/run/x.sock"))
    assert (given.runtime, given.address) == ("containerd", "/run/x.sock")
    monkeypatch.setattr(
        grpc_probe, "call", lambda path, method: None
    )  # the default socket answers the CRI
    assert [s.runtime for s in runtimes.from_args(args())] == ["docker", "containerd"]
    monkeypatch.setattr(
        grpc_probe, "call", lambda path, method: "UNIMPLEMENTED: not a CRI v1 runtime"
    )
    assert [s.runtime for s in runtimes.from_args(args())] == ["docker"]
    both = runtimes.from_args(args(podman_host="unix:///run/p.sock", cri_endpoint="/run/c.sock"))
    assert [s.runtime for s in both] == ["docker", "podman", "containerd"]


def test_no_cri_modules_without_a_socket(tmp_path):
    """Where the default CRI socket is missing, neither the CRI's modules nor grpcio are loaded."""
    code = (
        "import sys\n"
        "from argparse import Namespace\n"
        "from exporter.app import runtimes\n"
        f"runtimes.DEFAULT_CRI_ENDPOINT = {str(tmp_path / 'containerd.sock')!r}\n"
        f"assert runtimes.from_args(Namespace(**{args(docker_host='').__dict__!r})) == []\n"
        "print(sorted(m for m in sys.modules\n"
        "             if m == 'grpc' or m.startswith('exporter.sources.runtimes.cri')))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


CNI_RESULT: dict[str, Any] = {
    "kind": "cniCacheV1",
    "containerId": "sb1",
    "ifName": "eth0",
    "networkName": "pods",
    "result": {
        "interfaces": [
            {"mac": "ca:d3:0e:77:45:76", "name": "cni0"},
            {"mac": "8a:58:b0:02:d0:93", "name": "veth26bd6f9b"},
            {"mac": "ba:0d:41:30:42:8e", "name": "eth0", "sandbox": "/var/run/netns/cni-1"},
        ],
        "ips": [{"address": "198.18.129.131/20", "gateway": "198.18.128.1", "interface": 2}],
    },
}


def test_cni_cache_names_the_network_its_bridge_and_the_pod_endpoint():
    a = cni_cache.parse_cni_result(CNI_RESULT)
    assert a is not None
    assert (a.sandbox_id, a.network, a.bridge) == ("sb1", "pods", "cni0")
    assert a.subnets == (("198.18.128.0/20", "198.18.128.1"),)
    assert (a.endpoint.mac, a.endpoint.ipv4, a.endpoint.ipv4_prefix) == (
        "ba:0d:41:30:42:8e",
        "198.18.129.131",
        20,
    )
    (net,) = cni_cache.cni_networks([a, a])
    assert (net.id, net.name, net.bridge, net.driver) == ("cni:pods", "pods", "cni0", "bridge")
    assert not net.masquerade


def test_cni_cache_loopback_and_bridgeless_plugins():
    assert cni_cache.parse_cni_result(CNI_RESULT | {"networkName": "cni-loopback"}) is None
    assert cni_cache.parse_cni_result({"kind": "other"}) is None
    ptp = dict(CNI_RESULT, result=dict(CNI_RESULT["result"]))
    ptp["result"]["interfaces"] = CNI_RESULT["result"]["interfaces"][1:]
    a = cni_cache.parse_cni_result(ptp)
    assert a is not None and a.bridge == ""


class _RpcError(Exception):
    def __init__(self, code: str) -> None:
        super().__init__(code)
        self._code = code

    def code(self):
        return type("Code", (), {"name": self._code})()

    def details(self) -> str:
        return f"{self._code} details"


@pytest.mark.parametrize(
    ("code", "wanted"),
    [
        ("NOT_FOUND", cri_api.NotFound),
        ("UNKNOWN", cri_api.Refused),
        ("INTERNAL", cri_api.Refused),
        ("FAILED_PRECONDITION", cri_api.Refused),
        ("UNAVAILABLE", cri_api.CallFailed),
        ("DEADLINE_EXCEEDED", cri_api.CallFailed),
        ("UNIMPLEMENTED", cri_api.CallFailed),
    ],
)
def test_a_call_failure_is_the_runtimes_answer_or_its_silence(code, wanted):
    """Refused (the runtime's own error about one object) leaves the runtime up; CallFailed not."""
    failure = cri_api._failure(_RpcError(code), "PodSandboxStatus")
    assert type(failure) is wanted
    assert type(cri_api._failure(ValueError("no code"), "Version")) is cri_api.CallFailed
