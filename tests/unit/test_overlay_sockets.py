"""The sockets kept inside overlay namespaces: one per namespace file and the namespace bound on it,
opened at first use, replaced when another namespace is bound there, closed when it is gone."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from exporter import logs
from exporter.sources.kernel.overlay import NamespaceSockets

S = TypeVar("S", bound="FakeSocket")


class FakeSocket:
    def __init__(self, path: str) -> None:
        self.path, self.closed = path, False
        self.asked: list = []

    def fdb_destinations(self, ifindex: int) -> set[str]:
        self.asked.append(ifindex)
        return {"198.18.250.2"}

    def link_stats(self, ifindexes: object) -> dict:
        self.asked.append("stats")
        return {12: (1, 1, 0, 0, 2, 2, 0, 0)}

    def close(self) -> None:
        self.closed = True


def two_namespaces(tmp_path: Path, make: Callable[[str], S]) -> tuple[NamespaceSockets, list[S]]:
    """Sockets opened by `make` (the list of those opened, in order) and two namespace files, a and
    b, in tmp_path."""
    opened: list[S] = []

    def opener(path: str) -> S:
        opened.append(make(path))
        return opened[-1]

    for name in ("1-aaaaaaaaaa", "1-bbbbbbbbbb"):
        (tmp_path / name).touch()
    return NamespaceSockets(opener), opened  # type: ignore[arg-type]


def test_one_socket_per_namespace_replaced_and_closed(tmp_path):
    sockets, opened = two_namespaces(tmp_path, FakeSocket)
    a, b = tmp_path / "1-aaaaaaaaaa", tmp_path / "1-bbbbbbbbbb"
    assert sockets.fdb_destinations(str(a), 12) == {"198.18.250.2"}
    sockets.fdb_destinations(str(a), 12)
    sockets.fdb_destinations(str(b), 7)
    assert sockets.link_stats(str(a), 3)[12][0] == 1  # the counters through the same socket
    assert [s.path for s in opened] == [str(a), str(b)]  # reused while the same namespace is there
    assert opened[0].asked == [12, 12, "stats"]
    other = tmp_path / "other"
    other.touch()
    os.replace(other, a)  # another inode on the same path: another namespace bound there
    sockets.fdb_destinations(str(a), 12)
    assert len(opened) == 3 and opened[0].closed and not opened[2].closed
    sockets.keep([str(a)])
    assert opened[1].closed and not opened[2].closed
    sockets.close()
    assert opened[2].closed


class HostNetlink:
    def __init__(self) -> None:
        self.asked: list[int] = []
        self.closed = False

    def counters_by_id(self, nsid: int) -> dict:
        self.asked.append(nsid)
        return {12: (5, 5, 0, 0, 6, 6, 0, 0)}

    def close(self) -> None:
        self.closed = True


def test_a_namespace_that_cannot_be_entered_is_read_by_its_id_and_its_peers_are_unknown(
    tmp_path, capsys
):
    """Without CAP_SYS_ADMIN, setns is refused: the counters come by the namespace's id through a
    host socket, the forwarding database is None (not read), and entering is not tried again."""
    logs.configure()  # its log line to this test's stderr
    tries: list[str] = []

    def refused(path: str) -> FakeSocket:
        tries.append(path)
        raise PermissionError(1, f"setns {path}: Operation not permitted")

    hosts: list[HostNetlink] = []

    def host() -> HostNetlink:
        hosts.append(HostNetlink())
        return hosts[-1]

    sockets = NamespaceSockets(refused, host=host)  # type: ignore[arg-type]
    a = tmp_path / "1-aaaaaaaaaa"
    a.touch()
    assert sockets.link_stats(str(a), 3)[12][0] == 5
    assert sockets.fdb_destinations(str(a), 12) is None
    assert sockets.link_stats(str(a), 3)[12][0] == 5
    assert tries == [str(a)] and len(hosts) == 1 and hosts[0].asked == [3, 3]  # one host socket
    assert capsys.readouterr().err.count("overlay_namespace_not_entered") == 1
    sockets.keep([])
    sockets.fdb_destinations(str(a), 12)
    assert tries == [str(a), str(a)]  # forgotten with its namespace: tried again if it is back
    sockets.close()
    assert hosts[0].closed


class TellingSocket(FakeSocket):
    """A namespace's socket whose change socket is one end of a pair: the test tells a change by
    writing to the other end."""

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.changes, self.teller = socket.socketpair()
        self.told: list[bool | None] = []

    def fdb_destinations(self, ifindex: int, told: bool | None = None) -> set[str]:
        self.told.append(told)
        return super().fdb_destinations(ifindex)

    def close(self) -> None:
        super().close()
        self.changes.close()
        self.teller.close()


def test_the_forwarding_databases_of_many_namespaces_in_one_poll_for_their_changes(tmp_path):
    """Each namespace's socket learns from one poll of them all whether a change was told there,
    and none is opened again for the inode the caller gives."""
    sockets, opened = two_namespaces(tmp_path, TellingSocket)
    a, b = tmp_path / "1-aaaaaaaaaa", tmp_path / "1-bbbbbbbbbb"
    devices = [(str(a), os.stat(a).st_ino, 12), (str(b), os.stat(b).st_ino, 7)]
    assert sockets.fdb_destinations_of(devices) == [{"198.18.250.2"}] * 2
    opened[1].teller.send(b"neighbour")
    sockets.fdb_destinations_of(devices)
    assert [s.told for s in opened] == [[False, False], [False, True]]
    assert [s.asked for s in opened] == [[12, 12], [7, 7]]
    sockets.close()
    assert all(s.closed for s in opened)
