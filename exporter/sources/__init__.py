"""The sources: each does the I/O of one kind and returns plain data (exporter.core.model)."""

from __future__ import annotations

import os


class Wakeup:
    """A pipe whose read end a watching thread polls beside its source, so that ``stop`` from
    another thread ends the wait at once."""

    def __init__(self) -> None:
        self.fd, self._write_fd = os.pipe()
        self.stopping = False

    def stop(self) -> None:
        self.stopping = True
        os.write(self._write_fd, b"x")

    def close(self) -> None:
        os.close(self.fd)
        os.close(self._write_fd)
