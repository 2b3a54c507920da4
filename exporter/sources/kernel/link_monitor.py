"""Link notifications of the host namespace (RTM_NEWLINK / RTM_DELLINK, and bridge ports' STP
state), on a socket of their own whose overflow (ENOBUFS) is reported for a re-dump."""

from __future__ import annotations

import errno
import select
import socket
from collections.abc import Callable

from exporter.core.model import Link
from exporter.sources import Wakeup
from exporter.sources.kernel.netlink import (
    NETLINK_ROUTE,
    RCVBUF_BYTES,
    RTM_DELLINK,
    RTM_NEWLINK,
    RTMGRP_LINK,
    SO_RCVBUFFORCE,
    iter_messages,
    parse_bridge_port,
    parse_link,
)


class LinkMonitor:
    """Link notifications (RTM_NEWLINK / RTM_DELLINK) of the host namespace.

    ``run`` calls ``on_link(action, link)`` for each one and ``on_overflow()``
    when the kernel dropped notifications (ENOBUFS): the socket is then rebuilt
    and the caller must re-dump.
    """

    def __init__(
        self,
        on_link: Callable[[str, Link], None],
        on_overflow: Callable[[], None],
        rcvbuf: int = RCVBUF_BYTES,
    ) -> None:
        self.on_link = on_link
        self.on_overflow = on_overflow
        self.rcvbuf = rcvbuf
        self._wakeup = Wakeup()
        self.sock = self._open()

    def _open(self) -> socket.socket:
        sock = socket.socket(
            socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_ROUTE
        )
        try:
            sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, self.rcvbuf)
        except OSError:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.rcvbuf)
        sock.bind((0, RTMGRP_LINK))
        return sock

    def stop(self) -> None:
        self._wakeup.stop()

    def run(self) -> None:
        # poll, not select: select cannot wait on a descriptor numbered 1024 or above.
        waiting = select.poll()
        waiting.register(self._wakeup.fd, select.POLLIN)
        try:
            while not self._wakeup.stopping:
                fd = self.sock.fileno()
                waiting.register(fd, select.POLLIN)
                if any(ready == fd for ready, _events in waiting.poll()):
                    self._receive()
                    if self.sock.fileno() != fd:  # rebuilt after an overflow
                        waiting.unregister(fd)
        finally:
            self.sock.close()
            self._wakeup.close()

    def _receive(self) -> None:
        try:
            data = self.sock.recv(1024 * 1024)
        except OSError as exc:
            if exc.errno != errno.ENOBUFS:
                raise
            self.sock.close()
            self.sock = self._open()
            self.on_overflow()
            return
        for kind, _flags, buf, start, end in iter_messages(data):
            if kind not in (RTM_NEWLINK, RTM_DELLINK):
                continue
            if buf[start] == socket.AF_BRIDGE:
                # A port's STP state; an AF_BRIDGE RTM_DELLINK means "left the bridge", not "deleted".
                if kind == RTM_NEWLINK:
                    self.on_link("port", parse_bridge_port(buf, start, end))
                continue
            self.on_link("add" if kind == RTM_NEWLINK else "delete", parse_link(buf, start, end))
