"""Docker as the source of "which namespace belongs to which container".

``parse_container`` and ``parse_network`` are pure (fed by recorded ``docker
inspect`` JSON in tests); ``DockerSource`` does the API calls.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import docker
import docker.errors
import requests

from ..model import Container, Endpoint, Network, PortBinding

# Errors that mean "Docker is not reachable right now", as opposed to a bug.
UNREACHABLE = (docker.errors.DockerException, requests.exceptions.RequestException, OSError)

WATCHED_EVENTS = {
    "container": ("start", "die", "destroy", "rename"),
    "network": ("create", "destroy", "connect", "disconnect"),
}

COMPOSE_PROJECT = "com.docker.compose.project"
COMPOSE_SERVICE = "com.docker.compose.service"
BRIDGE_NAME_OPTION = "com.docker.network.bridge.name"
MASQUERADE_OPTION = "com.docker.network.bridge.enable_ip_masquerade"


def default_host() -> str:
    return os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"


def parse_container(data: dict) -> Container:
    """A Container from one ``docker inspect`` document."""
    config = data.get("Config") or {}
    labels = config.get("Labels") or {}
    settings = data.get("NetworkSettings") or {}
    state = data.get("State") or {}
    return Container(
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
    )


class DockerSource:
    """Docker Engine API calls; every method may raise one of UNREACHABLE."""

    name = "docker"

    def __init__(self, host: str | None = None, timeout: float = 10.0) -> None:
        self.host = host or default_host()
        self.timeout = timeout
        self._client: docker.APIClient | None = None
        self._stream = None

    def _api(self) -> docker.APIClient:
        if self._client is None:
            self._client = docker.APIClient(
                base_url=self.host, version="auto", timeout=self.timeout
            )
            # Proxies never apply to a unix socket, yet requests reads them from the environment on
            # every call: a fifth of an inspect's CPU time.
            self._client.trust_env = not self.host.startswith(("unix:", "http+unix:"))
        return self._client

    def reset(self) -> None:
        """Forget the connection (after dockerd went away) so the next call reconnects."""
        client, self._client = self._client, None
        if client is not None:
            client.close()

    def ping(self) -> bool:
        return bool(self._api().ping())

    def containers(self) -> list[Container]:
        api = self._api()
        out = []
        for summary in api.containers():
            found = self.inspect(summary["Id"])
            if found is not None:
                out.append(found)
        return out

    def inspect(self, container_id: str) -> Container | None:
        """The running container with that id, or None if it is gone or stopped."""
        try:
            data = self._api().inspect_container(container_id)
        except docker.errors.NotFound:
            return None
        if not (data.get("State") or {}).get("Running"):
            return None
        return parse_container(data)

    def networks(self) -> list[Network]:
        return [parse_network(n) for n in self._api().networks()]

    def events(self, since: int | None = None) -> Iterator[dict]:
        """Decoded events of the watched kinds; ends when dockerd goes away."""
        filters = {
            "type": list(WATCHED_EVENTS),
            "event": sorted({e for v in WATCHED_EVENTS.values() for e in v}),
        }
        self._stream = self._api().events(since=since, filters=filters, decode=True)
        return iter(self._stream)

    def close_events(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            try:
                stream.close()
            except (
                Exception
            ):  # closing a dead stream may fail in many ways; it is closed either way
                pass
