"""Full resyncs, on an in-process daemon against the real kernel and dockerd.

A resync reads the kernel's side in its own thread (and each runtime in its own worker) while the
state loop goes on following events, and applies those events again on its result. After each one
the survivors are frozen (gc.freeze), so automatic collections no longer walk the whole topology at
a random moment; the next resync collects what the freeze kept."""

from __future__ import annotations

import gc
import threading
import weakref

import pytest

from exporter.sources.kernel.procfs import Procfs
from exporter.sources.runtimes.docker import DockerSource
from exporter.state.changes import ResyncWanted
from exporter.state.daemon import Daemon
from helpers import sh, unique, wait_for

GATE_HELD = 60  # seconds a closed gate holds a read at most: beyond every wait of the tests


class GatedProcfs(Procfs):
    """The real /proc, but the resync's thread, once it has dumped the links, waits while the gate
    is closed (it looks the known workloads' namespaces up)."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.gate.set()
        self.waiting = threading.Event()

    def netns_path(self, pid: int) -> str:
        if threading.current_thread().name == "resync" and not self.gate.is_set():
            self.waiting.set()
            self.gate.wait(30)
        return super().netns_path(pid)


class GatedDocker(DockerSource):
    """The real dockerd, but reading the container list waits while the gate is closed."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.gate.set()
        self.waiting = threading.Event()

    def workloads(self):
        if not self.gate.is_set():
            self.waiting.set()
            self.gate.wait(GATE_HELD)
        return super().workloads()


@pytest.fixture
def docker():
    d = GatedDocker()
    yield d
    d.gate.set()


@pytest.fixture
def procfs():
    p = GatedProcfs()
    yield p
    p.gate.set()


@pytest.fixture
def daemon(docker, procfs):
    d = Daemon([docker], procfs)
    d.start()
    assert d.started.wait(30), "the first full read did not finish"
    try:
        yield d
    finally:
        d.stop()
        gc.unfreeze()


def resync(daemon: Daemon, done: int) -> None:
    daemon._queue.put(ResyncWanted("all", "periodic"))
    wait_for(lambda: daemon.resyncs[("all", "periodic")] == done, what=f"periodic resync {done}")


def veth_names(daemon: Daemon) -> set:
    return {v.link.name for v in daemon.snapshot.veths}


def test_events_are_followed_during_a_resync_and_kept_after_it(daemon, procfs, containers):
    c = containers.run()  # a workload whose namespace the resync looks up after dumping the links
    wait_for(
        lambda: any(v.container.id == c.id for v in daemon.snapshot.containers),
        what="the container served",
    )
    name = unique("dnr")[:15]
    procfs.gate.clear()
    daemon._queue.put(ResyncWanted("all", "periodic"))
    assert procfs.waiting.wait(30), "the resync never looked a workload's namespace up"
    try:
        # The resync has dumped the links already and is stuck: this pair is not in its read.
        sh("ip", "link", "add", name, "type", "veth", "peer", "name", name[:-1] + "p")
        wait_for(lambda: name in veth_names(daemon), what="the new veth during the resync")
        assert daemon.resyncs[("all", "periodic")] == 0
        procfs.gate.set()
        wait_for(lambda: daemon.resyncs[("all", "periodic")] == 1, what="the resync's end")
        assert name in veth_names(daemon), "the resync's older read dropped a veth made during it"
    finally:
        sh("ip", "link", "del", name, check=False)
    wait_for(lambda: name not in veth_names(daemon), what="the veth gone")


def test_a_runtime_stuck_in_its_listing_delays_no_kernel_resync(daemon, docker):
    docker.gate.clear()
    daemon._queue.put(ResyncWanted("all", "periodic"))
    assert docker.waiting.wait(10), "the resync never asked Docker for its containers"
    wait_for(lambda: daemon.resyncs[("all", "periodic")] == 1, what="the kernel's resync")
    docker.gate.set()


def test_start_resync_freezes_the_survivors(daemon):
    assert gc.get_freeze_count() > 0


def garbage_cycle() -> weakref.ref:
    a, b = Node(), Node()
    a.other, b.other = b, a
    return weakref.ref(a)


class Node:
    other: Node


def test_next_resync_collects_cycles_kept_by_the_freeze(daemon):
    cycle = garbage_cycle()
    gc.freeze()  # as if the cycle had died among the survivors of the last resync
    gc.collect()
    assert cycle() is not None, "a frozen cycle should survive ordinary collections"
    resync(daemon, 1)
    assert cycle() is None
    assert gc.get_freeze_count() > 0
