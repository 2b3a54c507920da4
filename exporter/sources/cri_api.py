"""The few messages of the CRI (``runtime.v1.RuntimeService``) and of containerd's events service
that the exporter uses, with the field numbers of their upstream definitions, and a small gRPC
client over a unix socket. The messages are built and read with protowire; grpcio carries raw
bytes and is imported only when a client is made (start-up of commands that need no CRI).

Pure: the ``*_request`` builders and ``parse_*`` readers. ``CriClient`` does the I/O.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from . import protowire as pw

RUNTIME_SERVICE = "/runtime.v1.RuntimeService/"
EVENTS_SUBSCRIBE = "/containerd.services.events.v1.Events/Subscribe"

# runtime.v1 enums
SANDBOX_READY = 0  # PodSandboxState
CONTAINER_RUNNING = 1  # ContainerState
NAMESPACE_NODE = 2  # NamespaceMode: POD = 0, CONTAINER = 1, NODE = 2, TARGET = 3


class NotFound(LookupError):
    """The runtime knows no such sandbox or container."""


class CallFailed(OSError):
    """The runtime did not answer the call (unreachable, timed out, or not a CRI runtime)."""


@dataclass(frozen=True)
class Sandbox:
    """A pod sandbox as ListPodSandbox and PodSandboxStatus report it."""

    id: str
    name: str
    namespace: str
    uid: str
    ready: bool
    host_network: bool = False
    pid: int = 0  # the sandbox's (pause) process, from the verbose info
    netns_path: str = ""  # from the verbose info's runtime spec; "" for hostNetwork
    labels: dict[str, str] = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class CriContainer:
    id: str
    sandbox_id: str
    name: str
    image: str
    running: bool


@dataclass(frozen=True)
class Envelope:
    """One containerd event: when, in which containerd namespace, its topic, and the container
    (or sandbox) id that the task and container events carry first."""

    time: float
    namespace: str
    topic: str
    container_id: str


# -- requests ------------------------------------------------------------------------------------


def version_request() -> bytes:
    return pw.encode([(1, "v1")])  # VersionRequest.version


def list_sandboxes_request() -> bytes:
    return b""  # ListPodSandboxRequest with no filter


def sandbox_status_request(sandbox_id: str, verbose: bool = True) -> bytes:
    return pw.encode([(1, sandbox_id), (2, verbose)])  # pod_sandbox_id, verbose


def list_containers_request(
    sandbox_id: str = "", container_id: str = "", running: bool = True
) -> bytes:
    # ContainerFilter: id = 1, state = 2 (ContainerStateValue.state = 1), pod_sandbox_id = 3
    state = [(1, CONTAINER_RUNNING)] if running else []
    return pw.encode([(1, [(1, container_id), (2, state), (3, sandbox_id)])])


def subscribe_request(filters: list[str]) -> bytes:
    return pw.encode([(1, f) for f in filters])  # SubscribeRequest.filters


# -- responses -----------------------------------------------------------------------------------


def _sandbox(msg: pw.Decoded, ready: int, labels: int, **status: Any) -> Sandbox:
    """A Sandbox from a PodSandbox or PodSandboxStatus: id = 1, metadata = 2 (PodSandboxMetadata:
    name = 1, uid = 2, namespace = 3), the state and labels at the numbers given."""
    meta = pw.message(msg, 2)
    return Sandbox(
        id=pw.string(msg, 1),
        name=pw.string(meta, 1),
        uid=pw.string(meta, 2),
        namespace=pw.string(meta, 3),
        ready=pw.integer(msg, ready) == SANDBOX_READY,
        labels=pw.string_map(msg, labels),
        **status,
    )


def parse_version(data: bytes) -> str:
    msg = pw.decode(data)  # VersionResponse: runtime_name = 2, runtime_version = 3
    return f"{pw.string(msg, 2)} {pw.string(msg, 3)}".strip()


def parse_sandboxes(data: bytes) -> list[Sandbox]:
    # ListPodSandboxResponse.items = 1; PodSandbox: state = 3, labels = 5
    return [_sandbox(item, 3, 5) for item in pw.messages(pw.decode(data), 1)]


def parse_sandbox_status(data: bytes) -> Sandbox:
    """PodSandboxStatusResponse: status = 1, info = 2 (map; its "info" entry is JSON)."""
    msg = pw.decode(data)
    status = pw.message(msg, 1)
    # PodSandboxStatus: state = 3, linux = 6, labels = 7; LinuxPodSandboxStatus.namespaces = 1,
    # Namespace.options = 2, NamespaceOption.network = 1
    options = pw.message(pw.message(pw.message(status, 6), 1), 2)
    pid, netns_path = parse_info(pw.string_map(msg, 2).get("info", ""))
    host_network = pw.integer(options, 1) == NAMESPACE_NODE
    return _sandbox(status, 3, 7, host_network=host_network, pid=pid, netns_path=netns_path)


def parse_info(text: str) -> tuple[int, str]:
    """(pid, network namespace path) from a verbose sandbox status's info JSON; no path once the
    runtime has closed the namespace (a stopped sandbox)."""
    try:
        info = json.loads(text) if text else {}
    except ValueError:
        return 0, ""
    if info.get("netNamespaceClosed"):
        return int(info.get("pid") or 0), ""
    spec = (info.get("runtimeSpec") or {}).get("linux") or {}
    path = next(
        (ns.get("path", "") for ns in spec.get("namespaces") or () if ns.get("type") == "network"),
        "",
    )
    return int(info.get("pid") or 0), path


def parse_containers(data: bytes) -> list[CriContainer]:
    # ListContainersResponse.containers = 1; Container: id = 1, pod_sandbox_id = 2,
    # metadata = 3 (ContainerMetadata.name = 1), image = 4 (ImageSpec.image = 1), state = 6
    return [
        CriContainer(
            id=pw.string(c, 1),
            sandbox_id=pw.string(c, 2),
            name=pw.string(pw.message(c, 3), 1),
            image=pw.string(pw.message(c, 4), 1),
            running=pw.integer(c, 6) == CONTAINER_RUNNING,
        )
        for c in pw.messages(pw.decode(data), 1)
    ]


def parse_envelope(data: bytes) -> Envelope:
    # Envelope: timestamp = 1 (seconds = 1, nanos = 2), namespace = 2, topic = 3,
    # event = 4 (Any: type_url = 1, value = 2). TaskStart, TaskExit and ContainerDelete all
    # carry the container id as field 1.
    msg = pw.decode(data)
    stamp = pw.message(msg, 1)
    event = pw.decode(pw.message(msg, 4).get(2, [b""])[-1])
    return Envelope(
        time=pw.integer(stamp, 1) + pw.integer(stamp, 2) / 1e9,
        namespace=pw.string(msg, 2),
        topic=pw.string(msg, 3),
        container_id=pw.string(event, 1),
    )


# -- the client ----------------------------------------------------------------------------------


def target(endpoint: str) -> str:
    """A gRPC target for a socket path or a unix:// address."""
    path = endpoint.removeprefix("unix://")
    return f"unix://{path}" if path.startswith("/") else endpoint


class CriClient:
    """Unary CRI calls and containerd's event stream over one channel (made on first use)."""

    def __init__(self, endpoint: str, timeout: float) -> None:
        self.endpoint = endpoint
        self.timeout = timeout
        self._channel: Any = None

    def _open(self) -> Any:
        if self._channel is None:
            import grpc  # type: ignore[import-untyped]  # here: about 100 ms of imports

            self._channel = grpc.insecure_channel(target(self.endpoint))
        return self._channel

    def call(self, method: str, request: bytes, timeout: float | None = None) -> bytes:
        channel = self._open()
        stub = channel.unary_unary(RUNTIME_SERVICE + method)
        try:
            return stub(request, timeout=timeout or self.timeout)
        except Exception as exc:
            raise _failure(exc, method) from None

    def subscribe(self, filters: list[str]) -> Any:
        """The event stream: an iterator of raw envelopes with ``cancel()``."""
        channel = self._open()
        return channel.unary_stream(EVENTS_SUBSCRIBE)(subscribe_request(filters))

    def envelopes(self, stream: Any) -> Iterator[Envelope]:
        try:
            for data in stream:
                yield parse_envelope(data)
        except Exception as exc:
            raise _failure(exc, "Subscribe") from None

    def close(self) -> None:
        channel, self._channel = self._channel, None
        if channel is not None:
            channel.close()


def _failure(exc: Exception, method: str) -> Exception:
    """NotFound for an unknown id, CallFailed for everything else a call may meet."""
    code = getattr(exc, "code", None)
    name = getattr(code(), "name", "") if callable(code) else ""
    if name == "NOT_FOUND":
        return NotFound(method)
    details = getattr(exc, "details", None)
    text = (details() if callable(details) else "") or str(exc)
    if name == "UNIMPLEMENTED":
        text = f"{method} is not served: not a CRI v1 runtime ({text})"
    return CallFailed(f"{name or type(exc).__name__}: {text}".strip())
