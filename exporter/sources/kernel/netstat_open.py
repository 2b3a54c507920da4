"""The files of each sampled namespace, kept open between the sampler's passes.

Opening ``/proc/<pid>/net/<file>`` costs the kernel a path walk and a seq_file set-up, and
closing it their teardown: about a third of the kernel's cost of the six files. A file kept
open is read again from offset 0 (a seq_file starts over there). An open file pins its
namespace, so a namespace's files are closed the moment its owner process exits (a pidfd of
that process turns readable: ``wait`` watches them) or the namespace is no longer wanted
(``keep``): no namespace outlives its workload because of them.
"""

from __future__ import annotations

import os
import resource
import select
import threading
from collections.abc import Hashable, Mapping, Sequence

# Descriptors of the open-file limit left to the rest of the exporter (sockets, scrapes, runtimes).
FD_RESERVED = 1024


def usable(root: str) -> bool:
    """Whether pids under ``root`` are the exporter's own (pidfd_open names them)."""
    return hasattr(os, "pidfd_open") and os.path.realpath(root) == "/proc"


def budget(per_namespace: int, limit: int | None = None) -> int:
    """How many namespaces may be held within the open-file limit, less FD_RESERVED."""
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0] if limit is None else limit
    if soft == resource.RLIM_INFINITY:
        soft = 1 << 20
    return max(0, (soft - FD_RESERVED) // per_namespace)


class OpenNamespaces:
    """Per namespace key, a pidfd of its owner and its files, {file name: descriptor}. Used by
    the sampling thread alone, but for ``wake``."""

    def __init__(self, root: str, names: Sequence[str], limit: int | None = None) -> None:
        self.root = root
        self.names = tuple(names)
        self.budget = budget(len(self.names) + 1, limit)
        self._held: dict[Hashable, tuple[int, dict[str, int]]] = {}
        self._by_pidfd: dict[int, Hashable] = {}
        self._poll = select.epoll()
        self._wakeup = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        self._poll.register(self._wakeup, select.EPOLLIN)
        self._closing = threading.Lock()  # a wake never writes to a descriptor closed since
        self._closed = False

    def __len__(self) -> int:
        return len(self._held)

    def files(self, key: Hashable, pid: int) -> Mapping[str, int] | None:
        """The namespace's open files, opened now if need be (a file the kernel does not have is
        left out); None when they cannot be held (gone, or no room): read by path."""
        held = self._held.get(key)
        if held is not None:
            return held[1]
        if len(self._held) >= self.budget:
            return None
        try:
            pidfd = os.pidfd_open(pid)
        except OSError:
            return None
        fds: dict[str, int] = {}
        try:
            for name in self.names:
                try:
                    fds[name] = os.open(f"{self.root}/{pid}/net/{name}", os.O_RDONLY | os.O_CLOEXEC)
                except FileNotFoundError:
                    continue
        except OSError:
            _close(pidfd, fds)
            return None
        if not fds or _exited(pidfd):  # gone before or while its files were opened
            _close(pidfd, fds)
            return None
        self._held[key] = (pidfd, fds)
        self._by_pidfd[pidfd] = key
        self._poll.register(pidfd, select.EPOLLIN)
        return fds

    def keep(self, wanted: Mapping[Hashable, int]) -> None:
        """Closes the files of every namespace not wanted any more."""
        for key in [k for k in self._held if k not in wanted]:
            self.close(key)

    def wait(self, timeout: float) -> bool:
        """Waits up to ``timeout`` seconds, closing the files of each namespace whose process
        exits meanwhile; True when woken (``wake``)."""
        woken = False
        for fd, _events in self._poll.poll(max(0.0, timeout)):
            if fd == self._wakeup:
                woken = True
            elif fd in self._by_pidfd:
                self.close(self._by_pidfd[fd])
        return woken

    def wake(self) -> None:
        """Ends a ``wait`` now, and every later one at once (any thread)."""
        with self._closing:
            if not self._closed:
                os.eventfd_write(self._wakeup, 1)

    def close(self, key: Hashable) -> None:
        pidfd, fds = self._held.pop(key)
        del self._by_pidfd[pidfd]
        self._poll.unregister(pidfd)
        _close(pidfd, fds)

    def close_all(self) -> None:
        for key in list(self._held):
            self.close(key)
        with self._closing:
            self._closed = True
            self._poll.close()
            os.close(self._wakeup)


def _exited(pidfd: int) -> bool:
    p = select.poll()
    p.register(pidfd, select.POLLIN)
    return bool(p.poll(0))


def _close(pidfd: int, fds: Mapping[str, int]) -> None:
    for fd in fds.values():
        os.close(fd)
    os.close(pidfd)
