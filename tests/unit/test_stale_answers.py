"""A runtime's answer is taken in its worker and applied when it arrives; a process exit comes from
the kernel on another thread. An answer taken before the exit and delivered after it was applied
names a process that no longer runs: it must not bring back what the exit took away. Forced here
in that order on the state loop itself (Daemon._apply), without root."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from test_follow import Scripted

from exporter import logs
from exporter.core.model import Workload
from exporter.sources.kernel.procfs import Procfs
from exporter.sources.runtimes.workloads import Effect, WorkloadEvent
from exporter.state.changes import ProcessExited, RuntimeEvent, RuntimeListed
from exporter.state.daemon import Daemon

PID = 4_194_304  # the kernel's largest pid_max, never a pid: no process, no namespace to read


@pytest.fixture
def daemon():
    logs.configure()  # its log lines to this test's stderr
    d = Daemon([Scripted()], Procfs(), first_read_wait=30.0)
    yield d
    d.stop()


def sandbox(tmp_path: Path) -> Workload:
    """A ready pod sandbox as the runtime answered before its pause process exited."""
    return Workload(
        id="a" * 64,
        name="shop_web",
        runtime="fake",
        pid=PID,
        netns_path=str(tmp_path / "cni-web"),
        network_mode="pod",
        pod_namespace="shop",
        pod_name="web",
    )


def container() -> Workload:
    return Workload(id="c" * 64, name="web", runtime="fake", pid=PID, network_mode="bridge")


def looked_up(c: Workload) -> RuntimeEvent:
    return RuntimeEvent("fake", WorkloadEvent("start", Effect.CHANGED, c.id), c)


def listed(*workloads: Workload) -> RuntimeListed:
    return RuntimeListed("fake", "periodic", (), workloads, followed=True)


@pytest.mark.parametrize("answer", [looked_up, listed], ids=["look-up", "listing"])
def test_an_answer_from_before_a_sandboxes_exit_leaves_it_not_ready(daemon, tmp_path, answer):
    pod = sandbox(tmp_path)
    daemon._apply([looked_up(pod)])
    assert daemon._state.containers[pod.id].ready
    daemon._apply([ProcessExited(pod.id, PID)])
    daemon._apply([answer(pod)])  # taken while the pause process still ran
    after = daemon._state.containers[pod.id]
    assert (after.ready, after.pid, after.members) == (False, 0, ())


@pytest.mark.parametrize("answer", [looked_up, listed], ids=["look-up", "listing"])
def test_an_answer_from_before_a_containers_exit_does_not_bring_it_back(daemon, answer):
    c = container()
    daemon._apply([looked_up(c)])
    daemon._apply([ProcessExited(c.id, PID)])
    assert c.id not in daemon._state.containers
    daemon._apply([answer(c)])
    assert c.id not in daemon._state.containers
    # Started again (its runtime's restart policy): another process, which runs.
    daemon._apply([answer(dataclasses.replace(c, pid=PID + 1))])
    assert daemon._state.containers[c.id].pid == PID + 1
