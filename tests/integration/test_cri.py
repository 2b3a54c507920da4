"""Kubernetes pods on the real containerd (its CRI plugin, CNI bridge plugin, runc), made as the
kubelet makes them (tests/cri_helpers.py), beside the real dockerd: the exact map, the pod
metrics, hostNetwork, stop, orphans, a containerd restart, and the `veths` command. Pods'
lifecycle is followed by containerd's events service (auto, on containerd) and, as on a runtime
that serves no event stream (CRI-O without one), by polling the CRI (--cri.events=poll)."""

from __future__ import annotations

import concurrent.futures
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid

import pytest

from cri_helpers import CRI_SOCKET, CriPods, Pod, cri_ready, restart_containerd
from exporter.sources.runtimes import cri_api
from helpers import ROOT, ExporterProcess, Metrics, ip_json, sh, unique, wait_for

CRI = f"--cri.endpoint={CRI_SOCKET}"
GRACE = 3.0
POLL_INTERVAL = 0.2
POLL = ("--cri.events=poll", f"--cri.poll-interval={POLL_INTERVAL}s")
# How pods' lifecycle is followed: auto picks containerd's events service on containerd.
MODES = pytest.mark.parametrize("mode", [(), POLL], ids=["events", "poll"])


@pytest.fixture
def pods(host_lock):
    if not cri_ready():
        pytest.fail(f"no CRI at {CRI_SOCKET}; run `make test-env` (as root) first")
    p = CriPods()
    yield p
    p.cleanup()


def pod_veths(m: Metrics, pod: Pod) -> list[dict]:
    return [l for l, _ in m.select("dockernet_veth_info", namespace=pod.namespace, pod=pod.name)]


def kernel_view(pods: CriPods, pod: Pod) -> tuple[str, int]:
    """(host veth name, its ifindex) of the pod's eth0, from the kernel: eth0's peer index read in
    the namespace that PodSandboxStatus names, looked up among the host's links."""
    netns = os.path.basename(pods.status(pod).netns_path)
    (eth0,) = json.loads(sh("ip", "-n", netns, "-j", "link", "show", "eth0"))
    (host,) = [l for l in ip_json("link") if l["ifindex"] == eth0["link_index"]]
    return host["ifname"], host["ifindex"]


def mapped(e: ExporterProcess, *wanted: Pod) -> Metrics:
    """The metrics once every pod's veth is mapped and its containers are listed."""

    def complete(m: Metrics, pod: Pod) -> bool:
        members = m.select("dockernet_pod_container_info", namespace=pod.namespace, pod=pod.name)
        return bool(pod_veths(m, pod)) and len(members) == len(pod.containers)

    def check() -> Metrics | None:
        m = e.metrics()
        return m if all(complete(m, p) for p in wanted) else None

    return wait_for(check, what="the pods mapped")


def veths_command(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "exporter", "veths", *args, CRI],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def pod_addresses(m: Metrics, pod: Pod) -> set[tuple[str, str, str]]:
    got = m.select("dockernet_pod_address_info", namespace=pod.namespace, pod=pod.name)
    assert all(l["network"] == "dockernet-pods" for l, _ in got)
    return {(l["interface"], l["address"], l["prefix_length"]) for l, _ in got}


def kernel_addresses(netns_path: str) -> set[tuple[str, str, str]]:
    """eth0's addresses (link-local included), as `ip -n` reads them in the pod's namespace."""
    (eth0,) = json.loads(sh("ip", "-n", os.path.basename(netns_path), "-j", "addr", "show", "eth0"))
    return {("eth0", a["local"], str(a["prefixlen"])) for a in eth0["addr_info"]}


def containerd_events(e: ExporterProcess) -> dict[str, float]:
    return {
        l["action"]: v for l, v in e.metrics().select("dockernet_events_total", source="containerd")
    }


def counted_since(e: ExporterProcess, before: dict[str, float]) -> dict[str, float]:
    """containerd's event counts, once an event (or a poll) has been counted since `before`."""
    return wait_for(
        lambda: (now := containerd_events(e)) != before and now, what="the change counted"
    )


def resyncs(m: Metrics) -> dict[tuple[str, str], float]:
    return {(l["source"], l["reason"]): v for l, v in m.select("dockernet_resyncs_total")}


def after_first_read(e: ExporterProcess) -> tuple[dict[tuple[str, str], float], dict[str, float]]:
    """(full reads, containerd's event counts) once the first full read is done: a pod run after it
    can only be found by its event (or a poll) while the full reads stay as they are."""
    return resyncs(e.wait_first_read()), containerd_events(e)


def test_two_pods_map_exactly_with_their_info(exporter, pods):
    e = exporter(CRI)
    web = pods.run(namespace="shop", containers=("app", "side"))
    db = pods.run(namespace="shop")
    m = mapped(e, web, db)
    for pod in (web, db):
        (veth,) = pod_veths(m, pod)
        name, ifindex = kernel_view(pods, pod)
        assert (veth["veth"], veth["ifindex"]) == (name, str(ifindex))
        assert (veth["interface"], veth["container_id"], veth["container_name"]) == ("eth0", "", "")
        assert (veth["bridge"], veth["network"]) == ("dncni0", "dockernet-pods")
        status = pods.status(pod)
        (info,) = m.select("dockernet_pod_info", namespace=pod.namespace, pod=pod.name)
        assert info[0] == {
            "namespace": pod.namespace,
            "pod": pod.name,
            "uid": pod.uid,
            "sandbox_id": status.id,
            "runtime": "containerd",
            "host_network": "false",
        }
        members = m.select("dockernet_pod_container_info", namespace=pod.namespace, pod=pod.name)
        assert {l["container"]: l["container_id"] for l, _ in members} == pod.containers
        assert {l["image"] for l, _ in members} == {"dockernet.test/busybox:1"}
        for counter in ("receive_bytes", "transmit_packets", "receive_dropped"):
            name = f"dockernet_pod_{counter}_total"
            assert m.select(name, namespace=pod.namespace, pod=pod.name, interface="eth0")
        assert pod_addresses(m, pod) == kernel_addresses(status.netns_path)
        assert not m.select("dockernet_container_address_info", container_id=status.id)
    assert m.get_value("dockernet_runtime_up", runtime="containerd") == 1
    assert m.get_value("dockernet_runtime_up", runtime="docker") == 1
    # The CNI bridge serves the network the CNI cache names, in the pods' range.
    (bridge,) = m.select("dockernet_bridge_info", bridge="dncni0")
    assert (bridge[0]["network"], bridge[0]["subnet"]) == ("dockernet-pods", "198.18.128.0/20")
    # Pods are not containers: none of their series is a container's.
    assert not [l for l, _ in m.select("dockernet_container_info") if l["runtime"] != "docker"]


def test_host_network_pod_has_info_and_no_interface(exporter, pods):
    e = exporter(CRI)
    host = pods.run(host_network=True)
    normal = pods.run()
    m = mapped(e, normal)
    info = wait_for(
        lambda: e.metrics().select("dockernet_pod_info", pod=host.name), what="hostNetwork pod"
    )
    assert info[0][0]["host_network"] == "true"
    assert not pod_veths(m, host)
    assert not [n for n, rows in m.items() if n.startswith("dockernet_pod_receive") and
                any(l.get("pod") == host.name for l, _ in rows)]  # fmt: skip
    members = e.metrics().select("dockernet_pod_container_info", pod=host.name)
    assert [l["container"] for l, _ in members] == ["app"]


@MODES
def test_stopped_pod_drops_its_series(exporter, pods, mode):
    e = exporter(CRI, *mode)
    keep, stop = pods.run(), pods.run()
    mapped(e, keep, stop)
    pods.stop(stop)

    def gone():
        text = e.text()
        return f'pod="{stop.name}"' not in text and text

    text = wait_for(gone, what="the stopped pod's series gone")
    assert f'pod="{keep.name}"' in text


def test_docker_container_and_pod_side_by_side(exporter, pods, containers):
    e = exporter(CRI)
    c = containers.run()
    pod = pods.run()
    m = mapped(e, pod)
    m = wait_for(
        lambda: (m := e.metrics()) and m.select("dockernet_veth_info", container_id=c.id) and m,
        what="the container mapped",
    )
    (cv,) = m.select("dockernet_veth_info", container_id=c.id)
    assert (cv[0]["namespace"], cv[0]["pod"], cv[0]["container_name"]) == ("", "", c.name)
    (info,) = m.select("dockernet_container_info", container_id=c.id)
    assert info[0]["runtime"] == "docker"
    (pv,) = pod_veths(m, pod)
    assert pv["container_id"] == "" and pv["veth"] != cv[0]["veth"]
    assert m.select("dockernet_container_receive_bytes_total", container_id=c.id)
    assert not m.select("dockernet_container_receive_bytes_total", container_id=pods.status(pod).id)


def flagged(m: Metrics) -> dict:
    return {l["veth"]: l["reason"] for l, _ in m.select("dockernet_veth_orphaned")}


def test_leaked_cni_namespace_flagged_live_and_dead_pause_pods_not(exporter, pods, hand):
    e = exporter(CRI, f"--collector.orphans.grace={GRACE}s")
    live, paused = pods.run(), pods.run()
    m = mapped(e, live, paused)
    (paused_veth,) = [v["veth"] for v in pod_veths(m, paused)]
    (live_veth,) = [v["veth"] for v in pod_veths(m, live)]
    os.kill(pods.status(paused).pid, signal.SIGKILL)  # the sandbox is NOTREADY, its veth stays
    wait_for(lambda: not pods.status(paused).ready, what="the sandbox not ready")
    netns = f"cni-{uuid.uuid4()}"  # what containerd leaks: a cni-* namespace with its veth
    hand.named_netns(netns)
    leaked = hand.pair(unique("vl"), "eth0", netns=netns, master="dncni0")
    m = wait_for(
        lambda: (m := e.metrics()) and leaked in flagged(m) and m,
        timeout=GRACE + 30,
        what="the leaked cni namespace's veth flagged",
    )
    assert flagged(m)[leaked] == "netns_without_container"
    assert live_veth not in flagged(m) and paused_veth not in flagged(m)
    assert not m.select("dockernet_pod_info", pod=paused.name)  # not ready: no pod_info
    assert m.select("dockernet_pod_info", pod=live.name)


def test_containerd_restarted_runtime_down_then_up_and_new_pod_found(
    exporter, pods, host_exclusive
):
    e = exporter(CRI)
    before = pods.run()
    mapped(e, before)
    subprocess.run(["bash", str(ROOT / "scripts/cri-env.sh"), "stop"], check=True)
    try:
        wait_for(
            lambda: e.metrics().get_value("dockernet_runtime_up", runtime="containerd") == 0,
            timeout=15,
            what="containerd down",
        )
        m = e.metrics()
        assert m.get_value("dockernet_runtime_up", runtime="docker") == 1
    finally:
        restart_containerd()
    after = pods.run()
    wait_for(
        lambda: e.metrics().get_value("dockernet_runtime_up", runtime="containerd") == 1,
        timeout=40,
        what="containerd up again",
    )
    m = mapped(e, before, after)
    assert len(pod_veths(m, after)) == 1
    # The new pod may come from an event while the reconnect's full read still runs.
    wait_for(
        lambda: resyncs(e.metrics())[("containerd", "reconnect")] >= 1, what="the reconnect's read"
    )


def test_a_pod_whose_status_the_runtime_refuses_leaves_the_runtime_up_and_the_rest_mapped(
    exporter, pods, tmp_path
):
    """A stopped sandbox whose namespace pin containerd could not remove, and which now shows a
    plain file (a later bind of /run/netns onto itself hides it so), makes PodSandboxStatus answer
    UNKNOWN for ever. That pod cannot be mapped; every other one still is, at start and later,
    containerd stays up, and the commands work."""
    stuck = pods.run(containers=())
    pin = pods.status(stuck).netns_path
    plain = tmp_path / "plain"
    plain.touch()
    subprocess.run(["mount", "--bind", pin, pin], check=True)  # mounted twice: the stop fails
    try:
        with pytest.raises(cri_api.CallFailed):
            pods.stop(stuck)
        subprocess.run(["mount", "--bind", str(plain), pin], check=True)
        with pytest.raises(cri_api.Refused):
            pods.status(stuck)
        live = pods.run()
        e = exporter(CRI)
        m = mapped(e, live)
        assert m.get_value("dockernet_runtime_up", runtime="containerd") == 1
        assert not m.select("dockernet_pod_info", pod=stuck.name)
        later = pods.run()
        mapped(e, live, later)
        assert e.log().count(f"cri_sandbox_unreadable sandbox_id={stuck.id}") == 1, e.log()
        out = veths_command("-o", "json")
        assert out.returncode == 0, out.stderr
        assert {live.name, later.name} <= {r["pod"] for r in json.loads(out.stdout)}
    finally:
        for _ in range(2):
            subprocess.run(["umount", pin], check=False)


def test_missing_cri_socket_is_down_and_the_rest_works(exporter, containers):
    e = exporter("--cri.endpoint=/run/dockernet-cri/absent.sock")
    c = containers.run()
    m = wait_for(
        lambda: (m := e.metrics()) and m.select("dockernet_veth_info", container_id=c.id) and m,
        what="the container mapped",
    )
    assert m.get_value("dockernet_runtime_up", runtime="containerd") == 0
    assert m.get_value("dockernet_runtime_up", runtime="docker") == 1


def test_node_without_docker_has_no_docker_series(exporter, pods):
    """--docker.host='' (the chart on a containerd node): nothing says Docker is down."""
    e = exporter(CRI, "--docker.host=")
    pod = pods.run(namespace="shop")
    m = mapped(e, pod)
    assert m.get_value("dockernet_docker_up") is None
    assert {l["runtime"]: v for l, v in m.select("dockernet_runtime_up")} == {"containerd": 1}


def test_veths_command_shows_pods(pods):
    pod = pods.run(namespace="shop")
    out = veths_command("-o", "json")
    assert out.returncode == 0, out.stderr
    (row,) = [r for r in json.loads(out.stdout) if r["pod"] == pod.name]
    assert row["namespace"] == "shop" and row["interface"] == "eth0"
    assert row["sandbox_id"] == pods.status(pod).id
    assert row["veth"] == kernel_view(pods, pod)[0]
    table = veths_command().stdout
    assert "NAMESPACE" in table.splitlines()[0] and pod.name in table


@MODES
def test_started_pod_is_seen_through_its_event_without_a_resync(exporter, pods, mode):
    """However long the lookup takes on a busy machine, the pod comes from its event (or a poll),
    not from a full read: `make bench` measures how soon (p99 of RunPodSandbox to its series)."""
    e = exporter(CRI, *mode, "--resync.interval=1h")
    reads, before = after_first_read(e)
    pod = pods.run(containers=())
    m = mapped(e, pod)
    counted_since(e, before)
    assert resyncs(m) == reads


def events_mode(m: Metrics) -> dict[str, str]:
    return {l["runtime"]: l["mode"] for l, _ in m.select("dockernet_runtime_events_info")}


def cri_events_logged(e: ExporterProcess) -> list[str]:
    return [line for line in e.log().splitlines() if "event=cri_events" in line]


def test_auto_on_containerd_follows_its_events_service(exporter, pods):
    e = exporter(CRI)
    pod = pods.run()
    m = mapped(e, pod)
    assert events_mode(m) == {"containerd": "containerd"}
    (line,) = cri_events_logged(e)
    assert "mode=containerd" in line and "asked=auto" in line and "level=info" in line
    assert "unserved" not in line
    later = pods.run()
    mapped(e, later)
    # At least the later pod's sandbox and container; the second may be read after the pod shows.
    events = wait_for(
        lambda: (events := containerd_events(e))["/tasks/start"] >= 2 and events,
        what="the later pod's two task starts",
    )
    assert events["poll_changed"] == events["CONTAINER_STARTED_EVENT"] == 0


def test_poll_mode_follows_pods_without_an_event_stream(exporter, pods):
    """--cri.events=poll: a pod run, its second container started and the pod stopped are each
    seen, on /metrics and by a poll, however many polls each takes (two changes may fall into one);
    no full read but the first; only the poll's events are counted."""
    e = exporter(CRI, *POLL, "--resync.interval=1h")
    reads, before = after_first_read(e)
    pod = pods.run(containers=())
    m = mapped(e, pod)
    assert events_mode(m) == {"containerd": "poll"}
    (line,) = cri_events_logged(e)
    assert "mode=poll" in line and "interval=0.2s" in line
    counted_since(e, before)
    before = containerd_events(e)
    pods.start_container(pod, "late")
    mapped(e, pod)
    counted_since(e, before)
    before = containerd_events(e)
    pods.stop(pod)
    wait_for(lambda: f'pod="{pod.name}"' not in e.text(), what="the stopped pod's series gone")
    # The series go with the pause process's exit (the kernel's news); the poll sees the stop too.
    assert set(counted_since(e, before)) == {"poll_changed", "poll_gone"}
    m = e.metrics()
    assert resyncs(m) == reads
    assert m.get_value("dockernet_runtime_up", runtime="containerd") == 1


def test_cri_stream_asked_for_but_not_served_falls_back_to_poll(exporter, pods):
    """containerd 1.6 answers GetContainerEvents UNIMPLEMENTED: --cri.events=cri says so once and
    polls, and the runtime stays up."""
    e = exporter(CRI, "--cri.events=cri", f"--cri.poll-interval={POLL_INTERVAL}s")
    pod = pods.run()
    m = mapped(e, pod)
    assert events_mode(m) == {"containerd": "poll"}
    (line,) = cri_events_logged(e)
    assert "level=warning" in line and "asked=cri" in line and "mode=poll" in line
    assert "unserved=cri:UNIMPLEMENTED" in line
    time.sleep(1.0)  # no flapping: the runtime stays up, the warning is not repeated
    assert e.metrics().get_value("dockernet_runtime_up", runtime="containerd") == 1
    assert len(cri_events_logged(e)) == 1 and "containerd_unreachable" not in e.log()


CHURNED = 50
WORKERS = 4
ORPHAN_GRACE = 5.0  # above the time a pod's veth waits for its sandbox on a loaded 2-core machine
OUTLIVES_GRACE_EVERY = 10  # one pod in 10 lives beyond the grace: a live veth the rules must spare


class PodChurn:
    """Pods run and stopped from several workers, with when each was live (RunPodSandbox returned,
    StopPodSandbox not called yet), when each stop was asked for, and which ones a scrape showed.
    Each pod is stopped only once a scrape has shown it: that it shows, however long it takes, is
    what is asserted, not that a scrape happened to fall into its lifetime."""

    def __init__(self, pods: CriPods) -> None:
        self.pods = pods
        self.lock = threading.Lock()
        self.live: dict[str, float] = {}  # pod name -> since when
        self.stopping: dict[str, float] = {}  # pod name -> when StopPodSandbox was called
        self.stopped: set[str] = set()  # pods whose RemovePodSandbox returned
        self.veths: dict[str, str] = {}  # pod name -> host veth, from the kernel
        self.seen: set[str] = set()  # pods a scrape showed
        self.gone: set[str] = set()  # pods a scrape after their stop no longer showed

    def cycle(self, i: int) -> None:
        pod = self.pods.run(f"churn-{i}-{uuid.uuid4().hex[:4]}", containers=())
        veth = kernel_view(self.pods, pod)[0]
        with self.lock:
            self.live[pod.name] = time.monotonic()
            self.veths[pod.name] = veth
        wait_for(lambda: pod.name in self.seen, what=f"{pod.name} shown")
        outlives = i % OUTLIVES_GRACE_EVERY == 0
        time.sleep(ORPHAN_GRACE + 1 if outlives else random.uniform(0.2, 1.0))
        with self.lock:
            del self.live[pod.name]
            self.stopping[pod.name] = time.monotonic()
        self.pods.remove(pod)
        with self.lock:
            self.stopped.add(pod.name)

    def judge(self, m: Metrics, started: float) -> list[str]:
        """What is wrong in a scrape that started at `started` (the scrapes are made one after the
        other): a live pod's veth flagged, or a pod shown again after a scrape made since its stop
        was asked for showed it gone. Records the pods it showed and those it showed gone."""
        shown = {l["pod"] for l, _ in m.select("dockernet_pod_receive_bytes_total")}
        with self.lock:
            live_veths = {self.veths[p] for p, t in self.live.items() if t < started}
            back = shown & self.gone
            asked_to_stop = {p for p, t in self.stopping.items() if t < started}
            self.gone |= (asked_to_stop & self.seen) - shown
            self.seen |= shown
            made_for = {v: p for p, v in self.veths.items()}  # whose veth, by the kernel's answer
        shown_on = {l["pod"]: l["veth"] for l, _ in m.select("dockernet_veth_info") if "pod" in l}

        def whose(veth: str) -> str:
            return made_for.get(veth, veth)

        return [f"back {p} on {whose(shown_on.get(p, '?'))}" for p in back] + [
            f"orphan {v}" for v in set(flagged(m)) & live_veths
        ]


@pytest.mark.slow
@MODES
def test_pods_churned_while_scraping_none_missed_none_back_once_gone_no_orphan(
    exporter, pods, mode
):
    e = exporter(CRI, f"--collector.orphans.grace={ORPHAN_GRACE}s", *mode)
    churn = PodChurn(pods)
    problems: list[str] = []
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            started = time.monotonic()
            problems.extend(churn.judge(e.metrics(), started))
            time.sleep(0.05)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        with concurrent.futures.ThreadPoolExecutor(WORKERS) as pool:
            list(pool.map(churn.cycle, range(CHURNED)))
    finally:
        done.set()
        watcher.join(30)
    assert not problems, problems[:10]
    assert len(churn.stopped) == CHURNED and churn.gone  # the rule was put to the test
    # Every stopped pod goes; a stop may be read after StopPodSandbox returns.
    wait_for(
        lambda: not [p for p in churn.stopped if f'pod="{p}"' in (final := e.text())] and final,
        what="every stopped pod's series gone",
    )


def test_pod_network_health_is_the_pod_namespaces_own(exporter, pods):
    """With every family of the netstat collector, a pod's TCP counters carry namespace and pod,
    equal its own /proc/net/snmp read in the same moment (during the scrape: interval 0), and no
    container family names the sandbox."""
    e = exporter(CRI, "--collector.netstat.fields=all", "--collector.netstat.interval=0s")
    pod = pods.run(namespace="health")
    mapped(e, pod)
    netns = pods.status(pod).netns_path
    refused = (
        "import socket\n"
        "for _ in range(6):\n"
        "    s = socket.socket()\n"
        "    s.connect_ex(('127.0.0.1', 9))\n"
        "    s.close()\n"
    )
    subprocess.run(["nsenter", f"--net={netns}", sys.executable, "-c", refused], check=True)

    def own_tcp() -> dict[str, int]:
        text = sh("nsenter", f"--net={netns}", "cat", "/proc/net/snmp").splitlines()
        names, values = [l.split()[1:] for l in text if l.startswith("Tcp:")]
        return dict(zip(names, map(int, values), strict=True))

    for _ in range(10):  # a quiet moment: the namespace's counters the same before and after
        before, m = own_tcp(), e.metrics()
        if own_tcp() == before:
            break
    fails = m.get_value("dockernet_pod_tcp_attempt_fails_total", namespace="health", pod=pod.name)
    assert fails == before["AttemptFails"] >= 6
    assert (
        m.get_value("dockernet_pod_tcp_active_opens_total", namespace="health", pod=pod.name)
        == before["ActiveOpens"]
    )
    assert not m.select(
        "dockernet_container_tcp_attempt_fails_total", container_id=pods.status(pod).id
    )
