"""`make screenshot`: a real exporter on this host with a few containers of its own (two networks,
one container on both with a sidecar in its namespace, a published port, a host-network one, and
an orphaned veth pair), and headless Chromium's screenshot of its /topology page, filtered to
what it made.

Usage: python scripts/topology_screenshot.py OUT.png  (as root, with dockerd running and the
local test image loaded: `make test-env`). Holds the test lock shared while it runs; removes what it
made, also after a failure.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import docker
import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from helpers import CHROMIUM_FLAGS, LOCK_PATH, TEST_IMAGE, free_port  # noqa: E402

WINDOW = "1280,1000"


def wait_ready(url: str, proc: subprocess.Popen, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the exporter exited with {proc.returncode}")
        try:
            if requests.get(url + "/healthz", timeout=1).ok:
                return
        except requests.RequestException:
            pass
        time.sleep(0.1)
    raise RuntimeError("the exporter did not answer")


class Scene:
    """The containers, networks and veth pair shown, all named after one prefix."""

    def __init__(self, client: docker.DockerClient) -> None:
        self.client, self.prefix = client, f"demo-{uuid.uuid4().hex[:4]}"
        self.containers: list = []
        self.networks: list = []
        self.veth = ""

    def run(self, name: str, **kw):
        c = self.client.containers.run(
            TEST_IMAGE, "sleep 3600", name=f"{self.prefix}-{name}", detach=True, **kw
        )
        self.containers.append(c)
        return c

    def build(self) -> None:
        front, back = (
            self.client.networks.create(f"{self.prefix}-{n}") for n in ("frontend", "backend")
        )
        self.networks += [front, back]
        shop = {"com.docker.compose.project": "shop"}
        self.run(
            "web",
            network=front.name,
            ports={"80/tcp": ("127.0.0.1", free_port())},
            labels=shop | {"com.docker.compose.service": "web"},
        )
        api = self.run(
            "api", network=front.name, labels=shop | {"com.docker.compose.service": "api"}
        )
        back.connect(api)
        self.run("api-sidecar", network_mode=f"container:{api.id}")
        self.run("db", network=back.name, labels=shop | {"com.docker.compose.service": "db"})
        self.run("monitor", network_mode="host")
        self.veth = f"dnx{self.prefix[5:]}lk"
        subprocess.run(
            ["ip", "link", "add", self.veth, "type", "veth", "peer", "name", self.veth + "p"],
            check=True,
        )
        subprocess.run(["ip", "link", "set", self.veth, "master", "docker0"], check=True)

    def cleanup(self) -> None:
        for c in reversed(self.containers):
            c.remove(force=True)
        for n in self.networks:
            n.remove()
        if self.veth:
            subprocess.run(["ip", "link", "del", self.veth], check=False)


def screenshot(url: str, out: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="dnx-chromium-") as profile:
        subprocess.run(
            [
                "chromium",
                *CHROMIUM_FLAGS,
                "--hide-scrollbars",
                f"--user-data-dir={profile}",
                f"--window-size={WINDOW}",
                f"--screenshot={out.resolve()}",
                url,
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )


def main(out: Path) -> int:
    lock = os.open(LOCK_PATH, os.O_CREAT | os.O_RDWR, 0o644)
    fcntl.flock(lock, fcntl.LOCK_SH)
    client = docker.from_env(timeout=30)
    scene = Scene(client)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    exporter = None
    try:
        scene.build()
        exporter = subprocess.Popen(
            [sys.executable, "-m", "exporter", f"--web.listen-address=127.0.0.1:{port}"]
            + ["--collector.orphans.grace=0s", "--log.level=warn"],
            cwd=ROOT,
        )
        wait_ready(url, exporter)
        requests.get(url + "/metrics", timeout=10).raise_for_status()  # reads the firewall once
        time.sleep(1.5)  # a second read of the counters gives the rates
        requests.get(url + "/topology.json", timeout=10).raise_for_status()
        time.sleep(1.5)
        # Other workloads on this host stay off the picture: the page's filter keeps ours.
        screenshot(f"{url}/topology#filter={scene.prefix}%20{scene.veth}", out)
        print(f"screenshot: {out}")
        return 0
    finally:
        if exporter is not None:
            exporter.terminate()
            exporter.wait(10)
        scene.cleanup()
        client.close()
        os.close(lock)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.stderr.write("usage: topology_screenshot.py OUT.png\n")
        sys.exit(2)
    sys.exit(main(Path(sys.argv[1])))
