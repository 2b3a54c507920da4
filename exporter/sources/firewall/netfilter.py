"""The firewall as a source: runs ``iptables-save -c``, ``ip6tables-save -c``
and ``nft -j`` (each bounded by a timeout) for every backend present, and
parses them with ``exporter.firewall``.

Both iptables backends can hold rules at once (iptables-nft and
iptables-legacy); both are read, and ``firewall.attribution.choose`` picks the one
holding Docker's rules. Docker 29's native nftables backend lives in the
``docker-bridges`` tables, listed only when ``nft -j list tables`` shows them.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, cast

from exporter.sources.firewall.iptables_save import header_backend, parse_iptables_save
from exporter.sources.firewall.nft_json import parse_nft_json
from exporter.sources.firewall.rules import (
    IPV4,
    IPV6,
    NFT_DOCKER_TABLE,
    NFT_FAMILIES,
    NetfilterUnavailable,
    Ruleset,
)

__all__ = ["Netfilter", "NetfilterUnavailable"]


@dataclass(frozen=True)
class IptablesBackend:
    name: str  # iptables-nft | iptables-legacy | "" (ask the header)
    save4: str
    save6: str


IPTABLES_BACKENDS = (
    IptablesBackend("iptables-nft", "iptables-nft-save", "ip6tables-nft-save"),
    IptablesBackend("iptables-legacy", "iptables-legacy-save", "ip6tables-legacy-save"),
)
# Before iptables 1.8 there is one unsuffixed iptables-save, legacy or nft as its header says.
PLAIN_IPTABLES = IptablesBackend("", "iptables-save", "ip6tables-save")


class Netfilter:
    """Reads the rules. All of a read's commands run at once, bounded by one deadline, and
    whatever still runs at its end is killed. Reads do not wait for one another: sharing a
    read between callers is the caller's business (the NAT collector does)."""

    def __init__(self, timeout: float = 5.0) -> None:
        self.timeout = timeout
        self._last: _Read | None = None

    def read(
        self, families: Collection[str] = (IPV4, IPV6), deadline: float | None = None
    ) -> list[Ruleset]:
        """One ruleset per backend present, the system's default first (``choose`` picks one).

        IPv6 rules are read only when ``families`` holds IPv6. A backend that fails is
        left out when another one holds Docker's chains.
        """
        backends = _iptables_backends()
        if not backends and not shutil.which("nft"):
            raise NetfilterUnavailable(
                "neither iptables-save nor nft found in PATH (install iptables or nftables)"
            )
        with self._reading(deadline) as run:
            return run.every_backend(backends, families)

    def read_backend(
        self, name: str, families: Collection[str], deadline: float | None = None
    ) -> Ruleset:
        """Only the backend ``name`` (``iptables-nft``, ``iptables-legacy`` or ``nftables``): one
        command per family. For nftables ``families`` are the ``docker-bridges`` tables to list."""
        with self._reading(deadline) as run:
            if name == "nftables":
                return run.nft_tables(
                    sorted(f for f, fam in NFT_FAMILIES.items() if fam in families)
                )
            backend = next((b for b in _iptables_backends() if b.name in (name, "")), None)
            if backend is None:
                raise NetfilterUnavailable(f"{name}-save not found in PATH")
            ruleset = run.iptables(backend, *run.start_iptables(backend, families))
            if ruleset.backend != name:
                raise NetfilterUnavailable(f"{backend.save4} reads {ruleset.backend}, not {name}")
            return ruleset

    @property
    def last_commands(self) -> list[tuple[str, ...]]:
        """The commands that the last read ran."""
        return list(self._last.commands) if self._last else []

    @contextmanager
    def _reading(self, deadline: float | None) -> Iterator[_Read]:
        run = _Read(self.timeout, deadline or time.monotonic() + self.timeout)
        self._last = run
        try:
            yield run
        finally:
            run.kill()


class _Read:
    """One read: the commands it started and its deadline."""

    def __init__(self, timeout: float, deadline: float) -> None:
        self.timeout, self.deadline = timeout, deadline
        self.commands: list[tuple[str, ...]] = []
        self._procs: list[subprocess.Popen[str]] = []

    def every_backend(
        self, backends: list[IptablesBackend], families: Collection[str]
    ) -> list[Ruleset]:
        iptables = [(b, *self.start_iptables(b, families)) for b in _default_first(backends)]
        tables = self.start("nft", "-j", "list", "tables") if shutil.which("nft") else None
        rulesets, errors = [], []
        for backend, v4, v6 in iptables:
            try:
                rulesets.append(self.iptables(backend, v4, v6))
            except NetfilterUnavailable as exc:
                errors.append(exc)
        if tables is not None:
            try:
                rulesets.append(self.nftables(tables, families))
            except NetfilterUnavailable as exc:
                errors.append(exc)
        if errors and not any(r.docker_families for r in rulesets):
            # Docker's rules may be in the backend that failed: say so rather than call them missing.
            raise errors[0]
        return rulesets

    def start_iptables(
        self, backend: IptablesBackend, families: Collection[str]
    ) -> tuple[subprocess.Popen[str], subprocess.Popen[str] | None]:
        v6 = IPV6 in families and shutil.which(backend.save6)
        return self.start(backend.save4, "-c"), self.start(backend.save6, "-c") if v6 else None

    def iptables(
        self,
        backend: IptablesBackend,
        v4: subprocess.Popen[str],
        v6: subprocess.Popen[str] | None,
    ) -> Ruleset:
        text4 = self.finish(v4)
        name = backend.name or header_backend(text4) or "iptables-legacy"
        ruleset = parse_iptables_save(text4, IPV4, name)
        if v6 is not None:
            ruleset.merge(parse_iptables_save(self.finish(v6), IPV6, name))
        return ruleset

    def nftables(self, tables: subprocess.Popen[str], families: Collection[str]) -> Ruleset:
        return self.nft_tables(
            [
                t["table"]["family"]
                for t in _nft_json(self.finish(tables)).get("nftables", ())
                if "table" in t
                and t["table"].get("name") == NFT_DOCKER_TABLE
                and NFT_FAMILIES.get(t["table"].get("family")) in families
            ]
        )

    def nft_tables(self, families: list[str]) -> Ruleset:
        """Docker's ``docker-bridges`` table of each nft family given (``ip``, ``ip6``)."""
        ruleset = Ruleset(backend="nftables")
        procs = [self.start("nft", "-j", "list", "table", f, NFT_DOCKER_TABLE) for f in families]
        for proc in procs:
            ruleset.merge(parse_nft_json(_nft_json(self.finish(proc))))
        return ruleset

    def start(self, *cmd: str) -> subprocess.Popen[str]:
        try:
            proc = subprocess.Popen(
                cmd,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                stdin=subprocess.DEVNULL,
                text=True,
                env=dict(os.environ, LC_ALL="C"),
                # A group of its own, killed whole: a wrapper script's children hold the pipes too.
                start_new_session=True,
            )
        except OSError as exc:
            raise NetfilterUnavailable(f"cannot run {cmd[0]}: {exc.strerror or exc}") from None
        self.commands.append(cmd)
        self._procs.append(proc)
        return proc

    def finish(self, proc: subprocess.Popen[str]) -> str:
        command = " ".join(cast("tuple[str, ...]", proc.args))  # as start() passed them
        try:
            out, err = proc.communicate(timeout=max(0.0, self.deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            _kill(proc)
            raise NetfilterUnavailable(
                f"{command} did not answer within {self.timeout:g}s"
            ) from None
        if proc.returncode != 0:
            detail = (err.strip().splitlines() or [f"exit status {proc.returncode}"])[-1]
            raise NetfilterUnavailable(f"{command} failed: {detail}")
        return out

    def kill(self) -> None:
        for proc in self._procs:
            if proc.poll() is None:
                _kill(proc)


def _kill(proc: subprocess.Popen[str]) -> None:
    """Kill the command's process group, reap it, and drop its pipes unread (a process that
    left the group may still hold them: reading them could wait for it)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()
    for pipe in (proc.stdout, proc.stderr):
        if pipe is not None:
            pipe.close()


def _iptables_backends() -> list[IptablesBackend]:
    return [b for b in IPTABLES_BACKENDS if shutil.which(b.save4)] or [
        b for b in (PLAIN_IPTABLES,) if shutil.which(b.save4)
    ]


def _default_first(backends: list[IptablesBackend]) -> list[IptablesBackend]:
    """The backend `iptables` points to first: it wins when no backend holds Docker's chains."""
    target = shutil.which("iptables")
    if target and "legacy" in os.path.realpath(target):
        return sorted(backends, key=lambda b: b.name != "iptables-legacy")
    return backends


def _nft_json(text: str) -> dict[str, Any]:
    try:
        return json.loads(text) if text.strip() else {}
    except ValueError as exc:
        raise NetfilterUnavailable(f"nft printed invalid JSON: {exc}") from None
