"""The daemon's garbage-collection policy, on an in-process daemon against the real kernel.

After each full resync the survivors are frozen (gc.freeze), so automatic collections no longer walk
the whole topology at a random moment; the next resync collects what the freeze kept."""
from __future__ import annotations

import gc
import weakref

import pytest

from exporter.daemon import Daemon
from exporter.sources.procfs import Procfs
from conftest import wait_for


class Node:
    pass


@pytest.fixture
def daemon():
    d = Daemon(None, Procfs())
    d.start()
    try:
        yield d
    finally:
        d.stop()
        gc.unfreeze()


def garbage_cycle() -> weakref.ref:
    a, b = Node(), Node()
    a.other, b.other = b, a
    return weakref.ref(a)


def test_start_resync_freezes_the_survivors(daemon):
    assert gc.get_freeze_count() > 0


def test_next_resync_collects_cycles_kept_by_the_freeze(daemon):
    cycle = garbage_cycle()
    gc.freeze()                 # as if the cycle had died among the survivors of the last resync
    gc.collect()
    assert cycle() is not None, "a frozen cycle should survive ordinary collections"
    daemon._queue.put(("resync", "all", "periodic"))
    wait_for(lambda: daemon.resyncs[("all", "periodic")] == 1, what="a periodic resync")
    assert cycle() is None
    assert gc.get_freeze_count() > 0
