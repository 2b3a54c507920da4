"""Reads from procfs: interface counters and namespace identities."""

from __future__ import annotations

import os
from operator import itemgetter
from typing import cast

from exporter.core.model import Counters
from exporter.core.names import interface_name

# /proc/net/dev columns after the name are 8 receive then 8 transmit fields; a counter row (model.Counters)
# takes bytes, packets, errs and drop of each.
_COUNTER_COLUMNS = itemgetter(0, 1, 2, 3, 8, 9, 10, 11)


class Procfs:
    def __init__(self, root: str = "/proc") -> None:
        self.root = root.rstrip("/") or "/proc"

    def net_dev(self, pid: int | None = None) -> dict[str, Counters]:
        """Counters of every interface in the host namespace, or in pid's."""
        path = f"{self.root}/{pid}/net/dev" if pid else f"{self.root}/net/dev"
        with open(path, "rb") as f:
            return parse_net_dev(f.read())

    def netns_path(self, pid: int) -> str:
        return f"{self.root}/{pid}/ns/net"

    def netns_inode(self, pid: int) -> int | None:
        try:
            return os.stat(self.netns_path(pid)).st_ino
        except OSError:
            return None

    def host_netns_inode(self) -> int | None:
        """The exporter's own namespace: the one whose links it dumps."""
        try:
            return os.stat("/proc/self/ns/net").st_ino
        except OSError:
            return None


def parse_net_dev(data: bytes) -> dict[str, Counters]:
    """Counter rows by interface name (as names.interface_name renders it)."""
    counters = {}
    for line in data.split(b"\n")[2:]:
        name, sep, rest = line.partition(b":")
        if sep:
            row = tuple(map(int, _COUNTER_COLUMNS(rest.split())))
            counters[interface_name(name.strip())] = cast(Counters, row)
    return counters
