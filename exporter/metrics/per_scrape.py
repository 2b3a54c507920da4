"""What collectors read fresh and share within one scrape.

A scrape (metrics/scrape.py) runs its collectors inside ``scrape()``; there, ``once(key, read)``
calls ``read()`` at its first use and gives the other collectors of the same scrape that value.
Counters are never kept across scrapes, which is why this is not ``Snapshot.memo``: a snapshot
serves every scrape until the topology changes. Scrapes that run at once each read their own.
Outside a scrape (a command, a test calling ``collect``), every call reads.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from typing import TypeVar, cast

from exporter.core.memo import MemoKey

T = TypeVar("T")


class _Reads:
    def __init__(self) -> None:
        self.values: dict[MemoKey, object] = {}
        self.lock = threading.Lock()  # a collector run beside the others shares the scrape's reads


_current: ContextVar[_Reads | None] = ContextVar("scrape reads", default=None)


@contextlib.contextmanager
def scrape() -> Iterator[None]:
    """The extent of one scrape: what ``once`` reads in it is shared until it ends."""
    token = _current.set(_Reads())
    try:
        yield
    finally:
        _current.reset(token)


def once(key: MemoKey[T], read: Callable[[], T]) -> T:
    """read(), called once per scrape for that key."""
    reads = _current.get()
    if reads is None:
        return read()
    with reads.lock:
        if key not in reads.values:
            reads.values[key] = read()
        return cast(T, reads.values[key])
