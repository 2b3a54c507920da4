"""The few messages of the CRI (``runtime.v1.RuntimeService``, its event stream included) and of
containerd's events service that the exporter uses, with the field numbers of their upstream
definitions, and a small gRPC client over a unix socket. The messages are the generated classes of
proto/*.proto; grpcio carries raw bytes and is imported only when a client is made (start-up of
commands that need no CRI).

Pure: the ``*_request`` builders and ``parse_*`` readers. ``CriClient`` does the I/O.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from google.protobuf.message import DecodeError

from exporter.sources.runtimes.proto import cri_pb2, events_pb2

RUNTIME_SERVICE = "/runtime.v1.RuntimeService/"
EVENTS_SUBSCRIBE = "/containerd.services.events.v1.Events/Subscribe"
CONTAINER_EVENTS = RUNTIME_SERVICE + "GetContainerEvents"

# runtime.v1 enums
SANDBOX_READY = 0  # PodSandboxState
CONTAINER_RUNNING = 1  # ContainerState
NAMESPACE_NODE = 2  # NamespaceMode: POD = 0, CONTAINER = 1, NODE = 2, TARGET = 3


class NotFound(LookupError):
    """The runtime knows no such sandbox or container."""


class CallFailed(OSError):
    """The runtime did not answer the call (unreachable, timed out, or not a CRI runtime)."""


class Refused(CallFailed):
    """The runtime answered the call with an error of its own about that object (a sandbox whose
    network namespace it cannot remove answers PodSandboxStatus with UNKNOWN): the runtime is up."""


# Codes that say the runtime did not answer; any other code is its answer about the call.
UNANSWERED = frozenset({"UNAVAILABLE", "DEADLINE_EXCEEDED", "CANCELLED", "RESOURCE_EXHAUSTED"})


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


@dataclass(frozen=True)
class CriEvent:
    """One event of the CRI's own stream: a container's (or a sandbox's: then its id is the
    sandbox's) creation, start, stop or deletion, and the sandbox it belongs to where the runtime
    still knows it."""

    kind: str  # the ContainerEventType's name, e.g. CONTAINER_STARTED_EVENT
    container_id: str
    sandbox_id: str  # "" when the event carries no sandbox status (a deleted sandbox)
    time: float


# -- requests ------------------------------------------------------------------------------------


def version_request() -> bytes:
    return cri_pb2.VersionRequest(version="v1").SerializeToString()


def list_sandboxes_request() -> bytes:
    return cri_pb2.ListPodSandboxRequest().SerializeToString()  # no filter


def sandbox_status_request(sandbox_id: str, verbose: bool = True) -> bytes:
    msg = cri_pb2.PodSandboxStatusRequest(pod_sandbox_id=sandbox_id, verbose=verbose)
    return msg.SerializeToString()


def list_containers_request(
    sandbox_id: str = "", container_id: str = "", running: bool = True
) -> bytes:
    f = cri_pb2.ContainerFilter(id=container_id, pod_sandbox_id=sandbox_id)
    if running:
        f.state.state = cri_pb2.CONTAINER_RUNNING
    return cri_pb2.ListContainersRequest(filter=f).SerializeToString()


def subscribe_request(filters: list[str]) -> bytes:
    return events_pb2.SubscribeRequest(filters=filters).SerializeToString()


def container_events_request() -> bytes:
    return cri_pb2.GetEventsRequest().SerializeToString()


# -- responses -----------------------------------------------------------------------------------


def _parse(cls: Any, data: bytes) -> Any:
    try:
        return cls.FromString(data)
    except DecodeError as exc:
        raise ValueError(f"not a {cls.__name__}: {exc}") from None


def _sandbox(msg: Any, **status: Any) -> Sandbox:
    """A Sandbox from a PodSandbox or a PodSandboxStatus."""
    return Sandbox(
        id=msg.id,
        name=msg.metadata.name,
        uid=msg.metadata.uid,
        namespace=msg.metadata.namespace,
        ready=msg.state == SANDBOX_READY,
        labels=dict(msg.labels),
        **status,
    )


def parse_runtime(data: bytes) -> tuple[str, str]:
    """(runtime name, its version) from a VersionResponse: ("containerd", "1.6.20")."""
    msg = _parse(cri_pb2.VersionResponse, data)
    return msg.runtime_name, msg.runtime_version


def parse_version(data: bytes) -> str:
    return " ".join(parse_runtime(data)).strip()


def _ignore(error: str) -> None:
    pass


def parse_sandboxes(data: bytes, left_out: Callable[[str], None] = _ignore) -> list[Sandbox]:
    """The sandboxes of a ListPodSandboxResponse. One that cannot be decoded (a label that is not
    UTF-8: containerd takes one through a raw call) is left out alone, and said to `left_out`."""
    return _each(cri_pb2.ListPodSandboxResponse, cri_pb2.PodSandbox, data, _sandbox, left_out)


def _each(
    cls: Any, item: Any, data: bytes, read: Callable[[Any], Any], left_out: Callable[[str], None]
) -> list:
    """Each item of a list response's field 1 (`repeated item`), decoded one at a time."""
    try:
        chunks = list(repeated_field(data, 1))
    except ValueError as exc:
        raise ValueError(f"not a {cls.__name__}: {exc}") from None
    out = []
    for chunk in chunks:
        try:
            out.append(read(_parse(item, chunk)))
        except ValueError as exc:
            left_out(str(exc))
    return out


def repeated_field(data: bytes, number: int) -> Iterator[bytes]:
    """The raw occurrences of one length-delimited field of a message, in order (protobuf's wire
    format: varint keys, then a varint, 8 bytes, a length and bytes, or 4 bytes)."""
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        wire = key & 7
        if wire == 0:
            _, pos = _varint(data, pos)
        elif wire in (1, 5):
            pos += 8 if wire == 1 else 4
        elif wire == 2:
            size, pos = _varint(data, pos)
            if pos + size > len(data):
                raise ValueError("a field runs past the end")
            if key >> 3 == number:
                yield data[pos : pos + size]
            pos += size
        else:
            raise ValueError(f"wire type {wire}")
    if pos > len(data):
        raise ValueError("it ends inside a field")


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise ValueError("a truncated varint")
        byte = data[pos]
        value |= (byte & 0x7F) << shift
        pos, shift = pos + 1, shift + 7
        if not byte & 0x80:
            return value, pos


def parse_sandbox_status(data: bytes) -> Sandbox:
    """A verbose PodSandboxStatusResponse: its info map's "info" entry is JSON."""
    msg = _parse(cri_pb2.PodSandboxStatusResponse, data)
    status = msg.status
    pid, netns_path = parse_info(msg.info.get("info", ""))
    host_network = status.linux.namespaces.options.network == NAMESPACE_NODE
    return _sandbox(status, host_network=host_network, pid=pid, netns_path=netns_path)


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


def parse_containers(data: bytes, left_out: Callable[[str], None] = _ignore) -> list[CriContainer]:
    """The containers of a ListContainersResponse; one that cannot be decoded is left out alone."""
    return _each(cri_pb2.ListContainersResponse, cri_pb2.Container, data, _container, left_out)


def _container(c: Any) -> CriContainer:
    return CriContainer(
        id=c.id,
        sandbox_id=c.pod_sandbox_id,
        name=c.metadata.name,
        image=c.image.image,
        running=c.state == CONTAINER_RUNNING,
    )


def parse_envelope(data: bytes) -> Envelope:
    """TaskStart, TaskExit and ContainerDelete all carry the container id first (EventId)."""
    msg = _parse(events_pb2.Envelope, data)
    event = _parse(events_pb2.EventId, msg.event.value)
    return Envelope(
        time=msg.timestamp.seconds + msg.timestamp.nanos / 1e9,
        namespace=msg.namespace,
        topic=msg.topic,
        container_id=event.id,
    )


def parse_container_event(data: bytes) -> CriEvent:
    msg = _parse(cri_pb2.ContainerEventResponse, data)
    seconds, nanos = divmod(msg.created_at, 1_000_000_000)  # nanoseconds, as an int64
    return CriEvent(
        kind=cri_pb2.ContainerEventType.Name(msg.container_event_type),
        container_id=msg.container_id,
        sandbox_id=msg.pod_sandbox_status.id,
        time=seconds + nanos / 1e9,
    )


# -- the client ----------------------------------------------------------------------------------


def target(endpoint: str) -> str:
    """A gRPC target for a socket path or a unix:// address."""
    path = endpoint.removeprefix("unix://")
    return f"unix://{path}" if path.startswith("/") else endpoint


class CriClient:
    """Unary CRI calls and the two event streams over one channel (made on first use)."""

    def __init__(self, endpoint: str, timeout: float) -> None:
        self.endpoint = endpoint
        self.timeout = timeout
        self._channel: Any = None

    def _open(self) -> Any:
        if self._channel is None:
            import grpc  # here: about 100 ms of imports

            self._channel = grpc.insecure_channel(target(self.endpoint))
        return self._channel

    def call(self, method: str, request: bytes, timeout: float | None = None) -> bytes:
        channel = self._open()
        stub = channel.unary_unary(RUNTIME_SERVICE + method)
        try:
            return stub(request, timeout=timeout or self.timeout)
        except Exception as exc:
            raise _failure(exc, method, "not a CRI v1 runtime") from None

    def subscribe(self, filters: list[str]) -> Any:
        """containerd's event stream: an iterator of raw envelopes with ``cancel()``."""
        channel = self._open()
        return channel.unary_stream(EVENTS_SUBSCRIBE)(subscribe_request(filters))

    def container_events(self) -> Any:
        """The CRI's event stream: an iterator of raw ContainerEventResponses with ``cancel()``."""
        channel = self._open()
        return channel.unary_stream(CONTAINER_EVENTS)(container_events_request())

    def envelopes(self, stream: Any) -> Iterator[Envelope]:
        return _read(stream, parse_envelope, "Subscribe")

    def cri_events(self, stream: Any) -> Iterator[CriEvent]:
        return _read(stream, parse_container_event, "GetContainerEvents")

    def close(self) -> None:
        channel, self._channel = self._channel, None
        if channel is not None:
            channel.close()


def _read(stream: Any, parse: Callable[[bytes], Any], method: str) -> Iterator[Any]:
    try:
        for data in stream:
            yield parse(data)
    except Exception as exc:
        raise _failure(exc, method) from None


def ended_at_once(stream: Any, wait: float) -> str:
    """The status code's name (UNIMPLEMENTED, OK, ...) of a stream just opened that ended within
    `wait` seconds, else "": a stream that serves events sends nothing until the first one."""
    ended = threading.Event()
    stream.add_done_callback(lambda _: ended.set())
    ended.wait(wait)
    return getattr(stream.code(), "name", "?") if stream.done() else ""


def _failure(exc: Exception, method: str, unserved_means: str = "") -> Exception:
    """NotFound for an unknown id, Refused for the runtime's own error about the call, CallFailed
    for everything else a call may meet (a method not served says so)."""
    code = getattr(exc, "code", None)
    name = getattr(code(), "name", "") if callable(code) else ""
    if name == "NOT_FOUND":
        return NotFound(method)
    details = getattr(exc, "details", None)
    text = (details() if callable(details) else "") or str(exc)
    if name == "UNIMPLEMENTED":
        why = f": {unserved_means}" if unserved_means else ""
        return CallFailed(f"{name}: {method} is not served{why} ({text})")
    failed = Refused if name and name not in UNANSWERED else CallFailed
    return failed(f"{name or type(exc).__name__}: {text}".strip())
