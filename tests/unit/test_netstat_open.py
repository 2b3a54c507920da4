"""Each sampled namespace's files kept open between passes: read again from their start, closed
the moment the owner process exits or the namespace is no longer wanted, held above the
descriptors select() can wait on, and never more than the open-file limit allows. On this
process's children, which need no privilege."""

from __future__ import annotations

import os
import subprocess
import time

import pytest

from exporter.sources.kernel import netstat, netstat_open
from exporter.sources.kernel.netstat_open import OpenNamespaces

NAMES = ["snmp", "sockstat"]


@pytest.fixture
def child():
    """A process of our own in a network namespace of its own (whose counters nothing moves),
    once it is there; it exits when the test asks (kill) or at the end."""
    procs = []

    def start() -> subprocess.Popen:
        p = subprocess.Popen(
            [
                "unshare",
                "--user",
                "--map-root-user",
                "--net",
                "sh",
                "-c",
                "echo in; exec sleep 600",
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        procs.append(p)
        assert p.stdout is not None and p.stdout.readline() == "in\n"
        return p

    yield start
    for p in procs:
        p.kill()
        p.wait()


def targets(pid: int) -> list[str]:
    """This process's descriptors open on the files of /proc/<pid>/net."""
    out = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except FileNotFoundError:
            continue
        if target.startswith(f"/proc/{pid}/net/"):
            # procfs drops the dentries of /proc/<pid>/net once used: the link reads "(deleted)"
            out.append(target.removesuffix(" (deleted)"))
    return sorted(out)


def test_files_are_opened_once_and_read_from_their_start(child):
    p = child()
    held = OpenNamespaces("/proc", NAMES)
    try:
        fds = held.files("a", p.pid)
        assert fds is not None and sorted(fds) == NAMES
        assert held.files("a", p.pid) is fds  # the same, not opened again
        reader = netstat.NamespaceReader("/proc", {"snmp": {"Tcp": ["ActiveOpens"]}})
        by_path = reader.read(p.pid)
        assert reader.read(p.pid, fds) == by_path == reader.read(p.pid, fds)
        assert targets(p.pid) == [f"/proc/{p.pid}/net/{n}" for n in NAMES]
    finally:
        held.close_all()
    assert targets(p.pid) == []


def test_the_files_close_when_the_process_exits_or_is_no_longer_wanted(child):
    exits, stays, dropped = child(), child(), child()
    held = OpenNamespaces("/proc", NAMES)
    try:
        for key, p in (("exits", exits), ("stays", stays), ("dropped", dropped)):
            assert held.files(key, p.pid) is not None
        exits.kill()
        exits.wait()  # reaped: its pidfd is readable
        assert held.wait(5.0) is False  # returns at the exit, not woken
        assert targets(exits.pid) == [] and len(held) == 2
        held.keep({"stays": stays.pid})
        assert targets(dropped.pid) == [] and targets(stays.pid) != []
        held.wake()
        assert held.wait(5.0) is True
    finally:
        held.close_all()


def test_a_gone_process_is_not_held_and_the_limit_caps_what_is(child):
    p, q = child(), child()
    p.kill()
    p.wait()
    held = OpenNamespaces("/proc", NAMES)
    try:
        assert held.files("gone", p.pid) is None and len(held) == 0
    finally:
        held.close_all()
    per_namespace = len(NAMES) + 1  # its files and a pidfd
    limit = netstat_open.FD_RESERVED + per_namespace  # room for one
    held = OpenNamespaces("/proc", NAMES, limit=limit)
    try:
        assert held.budget == 1
        assert held.files("q", q.pid) is not None
        assert held.files("again", q.pid) is None  # no room: read by path
    finally:
        held.close_all()
    assert netstat_open.budget(per_namespace, 1024) == 0


def test_the_sampler_holds_files_only_for_the_exporters_own_pids(tmp_path, child):
    p = child()
    wanted = {"snmp": {"Tcp": ["ActiveOpens"]}}
    on_proc = netstat.Sampler(netstat.NamespaceReader("/proc", wanted), lambda: {"p": p.pid}, 60)
    elsewhere = netstat.Sampler(netstat.NamespaceReader(str(tmp_path), wanted), dict, 60)
    reopened = netstat.Sampler(
        netstat.NamespaceReader("/proc", wanted), lambda: {"p": p.pid}, 60, keep_open=False
    )
    try:
        assert elsewhere.open is None and reopened.open is None and on_proc.open is not None
        on_proc.sample(full=True)
        reopened.sample(full=True)
        assert targets(p.pid) == [f"/proc/{p.pid}/net/snmp"]
        assert on_proc.latest.readings["p"] == reopened.latest.readings["p"]
    finally:
        on_proc.close()
    assert targets(p.pid) == [] and on_proc.open is None


def test_a_running_sampler_stops_from_its_wait_and_closes_what_it_holds(child):
    p = child()
    wanted = {"snmp": {"Tcp": ["ActiveOpens"]}}
    s = netstat.Sampler(netstat.NamespaceReader("/proc", wanted), lambda: {"p": p.pid}, 3600)
    s.start()
    try:
        held = []
        for _ in range(500):  # its first pass: at once, then it waits (an hour, checks aside)
            if targets(p.pid):
                held = targets(p.pid)
                break
            time.sleep(0.01)
        assert held == [f"/proc/{p.pid}/net/snmp"]
    finally:
        s.stop(timeout=5.0)
    assert s._thread is not None and not s._thread.is_alive()
    assert targets(p.pid) == [] and s.open is None
