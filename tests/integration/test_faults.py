"""Faults and bad input: Docker absent, going away and coming back, dockerd
restarting, link storms, odd names, a failing source, bad flags, missing
privileges, SIGTERM."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

import pytest

from helpers import (
    EXPORTER,
    ROOT,
    DockerSocketProxy,
    Metrics,
    printed,
    sh,
    start_dockerd,
    stop_dockerd,
    unique,
    wait_for,
)

if TYPE_CHECKING:
    from docker.models.containers import Container

# Docker that stops answering is reported down "within about 10 s" (README): 10 s and a margin.
DOWN_WITHIN = 15


def mapped(m: Metrics, container: Container) -> bool:
    return bool(m.select("dockernet_veth_info", container_id=container.id))


def veth_of(container: Container) -> str:
    index = int(printed(container.exec_run("cat /sys/class/net/eth0/iflink")))
    return next(
        l.split(": ")[1].split("@")[0]
        for l in sh("ip", "-o", "link").splitlines()
        if l.startswith(f"{index}: ")
    )


@pytest.fixture
def proxy(tmp_path):
    p = DockerSocketProxy(str(tmp_path / "docker.sock"))
    yield p
    p.stop()


def test_docker_absent_at_start_then_appears(containers, exporter, proxy):
    c = containers.run()
    veth = veth_of(c)
    e = exporter(f"--docker.host=unix://{proxy.path}")
    m = e.metrics()
    assert m.get_value("dockernet_docker_up") == 0
    assert m.get_value("dockernet_veth_info", veth=veth, container_id="") == 1
    assert m.get_value("dockernet_scrape_collector_success", collector="containers") == 1
    proxy.start()
    m = wait_for(
        lambda: (m := e.metrics()) and mapped(m, c) and m, timeout=40, what="map filled via Docker"
    )
    assert m.get_value("dockernet_docker_up") == 1
    assert (
        m.get_value("dockernet_veth_info", veth=veth, container_id=c.id, container_name=c.name) == 1
    )
    assert e.log().count("docker_unreachable") == 1


def test_docker_going_away_and_back_leaves_no_stale_container(containers, exporter, proxy):
    proxy.start()
    stays, goes = containers.run(), containers.run()
    e = exporter(f"--docker.host=unix://{proxy.path}", "--resync.interval=1h")
    wait_for(
        lambda: (m := e.metrics()) and mapped(m, stays) and mapped(m, goes), what="both mapped"
    )
    proxy.stop()
    wait_for(
        lambda: e.metrics().get_value("dockernet_docker_up") == 0,
        timeout=DOWN_WITHIN,
        what="docker_up 0",
    )
    goes.remove(force=True)
    comes = containers.run()
    proxy.start()
    m = wait_for(
        lambda: (
            (m := e.metrics())
            and m.get_value("dockernet_docker_up") == 1
            and mapped(m, comes)
            and m.get_value("dockernet_resyncs_total", source="docker", reason="reconnect") >= 1
            and m
        ),
        timeout=40,
        what="reconnect and its resync",
    )
    assert mapped(m, stays)
    assert not m.select("dockernet_container_info", container_id=goes.id)
    assert not m.select("dockernet_veth_info", container_id=goes.id)


def test_a_container_whose_process_exits_goes_at_once_even_with_docker_silent(
    containers, exporter, proxy
):
    proxy.start()
    goes, stays = containers.run(), containers.run()
    e = exporter(f"--docker.host=unix://{proxy.path}", "--resync.interval=1h")
    wait_for(
        lambda: (m := e.metrics()) and mapped(m, goes) and mapped(m, stays), what="both mapped"
    )
    proxy.stop()  # no Docker event can tell the exporter anything from here on
    wait_for(
        lambda: e.metrics().get_value("dockernet_docker_up") == 0,
        timeout=DOWN_WITHIN,
        what="docker_up 0",
    )
    pid = goes.attrs["State"]["Pid"]
    sh("kill", "-KILL", str(pid))
    m = wait_for(
        lambda: (
            (m := e.metrics())
            and not m.select("dockernet_container_info", container_id=goes.id)
            and m
        ),
        what="the container gone on its process's exit",
    )
    assert not m.select("dockernet_container_receive_bytes_total", container_id=goes.id)
    assert mapped(m, stays) and m.select("dockernet_container_info", container_id=stays.id)
    assert m.get_value("dockernet_events_total", source="process", action="exit") == 1


def test_dockerd_restart(containers, exporter, host_exclusive):
    before = containers.run(stop_signal="SIGKILL")
    e = exporter("--resync.interval=1h")
    wait_for(lambda: mapped(e.metrics(), before), what="container mapped")
    stop_dockerd()
    wait_for(
        lambda: e.metrics().get_value("dockernet_docker_up") == 0,
        timeout=DOWN_WITHIN,
        what="docker_up 0",
    )
    start_dockerd()
    after = containers.run()
    m = wait_for(
        lambda: (
            (m := e.metrics())
            and m.get_value("dockernet_docker_up") == 1
            and mapped(m, after)
            and m.get_value("dockernet_resyncs_total", source="docker", reason="reconnect") >= 1
            and m
        ),
        timeout=40,
        what="new container and the reconnect's resync after the restart",
    )
    assert not m.select("dockernet_container_info", container_id=before.id)  # stopped with dockerd
    assert not m.select("dockernet_veth_info", container_id=before.id)


def rss_kib(pid: int) -> int:
    status = open(f"/proc/{pid}/status").read()
    return int(status.split("VmRSS:")[1].split()[0])


def storm(prefix: str, pairs: int) -> None:
    """`pairs` veths created in the host within a fraction of a second, their peers in a namespace of
    our own (deleting that namespace later removes them all in one batch)."""
    sh("ip", "netns", "add", prefix)
    lines = [
        f"link add {prefix}a{i} type veth peer name {prefix}b{i} netns {prefix}"
        for i in range(pairs)
    ]
    subprocess.run(["ip", "-batch", "-"], input="\n".join(lines) + "\n", text=True, check=True)


def storm_veths(m: Metrics, prefix: str) -> set[str]:
    return {l["veth"] for l, _ in m.get("dockernet_veth_info", ()) if l["veth"].startswith(prefix)}


@contextlib.contextmanager
def frozen(proc: subprocess.Popen[bytes]) -> Iterator[None]:
    """The exporter stopped (SIGSTOP) meanwhile: it reads nothing, so its link notification socket
    fills as the kernel's buffer allows and then overflows; continued afterwards."""
    proc.send_signal(signal.SIGSTOP)
    try:
        yield
    finally:
        proc.send_signal(signal.SIGCONT)


def netlink_counts(m: Metrics) -> tuple[float, float, float]:
    """(link adds read, link deletes read, overflows) of the netlink source."""
    events = {l["action"]: v for l, v in m.select("dockernet_events_total", source="netlink")}
    overflows = m.get_value("dockernet_resyncs_total", source="netlink", reason="overflow")
    assert overflows is not None, "no overflow resync counter"
    return events["add"], events["delete"], overflows


STORM = 1000


@pytest.mark.parametrize("rcvbuf", ["8MiB", "16KiB"])
def test_link_storm(exporter, rcvbuf):
    """1,000 veth pairs at once, then all deleted at once: the map is exact after each, whether the
    notifications were all read or some were lost and the loss repaired by a resync. With 16 KiB the
    loss is made certain: the exporter is stopped while the storm is made."""
    prefix = unique("s")[:7]  # veth names stay within 15 characters
    e = exporter(f"--netlink.receive-buffer={rcvbuf}", "--resync.interval=1h")
    assert netlink_counts(e.metrics())[2] == 0
    rss_before = rss_kib(e.proc.pid)
    made = {f"{prefix}a{i}" for i in range(STORM)}
    try:
        with frozen(e.proc) if rcvbuf == "16KiB" else contextlib.nullcontext():
            storm(prefix, STORM)
        wait_for(lambda: storm_veths(e.metrics(), prefix) == made, timeout=60, what="1,000 veths")
    finally:
        sh("ip", "netns", "del", prefix, check=False)
    wait_for(lambda: not storm_veths(e.metrics(), prefix), timeout=60, what="storm veths gone")
    assert e.proc.poll() is None
    adds, deletes, overflows = netlink_counts(e.metrics())
    if rcvbuf == "16KiB":
        assert overflows >= 1, "the notifications lost while stopped were not noticed"
    else:  # every notification read, or the loss noticed and repaired by a resync
        assert (adds >= STORM and deletes >= STORM) or overflows >= 1, (adds, deletes, overflows)
    assert rss_kib(e.proc.pid) - rss_before < 20 * 1024, "memory did not come back after the storm"
    assert "Traceback" not in e.log()


def test_odd_names_and_label_values_stay_valid(containers, exporter, tmp_path):
    project = 'we"ird\\proj\nline two ünïcødé ✓'
    c = containers.run(
        name=unique("dnx.odd_name-x"),
        labels={"com.docker.compose.project": project, "com.docker.compose.service": 's\\"q'},
    )
    e = exporter()
    m = wait_for(lambda: (m := e.metrics()) and mapped(m, c) and m, what="odd container mapped")
    ((labels, _),) = m.select("dockernet_container_info", container_id=c.id)
    assert labels["compose_project"] == project and labels["compose_service"] == 's\\"q'
    assert labels["container_name"] == c.name
    out = tmp_path / "metrics.txt"
    out.write_text(e.text())
    lint = subprocess.run(
        ["promtool", "check", "metrics"], stdin=out.open(), capture_output=True, text=True
    )
    assert lint.returncode == 0, lint.stdout + lint.stderr


def run_cli(*args: str, prefix: Sequence[str] = ()) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*prefix, *EXPORTER, *args], cwd=ROOT, capture_output=True, text=True, timeout=30
    )


def test_bad_flag_is_one_line_and_exit_2():
    r = run_cli("--web.listen-adress=:1")
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and "unrecognized arguments: --web.listen-adress" in r.stderr
    r = run_cli("--resync.interval=soon")
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "invalid duration 'soon'" in r.stderr


def test_a_procfs_path_that_is_no_procfs_is_one_line_and_exit_2(tmp_path):
    for args in (("--path.procfs", str(tmp_path)), ("veths", "--path.procfs", str(tmp_path))):
        r = run_cli(*args)
        assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
        assert f"'{tmp_path}' is not a procfs mount" in r.stderr


def test_not_root_says_which_privilege_is_missing():
    r = run_cli(prefix=("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"))
    assert r.returncode == 1
    assert r.stderr.count("\n") == 1 and "CAP_NET_ADMIN, CAP_SYS_PTRACE" in r.stderr
    r = run_cli(prefix=("setpriv", "--bounding-set=-sys_ptrace", "--inh-caps=-sys_ptrace"))
    assert r.returncode == 1 and r.stderr.count("\n") == 1
    assert "CAP_SYS_PTRACE" in r.stderr and "CAP_NET_ADMIN" not in r.stderr


def test_sigterm_exits_cleanly_within_2s(exporter, containers):
    containers.run()
    e = exporter()
    e.metrics()
    started = time.monotonic()
    code = e.stop(timeout=5)
    assert time.monotonic() - started < 2.0
    assert code == 0
    log = e.log()
    for bad in ("Traceback", "Task was destroyed", "Exception ignored", "ResourceWarning", "Error"):
        assert bad not in log, log
