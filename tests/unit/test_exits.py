"""The process-exit watcher on real child processes: a pidfd per process, one callback per exit."""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading

import pytest

from exporter.sources.kernel import exits

pytestmark = pytest.mark.skipif(
    not hasattr(os, "pidfd_open"), reason="needs os.pidfd_open (Linux 5.3, Python 3.9)"
)

# An exit is reported as soon as the watcher's thread runs; on a loaded machine that may take a while.
REPORTED_WITHIN = 10


@pytest.fixture
def watcher():
    seen: queue.Queue[tuple] = queue.Queue()
    w = exits.ExitWatcher(lambda cid, pid: seen.put((cid, pid)))
    thread = threading.Thread(target=w.run, daemon=True)
    thread.start()
    yield w, seen
    w.stop()
    thread.join(REPORTED_WITHIN)
    assert not thread.is_alive()


def child() -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])


def own_netns() -> int:
    return os.stat("/proc/self/ns/net").st_ino


def end(*processes: subprocess.Popen) -> None:
    for p in processes:
        p.kill()
        p.wait()


def test_each_exit_is_reported_once_with_its_container(watcher):
    w, seen = watcher
    a, b = child(), child()
    w.sync({"a": (a.pid, own_netns()), "b": (b.pid, own_netns())})
    end(b)
    assert seen.get(timeout=REPORTED_WITHIN) == ("b", b.pid)
    end(a)
    assert seen.get(timeout=REPORTED_WITHIN) == ("a", a.pid)
    assert seen.empty()


def test_a_process_no_longer_watched_or_not_in_that_namespace_reports_nothing(watcher):
    w, seen = watcher
    forgotten, elsewhere, kept = child(), child(), child()
    w.sync({"f": (forgotten.pid, own_netns()), "k": (kept.pid, own_netns())})
    w.sync(
        {"k": (kept.pid, own_netns()), "e": (elsewhere.pid, own_netns() + 1)}
    )  # pid names another process
    end(forgotten, elsewhere)
    end(kept)
    assert seen.get(timeout=REPORTED_WITHIN) == ("k", kept.pid)
    assert seen.empty()


def test_a_process_gone_before_it_is_watched_is_reported_at_once(watcher):
    w, seen = watcher
    gone = child()
    end(gone)  # reaped: its pid names no process
    w.sync({"g": (gone.pid, own_netns())})
    assert seen.get(timeout=REPORTED_WITHIN) == ("g", gone.pid)


def test_usable_only_with_the_exporters_own_procfs():
    assert exits.usable("/proc") == hasattr(os, "pidfd_open")
    assert not exits.usable("/host/proc")
