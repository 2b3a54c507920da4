"""Rootful Podman as a workload source, through its Docker-compatible API socket: the same calls as
Docker's (sources/docker.py), read where Podman answers them differently.

- The compat network list names no Linux bridge: the bridges (``podman0``, ``podman1``, ...) come
  from the libpod API (``/v4.0.0/libpod/networks/json``, ``network_interface``), under the names
  that containers' endpoints use (the default network is ``podman`` there, ``bridge`` in the
  compat list).
- ``NetworkMode`` says ``bridge`` on a user network too: the mode is the network's name then.
- A removed container's or network's event is ``remove`` (there is no ``destroy``).

``parse_podman_container``, ``parse_libpod_network`` and ``parse_podman_event`` are pure.
"""

from __future__ import annotations

import dataclasses

from exporter.core.model import Network, Workload
from exporter.sources.runtimes.docker import DockerSource, parse_container, parse_event
from exporter.sources.runtimes.workloads import Effect, WorkloadEvent

DEFAULT_HOST = "unix:///run/podman/podman.sock"
DEFAULT_NETWORK = "podman"
LIBPOD_NETWORKS = "/v4.0.0/libpod/networks/json"
WATCHED_EVENTS = {
    "container": ("start", "die", "remove", "rename"),
    "network": ("create", "remove"),
}


def parse_podman_container(data: dict) -> Workload:
    c = dataclasses.replace(parse_container(data), runtime="podman", nat_chains="netavark")
    user = [ep.network for ep in c.endpoints if ep.network != DEFAULT_NETWORK]
    if c.network_mode == "bridge" and user:
        return dataclasses.replace(c, network_mode=user[0])
    return c


def parse_libpod_network(data: dict) -> Network:
    subnets = tuple(
        (s.get("subnet", ""), s.get("gateway", ""))
        for s in data.get("subnets") or ()
        if s.get("subnet")
    )
    driver = data.get("driver") or ""
    return Network(
        id=data.get("id") or data.get("name", ""),
        name=data.get("name", ""),
        driver=driver,
        bridge=(data.get("network_interface") or "") if driver == "bridge" else "",
        subnets=subnets,
        internal=bool(data.get("internal")),
        runtime="podman",
        nat_chains="netavark",
    )


def parse_podman_event(data: dict) -> WorkloadEvent:
    event = parse_event(data)
    if data.get("Action") == "remove":
        gone = Effect.GONE if data.get("Type") == "container" else Effect.NETWORKS
        return dataclasses.replace(event, effect=gone)
    return event


class PodmanSource(DockerSource):
    """Podman's Docker-compatible API; every call may raise SourceUnavailable."""

    runtime = "podman"
    display = "Podman"
    watched = WATCHED_EVENTS
    event_actions = tuple(sorted({a for actions in WATCHED_EVENTS.values() for a in actions}))

    def __init__(self, host: str = DEFAULT_HOST, timeout: float = 10.0) -> None:
        super().__init__(host, timeout)
        self.netns_dir = ""  # netavark's namespaces are `ip netns`'s (/run/netns)

    parse_container = staticmethod(parse_podman_container)
    parse_event = staticmethod(parse_podman_event)

    def networks(self) -> list[Network]:
        return [parse_libpod_network(n) for n in self._get(LIBPOD_NETWORKS)]
