"""The container image: built on the local debootstrap base from wheels built
here, run with README's `docker run` line against the local dockerd, with the
chart's mounts on a containerd node, and as the compose file's exporter service
(by docker-compose against dockerd, and against rootful Podman's socket with the
image in Podman's store), and its mapping compared with the exporter run from
the checkout. The privileges of that line are proven minimal by taking each one
away."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import uuid

import pytest
import requests
from deployspec import documented_run_line, documented_spec

from cri_helpers import CRI_SOCKET, CriPods, cri_ready
from helpers import ROOT, Metrics, free_port, ip_json, parse_metrics, sh, unique, wait_for
from podman_helpers import PODMAN_SOCKET, host_ifindex, podman_cli

BASE_IMAGE = "dockernet-base:bookworm"
COMPOSE_DIR = ROOT / "deploy" / "compose"
# Capability numbers (linux/capability.h) of those that the documented line adds.
CAP_BITS = {"NET_ADMIN": 12, "NET_RAW": 13, "SYS_PTRACE": 19}
# The chart's mounts on a containerd node (docs/kubernetes.md), and Podman's socket likewise.
RUNTIME_MOUNTS = (
    *("-v", f"{CRI_SOCKET}:/host/cri.sock:ro"),
    *("-v", "/var/run/netns:/var/run/netns:ro,rslave"),
    *("-v", "/var/lib/cni/results:/var/lib/cni/results:ro"),
    *("-v", f"{PODMAN_SOCKET}:/host/podman.sock:ro"),
)
RUNTIME_FLAGS = ("--cri.endpoint=/host/cri.sock", "--podman.host=unix:///host/podman.sock")
PIP = [sys.executable, "-m", "pip"]


@pytest.fixture(scope="module")
def image(docker_client):
    subprocess.run([str(ROOT / "scripts" / "base-image.sh"), BASE_IMAGE], check=True, timeout=300)
    wheels = ROOT / "build" / "wheels"
    shutil.rmtree(wheels, ignore_errors=True)
    sh(
        *PIP,
        "wheel",
        "--quiet",
        "--disable-pip-version-check",
        "-w",
        str(wheels),
        str(ROOT),
        timeout=180,
    )
    tag = f"{unique('dnx-image')}:test"
    dangling_before = set(dangling_images())
    sh(
        "docker",
        "build",
        "--quiet",
        "--build-arg",
        f"BASE_IMAGE={BASE_IMAGE}",
        "-t",
        tag,
        str(ROOT),
        timeout=300,
    )
    yield tag
    sh("docker", "rmi", "-f", tag, check=False)
    # The build's first stage is left untagged: remove what this build left, nothing older.
    left = set(dangling_images()) - dangling_before
    if left:
        sh("docker", "rmi", *sorted(left), check=False)


def dangling_images() -> list[str]:
    return sh("docker", "images", "--quiet", "--no-trunc", "--filter", "dangling=true").split()


def documented_flags(drop: tuple = (), without: tuple = ()) -> list:
    """The flags of README's line (between `docker run` and the image), minus the (flag, value)
    pairs in `drop` and the flags named in `without` (with their value when they take one)."""
    tokens, out, i = documented_run_line()[2:-1], [], 0
    while i < len(tokens):
        if tuple(tokens[i : i + 2]) in drop or tokens[i] in without:
            i += 1 if tokens[i] == "-d" else 2
            continue
        out.append(tokens[i])
        i += 1
    return out


def run_documented(image: str, *extra_args: str, drop: tuple = (), add: tuple = ()) -> tuple:
    """README's line, detached, with our name and image, minus `drop`, plus `add` before the image."""
    name = unique("dnx-exp")
    flags = documented_flags(drop, without=("--name",))
    cmd = ["docker", "run", "--name", name, *flags, *add, image, *extra_args]
    return name, subprocess.run(cmd, capture_output=True, text=True, timeout=60)


def logs(name: str) -> str:
    r = subprocess.run(["docker", "logs", name], capture_output=True, text=True, timeout=20)
    return r.stdout + r.stderr


def rows(metrics: Metrics, name: str, ids: set) -> list:
    found = [l for l, _ in metrics.get(name, ()) if l.get("container_id") in ids]
    return sorted(found, key=lambda l: json.dumps(l, sort_keys=True))


@pytest.fixture
def scene(containers, exporter):
    """Two containers, three interfaces (default bridge, a user network, a second interface),
    and the exporter run from the checkout: the reference every packaged run is compared with."""
    net = containers.network()
    a = containers.run()
    b = containers.run(network=net.name)
    containers.client.networks.get("bridge").connect(b)
    return {
        "ids": {a.id, b.id},
        "interfaces": sorted([(a.id, "eth0"), (b.id, "eth0"), (b.id, "eth1")]),
        "checkout": exporter(),
    }


def scrape(port: int) -> Metrics | None:
    """The packaged exporter's /metrics, or None while it does not answer."""
    try:
        text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    except requests.RequestException:
        return None
    return Metrics(parse_metrics(text))


def collector_success(metrics: Metrics) -> dict:
    return {l["collector"]: v for l, v in metrics.get("dockernet_scrape_collector_success", ())}


def assert_maps_like_the_checkout(port: int, scene: dict) -> None:
    ids, checkout = scene["ids"], scene["checkout"]

    def both_see_all():
        m1, m2 = scrape(port), checkout.metrics()
        n = len(scene["interfaces"])
        ok = m1 and len(rows(m1, "dockernet_veth_info", ids)) == n == len(
            rows(m2, "dockernet_veth_info", ids)
        )
        return ok and (m1, m2)

    packaged, reference = wait_for(both_see_all, what="every interface in both exporters")
    for metric in ("dockernet_veth_info", "dockernet_container_info"):
        assert rows(packaged, metric, ids) == rows(reference, metric, ids)
    counters = rows(packaged, "dockernet_container_receive_bytes_total", ids)
    assert sorted((l["container_id"], l["interface"]) for l in counters) == scene["interfaces"]
    assert packaged.get_value("dockernet_docker_up") == 1
    # Every collector that works from the checkout (run as full root) works packaged too: the
    # NAT collector finds iptables and nft in the image and reads the host's rules with these privileges.
    assert collector_success(packaged) == collector_success(reference)
    assert collector_success(reference).get("nat") == 1


def test_documented_line_maps_like_the_checkout(image, scene):
    port = free_port()
    name, r = run_documented(image, f"--web.listen-address=127.0.0.1:{port}")
    assert r.returncode == 0, r.stderr
    try:
        assert_maps_like_the_checkout(port, scene)
        inspect = json.loads(sh("docker", "inspect", name))[0]["HostConfig"]
        assert (
            inspect["ReadonlyRootfs"]
            and inspect["NetworkMode"] == "host"
            and inspect["PidMode"] == "host"
        )
        assert inspect["CapDrop"] == ["ALL"] and "no-new-privileges" in inspect["SecurityOpt"]
        assert "Traceback" not in logs(name)
    finally:
        sh("docker", "rm", "-f", name, check=False)


def test_host_proc_mount_instead_of_host_pid(image, scene):
    """The Swarm stack and the chart's hostPID=false: the host's /proc read-only, --path.procfs."""
    port = free_port()
    name, r = run_documented(
        image,
        "--path.procfs=/host/proc",
        f"--web.listen-address=127.0.0.1:{port}",
        drop=(("--pid", "host"),),
        add=("-v", "/proc:/host/proc:ro"),
    )
    assert r.returncode == 0, r.stderr
    try:
        assert_maps_like_the_checkout(port, scene)
        assert json.loads(sh("docker", "inspect", name))[0]["HostConfig"]["PidMode"] == ""
    finally:
        sh("docker", "rm", "-f", name, check=False)


@pytest.fixture
def runtimes_scene(exporter, hand, podman):
    """A CRI pod, a Podman container and a leaked cni-* namespace's veth, and the exporter run from
    the checkout following containerd and Podman: the reference for the packaged run."""
    if not cri_ready():
        pytest.fail(f"no CRI at {CRI_SOCKET}; run `make test-env` (as root) first")
    pods = CriPods()
    try:
        pod = pods.run(containers=())
        workload = podman.run()
        netns = f"cni-{uuid.uuid4()}"
        hand.named_netns(netns)
        leaked = hand.pair(unique("vl"), "eth0", netns=netns, master="dncni0")
        grace = "--collector.orphans.grace=2s"
        checkout = exporter(
            grace, f"--cri.endpoint={CRI_SOCKET}", f"--podman.host=unix://{PODMAN_SOCKET}"
        )
        yield {"pod": pod.name, "podman": workload.id, "leaked": leaked, "checkout": checkout}
    finally:
        pods.cleanup()


def runtime_rows(m: Metrics, scene: dict) -> dict:
    """What each exporter says of the pod, the Podman container and the leaked veth."""
    veths = [
        l
        for l, _ in m.get("dockernet_veth_info", ())
        if l.get("pod") == scene["pod"] or l.get("container_id") == scene["podman"]
    ]
    orphans = {l["veth"]: l["reason"] for l, _ in m.get("dockernet_veth_orphaned", ())}
    return {
        "veths": sorted(veths, key=lambda l: json.dumps(l, sort_keys=True)),
        "pods": [l for l, _ in m.get("dockernet_pod_info", ()) if l["pod"] == scene["pod"]],
        "leaked": orphans.get(scene["leaked"]),
        "up": sorted((l["runtime"], v) for l, v in m.get("dockernet_runtime_up", ())),
    }


def test_chart_mounts_map_pods_podman_and_orphans_like_the_checkout(image, runtimes_scene):
    """The image as the chart runs it on a containerd node (its own mount namespace, the CRI
    socket, /var/run/netns with propagation, CNI's cache) and with Podman's socket: the same pod,
    Podman container and orphan as the exporter run from the checkout."""
    port = free_port()
    name, r = run_documented(
        image,
        f"--web.listen-address=127.0.0.1:{port}",
        "--collector.orphans.grace=2s",
        *RUNTIME_FLAGS,
        add=RUNTIME_MOUNTS,
    )
    assert r.returncode == 0, r.stderr
    try:

        def both_complete():
            if (m := scrape(port)) is None:
                return None
            got = [runtime_rows(m, runtimes_scene)]
            got.append(runtime_rows(runtimes_scene["checkout"].metrics(), runtimes_scene))
            complete = all(len(g["veths"]) == 2 and g["pods"] and g["leaked"] for g in got)
            return complete and got

        packaged, reference = wait_for(both_complete, 30, what="the pod, Podman and the orphan")
        assert packaged == reference
        assert packaged["leaked"] == "netns_without_container"
        assert ("containerd", 1.0) in packaged["up"] and ("podman", 1.0) in packaged["up"]
        assert "Traceback" not in logs(name)
    finally:
        sh("docker", "rm", "-f", name, check=False)


def compose(project: str, *files: str) -> list:
    """docker-compose on the files of deploy/compose (the first overridden by the others)."""
    paths = [arg for name in files for arg in ("-f", str(COMPOSE_DIR / name))]
    return ["docker-compose", "-p", project, *paths]


def compose_up_exporter(cmd: list, env: dict) -> None:
    r = subprocess.run(
        [*cmd, "up", "-d", "--no-build", "exporter"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr


def test_compose_exporter_service_maps_like_the_checkout(image, scene):
    port = free_port()
    cmd = compose(unique("dnx-compose"), "docker-compose.yml")
    env = dict(os.environ, DOCKERNET_IMAGE=image, DOCKERNET_LISTEN=f"127.0.0.1:{port}")
    try:
        compose_up_exporter(cmd, env)
        assert_maps_like_the_checkout(port, scene)
    finally:
        sh(*cmd, "down", "-v", "--timeout", "2", env=env, check=False, timeout=60)


@pytest.fixture(scope="module")
def podman_image(image):
    """The image in Podman's store under this checkout's tag, loaded (`docker save | podman load`)
    only when it differs from the one tagged there by an earlier run, which it then replaces."""
    tag = "localhost/dockernet-test:exporter-" + hashlib.sha1(bytes(ROOT)).hexdigest()[:8]
    want = json.loads(sh("docker", "image", "inspect", image))[0]["Id"].removeprefix("sha256:")
    had = podman_cli("image", "inspect", "--format", "{{.Id}}", tag, check=False).strip()
    if had != want:
        save = subprocess.Popen(["docker", "save", image], stdout=subprocess.PIPE)
        assert save.stdout is not None
        try:
            podman_cli("load", stdin=save.stdout, timeout=180)
        finally:
            save.stdout.close()
            assert save.wait(60) == 0
        podman_cli("tag", want, tag)
        podman_cli("untag", want, f"localhost/{image}")
        if had:
            podman_cli("rmi", had, check=False)  # the earlier run's, unless still in use
    return tag


@pytest.fixture
def podman_scene(exporter, hand, podman):
    """Two Podman containers (the default and a user network), on the default network's bridge
    a leaked namespace's veth and a pair never moved, and the exporter run from the checkout
    following Podman alone, as the compose service on a Podman host does."""
    net = podman.network()
    a, b = podman.run(), podman.run(network=net.name)
    (link,) = [l for l in ip_json("link", "show") if l["ifindex"] == host_ifindex(a)]
    bridge = link["master"]
    base = unique("vp")
    leaked = hand.pair(base + "n", "eth0", netns=hand.anonymous_netns(base), master=bridge)
    pair = (hand.pair(base + "a", base + "b", master=bridge), base + "b")
    checkout = exporter(
        "--docker.host=", f"--podman.host=unix://{PODMAN_SOCKET}", "--cri.endpoint="
    )
    return {
        "ids": {a.id, b.id},
        "bridge": bridge,
        "leaked": leaked,
        "pair": pair,
        "checkout": checkout,
    }


def podman_rows(m: Metrics, ids: set, veths: set) -> dict:
    """What an exporter says of the containers `ids` and the veths `veths`."""
    return {
        "veths": sorted(
            (
                l
                for l, _ in m.get("dockernet_veth_info", ())
                if l["container_id"] in ids or l["veth"] in veths
            ),
            key=lambda l: json.dumps(l, sort_keys=True),
        ),
        "containers": rows(m, "dockernet_container_info", ids),
        "orphans": {
            l["veth"]: (l["reason"], l["bridge"])
            for l, _ in m.get("dockernet_veth_orphaned", ())
            if l["veth"] in veths
        },
        "up": sorted((l["runtime"], v) for l, v in m.get("dockernet_runtime_up", ())),
        "collectors": collector_success(m),
    }


def process_status(pid: int) -> dict:
    with open(f"/proc/{pid}/status") as f:
        return dict(line.rstrip("\n").split(":\t", 1) for line in f)


def test_compose_on_podman_maps_like_the_checkout(podman_image, podman_scene, podman):
    """The compose file with its Podman override, run by docker-compose against Podman's own
    socket (the image in Podman's store; Podman's mount namespace, the file's mounts and
    capabilities): the same containers, veths and orphans as the exporter run from the checkout.
    Both keep the default grace period before an orphan is flagged (30 s)."""
    port = free_port()
    project = unique("dnx-podcompose")
    cmd = compose(project, "docker-compose.yml", "docker-compose.podman.yml")
    env = dict(
        os.environ,
        DOCKER_HOST=f"unix://{PODMAN_SOCKET}",
        PODMAN_SOCKET=PODMAN_SOCKET,
        DOCKERNET_IMAGE=podman_image,
        DOCKERNET_LISTEN=f"127.0.0.1:{port}",
    )
    try:
        compose_up_exporter(cmd, env)
        label = f"com.docker.compose.project={project}"
        (service,) = podman.client.containers.list(filters={"label": label})
        leaked, (a, b), bridge = (podman_scene[k] for k in ("leaked", "pair", "bridge"))
        ids, veths = podman_scene["ids"] | {service.id}, {leaked, a, b}

        def both_complete():
            if (m := scrape(port)) is None:
                return None
            got = [
                podman_rows(m, ids, veths),
                podman_rows(podman_scene["checkout"].metrics(), ids, veths),
            ]
            complete = all(
                len(g["veths"]) == 5 and len(g["containers"]) == 3 and len(g["orphans"]) == 3
                for g in got
            )
            return complete and got

        packaged, reference = wait_for(both_complete, 60, what="the containers and the orphans")
        assert packaged == reference
        assert packaged["orphans"] == {
            leaked: ("netns_without_container", bridge),
            a: ("peer_in_host", bridge),
            b: ("peer_in_host", ""),
        }
        assert packaged["up"] == [("podman", 1.0)]
        mapped = {l["container_id"] for l in packaged["veths"]} - {""}
        assert mapped == podman_scene["ids"]
        (own,) = [c for c in packaged["containers"] if c["container_id"] == service.id]
        assert (own["runtime"], own["network_mode"], own["image"]) == (
            "podman",
            "host",
            podman_image,
        )

        # How Podman runs it: its own mount namespace, the host's network and PID namespaces,
        # exactly the documented capabilities, no new privileges, the socket read-only.
        service.reload()
        pid = service.attrs["State"]["Pid"]
        assert service.attrs["HostConfig"]["ReadonlyRootfs"] is True
        for ns in ("net", "pid", "mnt"):
            same = os.readlink(f"/proc/{pid}/ns/{ns}") == os.readlink(f"/proc/self/ns/{ns}")
            assert same == (ns != "mnt"), ns
        status = process_status(pid)
        caps = sum(1 << CAP_BITS[c] for c in documented_spec().cap_add)
        assert int(status["CapEff"], 16) == int(status["CapBnd"], 16) == caps
        assert status["NoNewPrivs"] == "1"
        with open(f"/proc/{pid}/mountinfo") as f:
            socket = ("/var/run/docker.sock", "/run/docker.sock")  # /var/run is /run in the image
            (mount,) = [line.split() for line in f if line.split()[4] in socket]
        assert mount[5].split(",")[0] == "ro", mount
        assert "Traceback" not in service.logs().decode()
    finally:
        sh(*cmd, "down", "-v", "--timeout", "2", env=env, check=False, timeout=60)


def foreground(
    image: str, *args: str, drop: tuple = (), add: tuple = ()
) -> subprocess.CompletedProcess:
    """README's privileges (minus `drop`, plus `add`), in the foreground and removed afterwards."""
    flags = documented_flags(drop, without=("--name", "--restart", "-d"))
    return subprocess.run(
        ["docker", "run", "--rm", *flags, *add, image, *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def shell_in_image(image: str, script: str, drop: tuple = ()) -> subprocess.CompletedProcess:
    return foreground(image, "-c", script, drop=drop, add=("--entrypoint", "sh"))


@pytest.mark.parametrize("cap", ["NET_ADMIN", "SYS_PTRACE"])
def test_exporter_refuses_without_each_capability(image, cap):
    r = foreground(image, drop=(("--cap-add", cap),))
    assert r.returncode == 1 and f"CAP_{cap}" in r.stderr and r.stderr.count("\n") == 1, r.stderr


def test_kernel_refuses_without_each_capability(image, containers):
    """Beyond the exporter's own check: what the kernel says when a capability is missing."""
    pid = containers.run().attrs["State"]["Pid"]
    open_ns = f"python3 -c 'import os; os.open(\"/proc/{pid}/ns/net\", os.O_RDONLY)'"
    assert shell_in_image(image, open_ns).returncode == 0
    assert (
        "Permission denied"
        in shell_in_image(image, open_ns, drop=(("--cap-add", "SYS_PTRACE"),)).stderr
    )
    legacy = "iptables-legacy-save -t nat >/dev/null"
    assert shell_in_image(image, legacy).returncode == 0
    assert (
        "Permission denied"
        in shell_in_image(image, legacy, drop=(("--cap-add", "NET_RAW"),)).stderr
    )
    nft = "nft list tables >/dev/null"
    assert shell_in_image(image, nft).returncode == 0
    assert shell_in_image(image, nft, drop=(("--cap-add", "NET_ADMIN"),)).returncode != 0


def test_non_root_user_gets_no_capabilities_from_cap_add(image):
    """Why the image runs as root: Docker gives a non-root uid no effective capabilities."""
    r = foreground(image, add=("--user", "65534:65534"))
    assert r.returncode == 1 and "CAP_NET_ADMIN, CAP_SYS_PTRACE" in r.stderr, r.stderr


def test_image_contents(image):
    config = json.loads(sh("docker", "image", "inspect", image))[0]["Config"]
    labels = config["Labels"]
    for key in ("title", "description", "version", "revision", "licenses"):
        assert labels.get(f"org.opencontainers.image.{key}"), key
    assert config["Entrypoint"] == ["dockernet-exporter"]
    tools = shell_in_image(
        image,
        "for t in iptables-nft-save iptables-legacy-save ip6tables-save nft "
        "dockernet-exporter; do command -v $t || echo MISSING $t; done; "
        "for t in gcc cc pip pip3; do command -v $t >/dev/null && echo BUILD $t; "
        "done; true",
    )
    assert "MISSING" not in tools.stdout, tools.stdout
    assert "BUILD pip" not in tools.stdout and "BUILD gcc" not in tools.stdout, tools.stdout
    spec = documented_spec()
    assert spec.cap_drop == {"ALL"} and spec.read_only and spec.no_new_privileges
