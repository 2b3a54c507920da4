"""The Podman side of the tests: the test Podman's socket (scripts/podman-env.sh), test containers
made through its Docker-compatible API and removed afterwards, its CLI as a remote client, and the
host end of a container's eth0."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from helpers import TEST_IMAGE, sh, unique

if TYPE_CHECKING:
    from docker.models.containers import Container

__all__ = ["PODMAN_SOCKET", "PodmanContainers", "host_ifindex", "podman_cli"]

PODMAN_SOCKET = "/run/dockernet-podman/podman.sock"


class PodmanContainers:
    """Containers (named dnxp-*) and networks made through Podman's compat API (the `podman`
    fixture), removed afterwards."""

    def __init__(self) -> None:
        import docker

        self.client = docker.DockerClient(
            base_url=f"unix://{PODMAN_SOCKET}", version="1.41", timeout=60
        )
        self.containers: list = []
        self.networks: list = []

    def run(self, **kw):
        c = self.client.containers.run(
            TEST_IMAGE, "sleep 3600", name=unique("dnxp"), detach=True, **kw
        )
        self.containers.append(c)
        return c

    def network(self):
        net = self.client.networks.create(unique("dnxpnet"))
        self.networks.append(net)
        return net

    def cleanup(self) -> None:
        for c in self.containers:
            try:
                c.remove(force=True)
            except Exception:  # already gone
                pass
        for n in self.networks:
            try:
                n.remove()
            except Exception:
                pass
        self.client.close()


def podman_cli(*args: str, **kw: Any) -> str:
    """The podman CLI as a client of the test service (its own storage and configuration)."""
    return sh("podman", "--remote", "--url", f"unix://{PODMAN_SOCKET}", *args, **kw)


def host_ifindex(c: Container) -> int:
    """The host end of the container's eth0, from the container's own sysfs."""
    c.reload()
    with open(f"/proc/{c.attrs['State']['Pid']}/root/sys/class/net/eth0/iflink") as f:
        return int(f.read())
