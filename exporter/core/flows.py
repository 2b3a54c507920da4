"""Flows between workloads: the host's conntrack entries attributed to workloads by address and
counted per (source, destination, protocol, server port). Pure: the caller passes the entries, the
attribution built from a snapshot, and the time.

A connection's source is its opener, the original tuple's source; its destination is whoever
answers, the reply tuple's source. Both tuples together read through NAT: a published port's
connection (DNAT) is answered by the container behind it, a masqueraded one (SNAT) was opened by
the container behind the host's address. The port is the server's, the reply tuple's source port:
the container's port for a published one; a port in the ephemeral range is left out.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from typing import NamedTuple

from exporter.core.flow_peers import (
    EXTERNAL_PEER,
    OTHER_PEER,
    WORKLOAD,
    Attribution,
    Peer,
)

NEW, UPDATE, DESTROY = "new", "update", "destroy"  # what a conntrack event says
IPS_SEEN_REPLY = 1 << 1  # status bits
IPS_ASSURED = 1 << 2
TCP_SYN_SENT = 1  # TCP_CONNTRACK_SYN_SENT: the opener's SYN, nothing back yet


class Entry(NamedTuple):
    """One connection as the kernel reports it. Addresses are packed (4 or 16 bytes); the
    original tuple is the opener's view (source = client), the reply tuple the answerer's
    (its source is the server after any DNAT). ``counters`` is (original packets, original
    bytes, reply packets, reply bytes), None without accounting."""

    id: int
    protocol: int
    status: int
    src: bytes
    dst: bytes
    sport: int
    dport: int
    reply_src: bytes
    reply_dst: bytes
    reply_sport: int
    reply_dport: int
    counters: tuple[int, int, int, int] | None = None
    tcp_state: int = 0  # TCP_CONNTRACK_*, 0 where the message has none

    @property
    def answered(self) -> bool:
        """Whether a reply packet was seen. A reset answering a SYN ends the entry without the
        SEEN_REPLY bit; its TCP state (past SYN_SENT) or its reply counters still tell."""
        return bool(
            self.status & IPS_SEEN_REPLY
            or self.tcp_state > TCP_SYN_SENT
            or (self.counters is not None and self.counters[2] > 0)
        )


PROTOCOLS = {1: "icmp", 6: "tcp", 17: "udp", 33: "dccp", 58: "icmpv6", 132: "sctp", 136: "udplite"}
PORTED = frozenset({6, 17, 33, 132, 136})
EPHEMERAL = (32768, 60999)  # Linux's default net.ipv4.ip_local_port_range

Key = tuple[Peer, Peer, str, str]  # source, destination, protocol, port
# The values of one series, by index.
OPENED, UNANSWERED, OPEN, SENT_BYTES, SENT_PACKETS, RECEIVED_BYTES, RECEIVED_PACKETS = range(7)


class Conn:
    """A tracked connection: its series, whether it was answered, whether its unanswered verdict
    is given (or never to be: it was open before the exporter started), its last counters."""

    __slots__ = ("answered", "counters", "judged", "key")

    def __init__(self, key: Key, answered: bool, judged: bool, counters: tuple | None) -> None:
        self.key = key
        self.answered = answered
        self.judged = judged
        self.counters = counters


_PENDING = object()  # an end is in a workload network and not yet held by a known workload
_ZERO = (0, 0, 0, 0)


class Flows:
    """The connections between workloads and their series.

    ``start`` loads the table as it is (open connections, counted neither opened nor unanswered),
    ``event`` applies one NEW, UPDATE or DESTROY, ``resync`` reconciles with a fresh dump after
    lost events (entries it did not know are counted opened), ``refresh`` takes the counters of a
    dump, ``tick`` gives the unanswered verdicts that are due, and ``retain`` drops the series of
    workloads gone. Connections where no end is a workload are not kept."""

    def __init__(
        self,
        max_peers: int = 20,
        unanswered_after: float = 3.0,
        ephemeral: tuple[int, int] = EPHEMERAL,
        grace: float = 2.0,
    ) -> None:
        self.max_peers = max_peers
        self.after = unanswered_after
        self.ephemeral = ephemeral
        self.grace = grace  # how long an address in a workload network may wait for its workload
        self.conns: dict[int, Conn] = {}
        self.gone: dict[int, Conn] = {}  # dropped by a resync; their DESTROY may still come
        self.unresolved: dict[int, tuple[Entry, float]] = {}
        self.deadlines: deque[tuple[float, int]] = deque()
        self.admitted: dict[Peer, set[Peer]] = {}
        self.series: dict[Key, list[int]] = {}
        # One tuple per key, shared by its connections (a hundred thousand of them hold one key).
        self.keys: dict[Key, Key] = {}

    # -- the key of a connection

    def key(self, entry: Entry, attr: Attribution, settle: bool = False) -> Key | object | None:
        """Its series' key; _PENDING while an end may be a workload not known yet (``settle``: take
        it as external); None when neither end is a workload."""
        source, destination = attr.peer(entry.src), attr.peer(entry.reply_src)
        if source is None or destination is None:
            if not settle:
                return _PENDING
            source, destination = source or EXTERNAL_PEER, destination or EXTERNAL_PEER
        if source.kind != WORKLOAD and destination.kind != WORKLOAD:
            return None
        protocol = PROTOCOLS.get(entry.protocol, str(entry.protocol))
        port = entry.reply_sport
        ported = entry.protocol in PORTED and not self.ephemeral[0] <= port <= self.ephemeral[1]
        key = (source, self._admit(source, destination), protocol, str(port) if ported else "")
        return self.keys.setdefault(key, key)

    def _admit(self, source: Peer, destination: Peer) -> Peer:
        """The destination, or `other` once the source has max_peers destinations of its own."""
        admitted = self.admitted.setdefault(source, set())
        if destination in admitted:
            return destination
        if len(admitted) < self.max_peers:
            admitted.add(destination)
            return destination
        return OTHER_PEER

    # -- what the kernel says

    def start(self, entries: Iterable[Entry], now: float, attr: Attribution) -> None:
        for entry in entries:
            self._track(entry, now, attr, counted=False)

    def event(self, kind: str, entry: Entry, now: float, attr: Attribution) -> None:
        ident = entry.id
        if kind == NEW:
            if ident not in self.conns and ident not in self.unresolved:
                self._track(entry, now, attr)
            return
        if ident in self.unresolved:
            if kind == DESTROY:
                self._settle(ident, attr)
            else:
                self.unresolved[ident] = (entry, self.unresolved[ident][1])
                return
        conn = self.conns.get(ident)
        if kind == DESTROY:
            self._end(ident, entry)
        elif conn is None:
            self._adopt(entry, now, attr)
        elif entry.answered and not conn.answered:
            conn.answered = True

    def _adopt(self, entry: Entry, now: float, attr: Attribution) -> None:
        """An update of a connection whose opening was not seen (its NEW came before anything
        said that an end is a workload): open from now on, neither counted opened nor judged."""
        if entry.id in self.gone:
            return
        key = self.key(entry, attr)
        if key is not None and key is not _PENDING:
            self._open(entry, key, now, counted=False)  # type: ignore[arg-type]

    def resync(self, entries: Iterable[Entry], now: float, attr: Attribution) -> None:
        """A fresh dump after lost events: new entries counted opened, the others brought up to
        date, the ones no longer there closed (their DESTROY, if still to come, only settles them)."""
        seen = set()
        for entry in entries:
            seen.add(entry.id)
            conn = self.conns.get(entry.id)
            if conn is None:
                if entry.id in self.unresolved:
                    self.unresolved[entry.id] = (entry, self.unresolved[entry.id][1])
                else:
                    self._track(entry, now, attr)
                continue
            conn.answered = conn.answered or entry.answered
            self._count(conn, entry.counters)
        gone = {i: c for i, c in self.conns.items() if i not in seen}
        for ident, conn in gone.items():
            del self.conns[ident]
            self._add(conn.key, OPEN, -1)
        for ident in [i for i in self.unresolved if i not in seen]:
            del self.unresolved[ident]
        self.gone = gone

    def refresh(self, entries: Iterable[Entry]) -> None:
        """The counters of a dump (events carry them only when a connection ends)."""
        conns = self.conns
        for entry in entries:
            conn = conns.get(entry.id)
            if conn is not None and entry.counters is not None:
                self._count(conn, entry.counters)

    def tick(self, now: float, attr: Attribution) -> float | None:
        """Settle the connections whose workload is now known (or whose grace is over) and give
        the unanswered verdicts that are due; returns when the next one is due, if any."""
        for ident, (entry, since) in list(self.unresolved.items()):
            settle = now - since >= self.grace
            if settle or self.key(entry, attr) is not _PENDING:
                self._settle(ident, attr, settle)
        deadlines, conns = self.deadlines, self.conns
        while deadlines and deadlines[0][0] <= now:
            conn = conns.get(deadlines.popleft()[1])
            if conn is not None and not conn.answered and not conn.judged:
                conn.judged = True
                self._add(conn.key, UNANSWERED, 1)
        due = [deadlines[0][0]] if deadlines else []
        due += [since + self.grace for _entry, since in self.unresolved.values()]
        return min(due) if due else None

    def retain(self, live: frozenset[Peer]) -> None:
        """Drop the series (and connections) of workloads that are not ``live`` (gone)."""

        def dead(peer: Peer) -> bool:
            return peer.kind == WORKLOAD and peer not in live

        dropped = {k for k in self.keys if dead(k[0]) or dead(k[1])}
        for source in [s for s in self.admitted if dead(s)]:
            del self.admitted[source]
        for admitted in self.admitted.values():
            admitted.difference_update([p for p in admitted if dead(p)])
        if not dropped:
            return
        for key in dropped:
            del self.keys[key]
            self.series.pop(key, None)
        for table in (self.conns, self.gone):
            for ident in [i for i, c in table.items() if c.key in dropped]:
                del table[ident]

    # -- bookkeeping

    def _track(self, entry: Entry, now: float, attr: Attribution, counted: bool = True) -> None:
        key = self.key(entry, attr)
        if key is _PENDING:
            self.unresolved[entry.id] = (entry, now)
        elif key is not None:
            self._open(entry, key, now, counted)  # type: ignore[arg-type]

    def _open(self, entry: Entry, key: Key, opened: float, counted: bool) -> None:
        answered = entry.answered
        conn = Conn(key, answered, not counted, _ZERO if counted else entry.counters)
        self.conns[entry.id] = conn
        self._add(key, OPEN, 1)
        if counted:
            self._add(key, OPENED, 1)
            self._count(conn, entry.counters)
            if not answered:
                self.deadlines.append((opened + self.after, entry.id))

    def _settle(self, ident: int, attr: Attribution, settle: bool = True) -> None:
        entry, since = self.unresolved.pop(ident)
        key = self.key(entry, attr, settle)
        if key is not None and key is not _PENDING:
            self._open(entry, key, since, counted=True)  # type: ignore[arg-type]

    def _end(self, ident: int, entry: Entry) -> None:
        conn = self.conns.pop(ident, None)
        if conn is not None:
            self._add(conn.key, OPEN, -1)
        else:
            conn = self.gone.pop(ident, None)
            if conn is None:
                return
        if not conn.answered and not entry.answered and not conn.judged:
            conn.judged = True
            self._add(conn.key, UNANSWERED, 1)
        self._count(conn, entry.counters)

    def _count(self, conn: Conn, counters: tuple[int, int, int, int] | None) -> None:
        """Add what the counters grew by since the connection's last ones."""
        if counters is None:
            return
        last = conn.counters
        conn.counters = counters
        if last is None or counters == last:
            return
        row = self.series.get(conn.key)
        if row is None:
            return
        for index, new, old in zip(
            (SENT_PACKETS, SENT_BYTES, RECEIVED_PACKETS, RECEIVED_BYTES),
            counters,
            last,
            strict=True,
        ):
            if new > old:
                row[index] += new - old

    def _add(self, key: Key, index: int, n: int) -> None:
        row = self.series.get(key)
        if row is None:
            row = self.series[key] = [0] * 7
        row[index] += n
