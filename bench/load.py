"""The load: real containers from the local test image, and synthetic veth
pairs whose peers live in namespaces of our own, on bridges of our own.

Everything is named after one prefix (dnxb-xxxx) and removed by cleanup(),
also after a failure. No addresses are configured: the benchmark sends no
traffic.
"""

from __future__ import annotations

import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from docker import DockerClient
    from docker.models.containers import Container

PER_NETWORK = 100  # a Docker network's /24 holds 253 containers
PER_NETNS = 10  # synthetic veth peers per namespace (eth0..eth9)
PER_BRIDGE = 1000  # a Linux bridge holds at most 1,023 ports
LABEL = "dnxb.bench"


def ip_batch(lines: list) -> None:
    if lines:
        subprocess.run(
            ["ip", "-batch", "-"],
            input="\n".join(lines) + "\n",
            text=True,
            check=True,
            capture_output=True,
        )


class Load:
    def __init__(self, client: DockerClient, prefix: str, image: str, workers: int = 4) -> None:
        self.client = client
        self.prefix = prefix  # dnxb-1a2b: 9 characters, leaves room in 15-character names
        self.tag = prefix.replace("-", "")
        self.image = image
        self.workers = workers
        self.containers: list = []  # ids, in start order
        self.networks: list = []
        self.veths: dict = {}  # synthetic host-side name -> its bridge
        self.namespaces: list = []
        self.bridges: list = []
        self.batches = 0

    # -- containers --------------------------------------------------------

    def grow_containers(self, n: int) -> None:
        """Run containers until n of ours are running, spread over networks of our own."""
        todo = range(len(self.containers), n)
        while len(self.networks) * PER_NETWORK < n:
            self.networks.append(
                self.client.networks.create(
                    f"{self.prefix}-net{len(self.networks)}", labels={LABEL: self.prefix}
                ).name
            )
        with ThreadPoolExecutor(self.workers) as pool:
            self.containers.extend(pool.map(self._run, todo))

    def _run(self, i: int) -> str:
        return self.run_container(f"{self.prefix}-c{i}", self.networks[i // PER_NETWORK])

    def run_container(self, name: str, network: str = "bridge") -> str:
        container_id = self.create_container(name, network)
        self.start_container(container_id)
        return container_id

    def create_container(self, name: str, network: str = "bridge") -> str:
        container = self.client.containers.create(
            self.image, "sleep 86400", name=name, network=network, labels={LABEL: self.prefix}
        )
        assert container.id is not None  # a created container has its id
        return container.id

    def start_container(self, container_id: str) -> None:
        self.client.api.start(container_id)

    def extra_network(self) -> str:
        """A network of ours for containers beyond the base load (at most a few hundred in all)."""
        if not self.networks:
            self.networks.append(
                self.client.networks.create(f"{self.prefix}-net0", labels={LABEL: self.prefix}).name
            )
        return self.networks[-1]

    def remove_container(self, container_id: str) -> None:
        self.client.api.remove_container(container_id, force=True)

    # -- synthetic veths ---------------------------------------------------

    def grow_veths(self, n: int) -> None:
        """Add synthetic veth pairs until n of ours exist."""
        self.batches += 1
        self.veths.update(self.add_veths(n - len(self.veths), f"s{self.batches}"))

    def add_veths(self, n: int, tag: str) -> dict:
        """n veth pairs in one `ip -batch` (names: prefix, tag, index, at most 15 characters);
        their namespaces and bridges are made first."""
        if n <= 0:
            return {}
        spaces = [f"{self.prefix}-{tag}{k}" for k in range((n + PER_NETNS - 1) // PER_NETNS)]
        bridges = [f"{self.tag}{tag}b{k}" for k in range((n + PER_BRIDGE - 1) // PER_BRIDGE)]
        ip_batch([f"netns add {ns}" for ns in spaces])
        self.namespaces.extend(spaces)
        ip_batch(
            [f"link add name {b} type bridge" for b in bridges]
            + [f"link set {b} up" for b in bridges]
        )
        self.bridges.extend(bridges)
        names = {f"{self.tag}{tag}{i}": bridges[i // PER_BRIDGE] for i in range(n)}
        ip_batch(
            [
                f"link add name {name} master {bridge} up type veth "
                f"peer name eth{i % PER_NETNS} netns {spaces[i // PER_NETNS]}"
                for i, (name, bridge) in enumerate(names.items())
            ]
        )
        return names

    def delete_namespaces(self, tag: str) -> None:
        """Delete the namespaces of one add_veths() batch: the kernel removes their pairs in bulk
        (one `ip link del` per pair waits for an RCU grace period each: 20 s for 1,000)."""
        spaces = [ns for ns in self.namespaces if ns.startswith(f"{self.prefix}-{tag}")]
        ip_batch([f"netns del {ns}" for ns in spaces])
        self.namespaces = [ns for ns in self.namespaces if ns not in spaces]

    # -- cleanup -----------------------------------------------------------

    def cleanup(self) -> list:
        """Remove everything carrying our prefix or label; returns what could not be removed."""
        try:
            problems = self._remove_docker_objects()
        except Exception as exc:  # dockerd unreachable: the kernel objects still go
            problems = [f"containers and networks labelled {LABEL}={self.prefix}: {exc}"]
        return problems + self._remove_kernel_objects()

    def _remove_docker_objects(self) -> list:
        ours = self.client.containers.list(all=True, filters={"label": f"{LABEL}={self.prefix}"})
        with ThreadPoolExecutor(self.workers) as pool:
            problems = [p for p in pool.map(self._force_remove, ours) if p]
        for net in self.client.networks.list(filters={"label": f"{LABEL}={self.prefix}"}):
            try:
                net.remove()
            except Exception as exc:
                problems.append(f"network {net.name}: {exc}")
        return problems

    @staticmethod
    def _force_remove(container: Container) -> str:
        try:
            container.remove(force=True)
            return ""
        except Exception as exc:
            return f"container {container.name}: {exc}"

    def _remove_kernel_objects(self) -> list:
        spaces = [
            ns
            for ns in subprocess.run(
                ["ip", "netns", "list"], capture_output=True, text=True
            ).stdout.split()
            if ns.startswith(self.prefix + "-")
        ]
        subprocess.run(
            ["ip", "-force", "-batch", "-"],
            input="".join(f"netns del {ns}\n" for ns in spaces),
            text=True,
            capture_output=True,
        )
        deadline = time.monotonic() + 10
        while self.leftover_links() and time.monotonic() < deadline:
            subprocess.run(
                ["ip", "-force", "-batch", "-"],
                text=True,
                capture_output=True,
                input="".join(f"link del {name}\n" for name in self.leftover_links()),
            )
            time.sleep(0.2)
        left = [f"link {name}" for name in self.leftover_links()]
        return left + [f"netns {ns}" for ns in self.leftover_namespaces()]

    def leftover_links(self) -> list:
        out = subprocess.run(["ip", "-o", "link", "show"], capture_output=True).stdout
        text = out.decode(errors="replace")  # another's link name need not be UTF-8
        names = [line.split(": ")[1].split("@")[0] for line in text.splitlines() if ": " in line]
        return [n for n in names if n.startswith(self.tag)]

    def leftover_namespaces(self) -> list:
        out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        return [ns for ns in out.split() if ns.startswith(self.prefix + "-")]
