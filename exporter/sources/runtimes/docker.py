"""Docker as a workload source: which namespace belongs to which container.

``parse_container``, ``parse_network`` and ``parse_event`` are pure (fed by
recorded ``docker inspect`` JSON in tests); ``DockerSource`` makes the calls
through the Engine API client. Rootful Podman's Docker-compatible socket
answers the same calls.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Iterator
from typing import Any

from exporter.app.flags import DEFAULT_DOCKER_EXEC_ROOT, default_docker_host
from exporter.core.model import Endpoint, Network, PortBinding, Workload
from exporter.sources.runtimes.engine_api import (
    UNREACHABLE,
    EngineAPI,
    EngineError,
    EventStream,
    NotFound,
    Unreachable,
)
from exporter.sources.runtimes.workloads import Effect, SourceUnavailable, Unreadable, WorkloadEvent

# What says "Docker does not answer (right now)": unreachable, or an error answer.
FAILED: tuple[type[Exception], ...] = (Unreachable, EngineError)

WATCHED_EVENTS: dict[str, tuple[str, ...]] = {
    "container": ("start", "die", "destroy", "rename"),
    "network": ("create", "destroy", "connect", "disconnect"),
}
EFFECTS = {
    ("container", "start"): Effect.CHANGED,
    ("container", "rename"): Effect.CHANGED,
    ("container", "die"): Effect.GONE,
    ("container", "destroy"): Effect.GONE,
    # Starting a container connects it before "start", removing one disconnects it after "die":
    # only a container already running needs another look.
    ("network", "connect"): Effect.CHANGED_IF_KNOWN,
    ("network", "disconnect"): Effect.CHANGED_IF_KNOWN,
    ("network", "create"): Effect.NETWORKS,
    ("network", "destroy"): Effect.NETWORKS,
}

COMPOSE_PROJECT = "com.docker.compose.project"
COMPOSE_SERVICE = "com.docker.compose.service"
BRIDGE_NAME_OPTION = "com.docker.network.bridge.name"
MASQUERADE_OPTION = "com.docker.network.bridge.enable_ip_masquerade"
VXLAN_ID_OPTION = "com.docker.network.driver.overlay.vxlanid_list"
ENCRYPTED_OPTION = "encrypted"
PING_TIMEOUT = 5.0
# Every container on a Swarm (overlay) network also has an endpoint on this bridge network, which its
# inspect does not list: the network's own inspect does, by container id.
GATEWAY_BRIDGE = "docker_gwbridge"
SWARM_NETWORK_ID = re.compile(r"[0-9a-z]{25}")  # swarm-scope ids; local ones are 64 hex digits


def parse_container(data: dict) -> Workload:
    """A Workload from one ``docker inspect`` document."""
    config = data.get("Config") or {}
    labels = config.get("Labels") or {}
    settings = data.get("NetworkSettings") or {}
    state = data.get("State") or {}
    return Workload(
        id=data["Id"],
        name=(data.get("Name") or "").lstrip("/"),
        image=config.get("Image") or data.get("Image", ""),
        pid=int(state.get("Pid") or 0),
        network_mode=(data.get("HostConfig") or {}).get("NetworkMode") or "",
        compose_project=labels.get(COMPOSE_PROJECT, ""),
        compose_service=labels.get(COMPOSE_SERVICE, ""),
        started_at=state.get("StartedAt", ""),
        endpoints=tuple(
            _endpoint(name, ep) for name, ep in sorted((settings.get("Networks") or {}).items())
        ),
        ports=tuple(_port_bindings(settings.get("Ports") or {})),
    )


def _endpoint(name: str, ep: dict) -> Endpoint:
    ep = ep or {}
    return Endpoint(
        network=name,
        network_id=ep.get("NetworkID") or "",
        mac=ep.get("MacAddress") or "",
        ipv4=ep.get("IPAddress") or "",
        ipv4_prefix=int(ep.get("IPPrefixLen") or 0),
        ipv6=ep.get("GlobalIPv6Address") or "",
        ipv6_prefix=int(ep.get("GlobalIPv6PrefixLen") or 0),
    )


def _port_bindings(ports: dict) -> Iterator[PortBinding]:
    for key, bindings in sorted(ports.items()):
        port, _, protocol = key.partition("/")
        for b in bindings or ():
            if b.get("HostPort"):
                yield PortBinding(
                    protocol or "tcp", int(port), b.get("HostIp") or "", int(b["HostPort"])
                )


def on_swarm(c: Workload) -> bool:
    """Whether the container has an endpoint on a Swarm network (so one on docker_gwbridge too)."""
    return any(SWARM_NETWORK_ID.fullmatch(ep.network_id) for ep in c.endpoints)


def parse_gateway_endpoints(data: dict) -> dict[str, Endpoint]:
    """Container id -> its endpoint on docker_gwbridge, from that network's inspect."""
    out = {}
    for container_id, ep in (data.get("Containers") or {}).items():
        address, _, prefix = (ep.get("IPv4Address") or "").partition("/")
        out[container_id] = Endpoint(
            network=data.get("Name") or GATEWAY_BRIDGE,
            network_id=data.get("Id") or "",
            mac=ep.get("MacAddress") or "",
            ipv4=address,
            ipv4_prefix=int(prefix or 0),
        )
    return out


def with_gateway(c: Workload, gateways: dict[str, Endpoint]) -> Workload:
    """The container with its docker_gwbridge endpoint, when it has one."""
    ep = gateways.get(c.id)
    if ep is None or any(e.network == ep.network for e in c.endpoints):
        return c
    return dataclasses.replace(c, endpoints=c.endpoints + (ep,))


def parse_network(data: dict) -> Network:
    options = data.get("Options") or {}
    driver = data.get("Driver") or ""
    bridge = ""
    if driver == "bridge":
        bridge = options.get(BRIDGE_NAME_OPTION) or "br-" + data["Id"][:12]
    subnets = tuple(
        (c.get("Subnet", ""), c.get("Gateway", ""))
        for c in ((data.get("IPAM") or {}).get("Config") or ())
        if c.get("Subnet")
    )
    return Network(
        id=data["Id"],
        name=data.get("Name", ""),
        driver=driver,
        bridge=bridge,
        subnets=subnets,
        internal=bool(data.get("Internal")),
        masquerade=options.get(MASQUERADE_OPTION, "true") == "true",
        vni=options.get(VXLAN_ID_OPTION, "") if driver == "overlay" else "",
        encrypted=driver == "overlay" and ENCRYPTED_OPTION in options,
    )


def parse_event(data: dict) -> WorkloadEvent:
    kind, action = data.get("Type", ""), data.get("Action", "")
    actor = data.get("Actor") or {}
    effect = EFFECTS.get((kind, action), Effect.NOTHING)
    workload = actor.get("ID", "")
    if kind == "network":
        workload = (actor.get("Attributes") or {}).get("container", "")
    return WorkloadEvent(action, effect, workload, float(data.get("time") or 0))


class DockerSource:
    """The Docker Engine API; every call may raise SourceUnavailable."""

    runtime = "docker"
    has_pods = False
    events_mode = ""  # one event stream, one way
    display = "Docker"
    watched = WATCHED_EVENTS
    event_actions = tuple(sorted({a for actions in WATCHED_EVENTS.values() for a in actions}))

    def __init__(
        self,
        host: str | None = None,
        timeout: float = 10.0,
        exec_root: str = DEFAULT_DOCKER_EXEC_ROOT,
    ) -> None:
        self.address = host or default_docker_host()
        self.timeout = timeout
        # Where this dockerd binds its network namespaces (the state reads them; see loader.py).
        self.netns_dir = exec_root.rstrip("/") + "/netns"
        self._api = EngineAPI(self.address, timeout)
        self._stream: EventStream | None = None
        # Containers whose inspect cannot be read, each logged once.
        self._unreadable = Unreadable(f"{self.runtime}_container_unreadable", "container_id")

    def _get(self, path: str, params: dict | None = None) -> Any:
        try:
            return self._api.get(path, params)
        except NotFound:
            raise
        except FAILED as exc:
            raise self._unavailable(exc) from None

    def _unavailable(self, exc: BaseException) -> SourceUnavailable:
        return SourceUnavailable(f"{self.display} is unreachable at {self.address} ({exc})")

    def workloads(self) -> list[Workload]:
        """The running containers; one whose inspect cannot be read is left out alone."""
        ids = [summary["Id"] for summary in self._get("/containers/json")]
        self._unreadable.keep(set(ids))
        found = [c for c in map(self._inspected, ids) if c is not None]
        gateways = self._gateway_endpoints() if any(map(on_swarm, found)) else {}
        return [with_gateway(c, gateways) for c in found]

    def workload(self, workload_id: str) -> Workload | None:
        """None also for a container whose inspect cannot be read (logged once)."""
        c = self._inspected(workload_id)
        if c is None or not on_swarm(c):
            return c
        return with_gateway(c, self._gateway_endpoints())

    def _gateway_endpoints(self) -> dict[str, Endpoint]:
        """A Swarm container's docker_gwbridge endpoint, which its own inspect does not list."""
        try:
            return parse_gateway_endpoints(self._get(f"/networks/{GATEWAY_BRIDGE}"))
        except NotFound:
            return {}

    def _inspected(self, workload_id: str) -> Workload | None:
        try:
            data = self._get(f"/containers/{workload_id}/json")
        except NotFound:
            return None
        return self._unreadable.attempt(workload_id, lambda: self._running(data))

    def _running(self, data: Any) -> Workload | None:
        return self.parse_container(data) if (data.get("State") or {}).get("Running") else None

    @staticmethod
    def parse_container(data: dict) -> Workload:
        return parse_container(data)

    @staticmethod
    def parse_event(data: dict) -> WorkloadEvent:
        return parse_event(data)

    def networks(self) -> list[Network]:
        return [parse_network(n) for n in self._get("/networks")]

    def events(self, since: float | None = None) -> Iterator[WorkloadEvent]:
        filters = {"type": list(self.watched), "event": list(self.event_actions)}
        params: dict[str, Any] = {"filters": json.dumps(filters)}
        if since is not None:
            params["since"] = int(since)
        try:
            self._stream = self._api.stream("/events", params)
        except FAILED as exc:
            raise self._unavailable(exc) from None
        return self._decoded(self._stream)

    def _decoded(self, stream: EventStream) -> Iterator[WorkloadEvent]:
        try:
            for data in stream:
                yield self.parse_event(data)
        except UNREACHABLE as exc:
            raise self._unavailable(exc) from None

    def close_events(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            stream.close()

    def ping(self) -> bool:
        return self._api.ping(min(self.timeout, PING_TIMEOUT))

    def close(self) -> None:
        self._api.close()
