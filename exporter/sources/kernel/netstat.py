"""A network namespace's own protocol statistics, from procfs.

The files of ``/proc/<pid>/net`` that describe the namespace of ``<pid>``: ``snmp``
(Ip, Tcp, Udp), ``netstat`` (TcpExt, IpExt), ``snmp6``, ``sockstat``, ``sockstat6``
and ``stat/nf_conntrack``. Their size does not depend on the number of sockets
(unlike ``/proc/<pid>/net/tcp``). The parsers are pure, keep the kernel's field
names and pick only the fields asked for; ``NamespaceReader`` does the I/O, and ``Sampler``
does it in a thread of its own, off the scrape's path.
"""

from __future__ import annotations

import dataclasses
import math
import os
import threading
import time
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache

from exporter import logs
from exporter.sources.kernel.netstat_open import OpenNamespaces, usable

log = logs.get_logger()

SNMP, NETSTAT, SNMP6 = "snmp", "netstat", "snmp6"
SOCKSTAT, SOCKSTAT6, CONNTRACK = "sockstat", "sockstat6", "stat/nf_conntrack"
FILES = (SNMP, NETSTAT, SNMP6, SOCKSTAT, SOCKSTAT6, CONNTRACK)

# What to pick from a file: {section: field names}. snmp6 and nf_conntrack have no sections:
# their fields sit under the section "".
Wanted = Mapping[str, Sequence[str]]
# What a parse found: {(section, field): value}. A field the file lacks is absent.
Values = dict[tuple[str, str], int]

# `entries` is the namespace's conntrack count, repeated on every CPU's row; the other columns
# are per-CPU counters, summed.
CONNTRACK_ENTRIES = "entries"
# One read returns a whole single-record file when it fits (the biggest, netstat, is about 4 KiB).
BUFFER_SIZE = 65536


def parse_pairs(data: bytes, wanted: Wanted) -> Values:
    """``snmp`` and ``netstat``: per section a line of names ('Tcp: ActiveOpens ...') followed by a
    line of values ('Tcp: 12 ...')."""
    out: Values = {}
    for section, names, tag, start in _sections(data, wanted):
        header, after = _line(data, start)
        row, _ = _line(data, after)
        if not row.startswith(tag):
            continue
        values = row[len(tag) :].split()
        positions = _positions(header[len(tag) :], tuple(names))
        for name, i in zip(names, positions, strict=True):
            if 0 <= i < len(values):
                out[section, name] = int(values[i])
    return out


@lru_cache(maxsize=64)
def _positions(header: bytes, names: tuple[str, ...]) -> tuple[int, ...]:
    """Where each name sits in a header line (-1: absent); the same for every namespace."""
    index = {n.decode(): i for i, n in enumerate(header.split())}
    return tuple(index.get(n, -1) for n in names)


def parse_snmp6(data: bytes, wanted: Wanted) -> Values:
    """``snmp6``: one 'Name value' line per field."""
    out: Values = {}
    for name in wanted.get("", ()):
        tag = name.encode()
        start = _line_start(data, tag, b" \t")
        if start >= 0:
            out["", name] = int(_line(data, start)[0][len(tag) :])
    return out


def parse_sockstat(data: bytes, wanted: Wanted) -> Values:
    """``sockstat`` / ``sockstat6``: 'TCP: inuse 1 orphan 0 tw 2 alloc 3 mem 1' per protocol."""
    out: Values = {}
    for section, names, tag, start in _sections(data, wanted):
        words = _line(data, start)[0][len(tag) :].split()
        pairs = dict(zip(words[0::2], words[1::2], strict=False))
        for name in names:
            text = pairs.get(name.encode())
            if text is not None:
                out[section, name] = int(text)
    return out


def parse_nf_conntrack(data: bytes, wanted: Wanted) -> Values:
    """``stat/nf_conntrack``: a header, then one row of hexadecimal columns per CPU."""
    lines = data.split(b"\n")
    header = lines[0].decode("ascii", "replace").split()
    rows = [line.split() for line in lines[1:] if line.strip()]
    for n, row in enumerate(rows, 2):
        if len(row) != len(header):
            raise ValueError(f"line {n} has {len(row)} columns, the header {len(header)}")
    out: Values = {}
    for name in wanted.get("", ()):
        if name not in header or not rows:
            continue
        i = header.index(name)
        column = [int(row[i], 16) for row in rows]
        out["", name] = column[0] if name == CONNTRACK_ENTRIES else sum(column)
    return out


def _sections(data: bytes, wanted: Wanted) -> Iterator[tuple[str, Sequence[str], bytes, int]]:
    """(section, names, 'Section: ', where its first line starts) of each wanted section found."""
    for section, names in wanted.items():
        tag = section.encode() + b": "
        start = _line_start(data, tag)
        if start >= 0:
            yield section, names, tag, start


def _line_start(data: bytes, tag: bytes, after: bytes = b"") -> int:
    """Where the first line that begins with ``tag`` (then one of the bytes ``after``, if given)
    starts, or -1."""
    at = 0 if data.startswith(tag) else _next_line(data, tag, 0)
    while at >= 0 and after and not _followed_by(data, at + len(tag), after):
        at = _next_line(data, tag, at)
    return at


def _line(data: bytes, start: int) -> tuple[bytes, int]:
    """The line that starts at ``start``, and where the next one starts."""
    end = data.find(b"\n", start)
    return (data[start:], len(data)) if end < 0 else (data[start:end], end + 1)


def _next_line(data: bytes, tag: bytes, start: int) -> int:
    found = data.find(b"\n" + tag, start)
    return found + 1 if found >= 0 else -1


def _followed_by(data: bytes, at: int, after: bytes) -> bool:
    byte = data[at : at + 1]
    return bool(byte) and byte in after


PARSERS: dict[str, Callable[[bytes, Wanted], Values]] = {
    SNMP: parse_pairs,
    NETSTAT: parse_pairs,
    SNMP6: parse_snmp6,
    SOCKSTAT: parse_sockstat,
    SOCKSTAT6: parse_sockstat,
    CONNTRACK: parse_nf_conntrack,
}


@dataclass
class Reading:
    """One namespace's read: the values per file, and the files that could not be parsed."""

    values: dict[str, Values] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)  # file -> what was wrong with it


class NamespaceReader:
    """Reads the wanted fields of each namespace's files, each file once, into one buffer reused
    for every file and namespace: one reader per scrape (a buffer is not shared by threads)."""

    def __init__(self, root: str, wanted: Mapping[str, Wanted]) -> None:
        self.root = root
        self.wanted = [(name, wanted[name], PARSERS[name]) for name in FILES if name in wanted]
        self._buffer = bytearray(BUFFER_SIZE)
        self._view = memoryview(self._buffer)

    def read(self, pid: int, opened: Mapping[str, int] | None = None) -> Reading | None:
        """The namespace of ``pid``, or None when it went away (the process exited). A file the
        kernel does not have (``stat/nf_conntrack`` without conntrack, ``snmp6`` without IPv6)
        is left out. ``opened``: the namespace's files already open (see netstat_open.py), read
        from their start instead of opened by path."""
        reading = Reading()
        base = f"{self.root}/{pid}/net/"
        for name, wanted, parse in self.wanted:
            try:
                if opened is None:
                    data = self.read_file(base + name, name == CONNTRACK)
                elif name in opened:
                    data = self.read_fd(opened[name], name == CONNTRACK)
                else:
                    continue
            except OSError:
                if not os.path.exists(base + SNMP):  # gone (or a zombie: no namespace left)
                    return None
                continue
            try:
                reading.values[name] = parse(data, wanted)
            except (ValueError, IndexError) as exc:
                reading.errors[name] = str(exc)
        return reading

    def read_file(self, path: str, records: bool = False) -> bytes:
        """The file. ``snmp``, ``netstat``, ``snmp6`` and ``sockstat*`` are one seq_file record,
        returned whole by one read with room for it; a file of several records (``nf_conntrack``:
        one per CPU) may take more reads, so it is read to the end."""
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            return self.read_fd(fd, records)
        finally:
            os.close(fd)

    def read_fd(self, fd: int, records: bool = False) -> bytes:
        """An open file, from its start (a seq_file read at offset 0 starts over)."""
        size = os.preadv(fd, [self._buffer], 0)
        while records and size < BUFFER_SIZE:
            more = os.preadv(fd, [self._view[size:]], size)
            if not more:
                break
            size += more
        return bytes(self._view[:size])


@dataclass(frozen=True)
class Sample:
    """The latest reading of each namespace (None: it was gone when read), and what the latest
    pass over every namespace cost."""

    readings: Mapping[Hashable, Reading | None] = field(default_factory=dict)
    started: float | None = None  # monotonic start of the latest full pass; None before the first
    seconds: float = 0.0  # its wall time
    cpu_seconds: float = 0.0  # the sampling thread's CPU time in it
    namespaces: int = 0  # the namespaces it read


def refreshed(
    previous: Mapping[Hashable, Reading | None],
    fresh: Mapping[Hashable, Reading | None],
    wanted: Mapping[Hashable, int],
) -> dict[Hashable, Reading | None]:
    """The readings of the wanted namespaces: the fresh one where there is one, else the previous
    one. A namespace no longer wanted is dropped, so the readings never outgrow the topology."""
    return {
        k: fresh[k] if k in fresh else previous[k] for k in wanted if k in fresh or k in previous
    }


def unread(
    readings: Mapping[Hashable, Reading | None], wanted: Mapping[Hashable, int]
) -> dict[Hashable, int]:
    """The wanted namespaces that have no reading yet (one that was gone when read has one)."""
    return {k: pid for k, pid in wanted.items() if k not in readings}


# How often the sampler looks for namespaces that appeared since its latest pass, in seconds: a
# new namespace is read within this, or right after the pass it appeared in.
NEW_CHECK = 0.5


class Sampler:
    """Reads every wanted namespace in a thread of its own, every ``interval`` seconds (start to
    start; when a pass takes longer, the next begins at once), and a namespace that appeared
    since within NEW_CHECK seconds. ``wanted()`` gives the namespaces of the current topology,
    {key: pid}; ``latest`` is the result, replaced whole, so readers take it without a lock. A
    reading of a namespace is replaced only by a later one of the same namespace, in this one
    thread: its counters never go back. An exception is logged once and the next pass goes on.
    With ``keep_open`` (and pids that are the exporter's own) each namespace's files stay open
    between passes, closed when its process exits or it is no longer wanted (netstat_open.py)."""

    def __init__(
        self,
        reader: NamespaceReader,
        wanted: Callable[[], Mapping[Hashable, int]],
        interval: float,
        new_check: float = NEW_CHECK,
        *,
        keep_open: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.reader = reader  # used by the sampling thread alone (its buffer is not shared)
        self.wanted = wanted
        self.interval = interval
        self.new_check = new_check
        self.clock = clock
        self.latest = Sample()
        self.open = (
            OpenNamespaces(reader.root, [name for name, _w, _p in reader.wanted])
            if keep_open and usable(reader.root)
            else None
        )
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._errors: set[str] = set()
        self._checked: object = None  # the wanted namespaces the latest look found nothing new in
        self.due = math.inf  # when the next pass over every namespace is due (clock's time)

    def start(self) -> None:
        self._thread = threading.Thread(target=self.run, name="netstat-sampler", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 0.5) -> None:
        """Ends the thread, within a namespace's read of a pass in progress; the thread closes
        the files it holds."""
        self._stopping.set()
        held = self.open  # None once the thread has closed it
        if held is not None:
            held.wake()
        if self._thread is not None:
            self._thread.join(timeout)

    def run(self) -> None:
        try:
            self._loop()
        finally:
            self.close()

    def close(self) -> None:
        """Closes the files it holds (the thread does, when it ends)."""
        if self.open is not None:
            self.open.close_all()
            self.open = None

    def _loop(self) -> None:
        self.due = self.clock()
        while not self._stopping.is_set():
            full = self.clock() >= self.due
            if full:
                self.due = self.clock() + self.interval
            try:
                self.sample(full)
                # Namespaces that appeared during that pass are read at once.
                again = self.wanted() is not self._checked
            except Exception as exc:  # the thread goes on; the next pass may succeed
                self._failed(exc)
                again = False
            if not again and self.wait(min(self.due - self.clock(), self.new_check)):
                return

    def wait(self, seconds: float) -> bool:
        """Waits, closing the files of namespaces whose process exits meanwhile; True: stop."""
        if self.open is None:
            return self._stopping.wait(max(0.0, seconds))
        return self.open.wait(seconds) or self._stopping.is_set()

    def sample(self, full: bool) -> None:
        """One pass: every wanted namespace, or (not full) those not read yet."""
        wanted, latest = self.wanted(), self.latest
        if self.open is not None:
            self.open.keep(wanted)
        if not full and wanted is self._checked:
            return
        new = unread(latest.readings, wanted)
        todo = {**new, **wanted} if full else new  # the new ones first
        started, cpu = self.clock(), time.thread_time()
        fresh = {}
        for key, pid in todo.items():
            if self._stopping.is_set():
                return
            if not full and self.clock() >= self.due:
                break  # the pass due reads the rest: a check never holds it up
            opened = self.open.files(key, pid) if self.open is not None else None
            fresh[key] = self.reader.read(pid, opened)
            if full and key in new:  # a first reading is served at once, not after the pass
                first = {**self.latest.readings, key: fresh[key]}
                self.latest = dataclasses.replace(self.latest, readings=first)
        readings = refreshed(latest.readings, fresh, wanted)
        if full:
            seconds, cpu = self.clock() - started, time.thread_time() - cpu
            self.latest = Sample(readings, started, seconds, cpu, len(todo))
        else:
            self.latest = dataclasses.replace(latest, readings=readings)
        self._checked = wanted

    def _failed(self, exc: Exception) -> None:
        what = f"{type(exc).__name__}: {exc}"
        if what not in self._errors and len(self._errors) < 16:
            self._errors.add(what)
            log.exception("netstat_sample_failed", error=what)


def read_host_conntrack(root: str) -> tuple[int | None, int | None, Values]:
    """The host's conntrack table: (count, limit, statistics summed over CPUs), None where absent.
    Read in the exporter's own namespace (``<root>/sys/net/netfilter``, ``<root>/net/stat``),
    the host's, as every host-side read of the exporter."""
    reader = NamespaceReader(root, {})

    def number(name: str) -> int | None:
        try:
            return int(reader.read_file(f"{root}/sys/net/netfilter/{name}"))
        except (OSError, ValueError):
            return None

    columns = ("insert_failed", "drop", "early_drop", "invalid")
    try:
        stats = parse_nf_conntrack(reader.read_file(f"{root}/net/{CONNTRACK}", True), {"": columns})
    except (OSError, ValueError):
        stats = {}
    return number("nf_conntrack_count"), number("nf_conntrack_max"), stats
