"""Process exits of containers' main processes, from the kernel: one pidfd per
process, polled by one thread. A pidfd becomes readable the moment its process
exits, before dockerd has heard of it from containerd and reported ``die``;
the exporter then stops serving the container at once, whatever dockerd's pace.

Only usable where the exporter shares the host's PID namespace (the pids Docker
reports are its own): see ``usable``.
"""

from __future__ import annotations

import os
import select
import threading
from collections.abc import Callable

from exporter.sources import Wakeup


def usable(procfs_root: str) -> bool:
    """Whether Docker's pids name the exporter's own processes: pidfd_open exists and the
    procfs read is the exporter's own (not the host's mounted elsewhere)."""
    return hasattr(os, "pidfd_open") and os.path.realpath(procfs_root) == "/proc"


class ExitWatcher:
    """``run`` calls ``on_exit(container_id, pid)`` once for each watched process that exits."""

    def __init__(self, on_exit: Callable[[str, int], None]) -> None:
        self.on_exit = on_exit
        self._epoll = select.epoll()
        self._lock = threading.Lock()
        self._watched: dict[str, tuple[int, int]] = {}  # container id -> (pid, pidfd)
        self._by_fd: dict[int, tuple[str, int]] = {}
        self._wakeup = Wakeup()
        self._epoll.register(self._wakeup.fd, select.EPOLLIN)

    def sync(self, processes: dict[str, tuple[int, int]]) -> None:
        """Watch exactly these processes: container id -> (pid, inode of its network namespace)."""
        with self._lock:
            for container_id, (pid, _fd) in list(self._watched.items()):
                if processes.get(container_id, (0,))[0] != pid:
                    self._forget(container_id)
            for container_id, (pid, netns_inode) in processes.items():
                if container_id not in self._watched:
                    self._watch(container_id, pid, netns_inode)

    def _watch(self, container_id: str, pid: int, netns_inode: int) -> None:
        try:
            fd = os.pidfd_open(pid)
        except ProcessLookupError:  # gone already, between Docker's answer and now
            self.on_exit(container_id, pid)
            return
        except OSError:  # not allowed here: Docker's die event remains
            return
        try:
            same = os.stat(f"/proc/{pid}/ns/net").st_ino == netns_inode
        except OSError:
            same = False
        if not same:  # the pid names another process now (reused, or exited: die follows)
            os.close(fd)
            return
        self._watched[container_id] = (pid, fd)
        self._by_fd[fd] = (container_id, pid)
        self._epoll.register(fd, select.EPOLLIN)

    def _forget(self, container_id: str) -> None:
        _pid, fd = self._watched.pop(container_id)
        del self._by_fd[fd]
        self._epoll.unregister(fd)
        os.close(fd)

    def stop(self) -> None:
        self._wakeup.stop()

    def run(self) -> None:
        try:
            while not self._wakeup.stopping:
                for fd, _mask in self._epoll.poll():
                    self._exited(fd)
        finally:
            with self._lock:
                for container_id in list(self._watched):
                    self._forget(container_id)
            self._epoll.close()
            self._wakeup.close()

    def _exited(self, fd: int) -> None:
        with self._lock:
            found = self._by_fd.get(fd)
            if found is None:  # the wake pipe, or forgotten meanwhile
                return
            self._forget(found[0])
        self.on_exit(*found)
