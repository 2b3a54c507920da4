"""The firewall as a source: runs ``iptables-save -c``, ``ip6tables-save -c``
and ``nft -j`` (each bounded by a timeout) for every backend present, and
parses them with ``exporter.nat``.

Both iptables backends can hold rules at once (iptables-nft and
iptables-legacy); both are read, and ``nat.choose`` picks the one holding
Docker's rules. Docker 29's native nftables backend lives in the
``docker-bridges`` tables, listed only when ``nft -j list tables`` shows them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Collection
from contextlib import contextmanager
from dataclasses import dataclass

from .. import nat


class NetfilterUnavailable(OSError):
    """The rules cannot be read here (no binary, no permission, a timeout)."""


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
    """One read at a time; all of a read's commands run at once, bounded by one deadline."""

    def __init__(self, timeout: float = 5.0) -> None:
        self.timeout = timeout
        self._lock = threading.Lock()
        self._started: list[subprocess.Popen] = []
        self._deadline = 0.0

    def read(
        self, families: Collection[str] = (nat.IPV4, nat.IPV6), deadline: float | None = None
    ) -> list[nat.Ruleset]:
        """One ruleset per backend present, the system's default first (``nat.choose`` picks one).

        IPv6 rules are read only when ``families`` holds IPv6. A backend that fails is
        left out when another one holds Docker's chains.
        """
        backends = _iptables_backends()
        if not backends and not shutil.which("nft"):
            raise NetfilterUnavailable(
                "neither iptables-save nor nft found in PATH (install iptables or nftables)"
            )
        with self._reading(deadline):
            return self._read_all(backends, families)

    def read_backend(
        self, name: str, families: Collection[str], deadline: float | None = None
    ) -> nat.Ruleset:
        """Only the backend ``name`` (``iptables-nft``, ``iptables-legacy`` or ``nftables``): one
        command per family. For nftables ``families`` are the ``docker-bridges`` tables to list."""
        with self._reading(deadline):
            if name == "nftables":
                return self._nft_tables(
                    sorted(f for f, fam in nat.NFT_FAMILIES.items() if fam in families)
                )
            backend = next((b for b in _iptables_backends() if b.name in (name, "")), None)
            if backend is None:
                raise NetfilterUnavailable(f"{name}-save not found in PATH")
            ruleset = self._iptables(backend, *self._start_iptables(backend, families))
            if ruleset.backend != name:
                raise NetfilterUnavailable(f"{backend.save4} reads {ruleset.backend}, not {name}")
            return ruleset

    @property
    def last_commands(self) -> list[tuple[str, ...]]:
        """The commands the last read ran."""
        return [tuple(proc.args) for proc in self._started]

    @contextmanager
    def _reading(self, deadline: float | None):
        with self._lock:
            self._started, self._deadline = [], deadline or time.monotonic() + self.timeout
            try:
                yield
            finally:
                for proc in self._started:
                    if proc.poll() is None:
                        proc.kill()
                        proc.wait()

    def _read_all(
        self, backends: list[IptablesBackend], families: Collection[str]
    ) -> list[nat.Ruleset]:
        reads = [
            (self._iptables, b, *self._start_iptables(b, families))
            for b in _default_first(backends)
        ]
        if shutil.which("nft"):
            reads.append((self._nftables, self._start("nft", "-j", "list", "tables"), families))
        rulesets, errors = [], []
        for parse, *args in reads:
            try:
                rulesets.append(parse(*args))
            except NetfilterUnavailable as exc:
                errors.append(exc)
        if errors and not any(r.docker_families for r in rulesets):
            # Docker's rules may be in the backend that failed: say so rather than call them missing.
            raise errors[0]
        return rulesets

    def _start_iptables(self, backend: IptablesBackend, families: Collection[str]):
        v6 = nat.IPV6 in families and shutil.which(backend.save6)
        return self._start(backend.save4, "-c"), self._start(backend.save6, "-c") if v6 else None

    def _iptables(
        self, backend: IptablesBackend, v4: subprocess.Popen, v6: subprocess.Popen | None
    ) -> nat.Ruleset:
        text4 = self._finish(v4)
        name = backend.name or nat.header_backend(text4) or "iptables-legacy"
        ruleset = nat.parse_iptables_save(text4, nat.IPV4, name)
        if v6 is not None:
            ruleset.merge(nat.parse_iptables_save(self._finish(v6), nat.IPV6, name))
        return ruleset

    def _nftables(self, tables: subprocess.Popen, families: Collection[str]) -> nat.Ruleset:
        return self._nft_tables(
            [
                t["table"]["family"]
                for t in _nft_json(self._finish(tables)).get("nftables", ())
                if "table" in t
                and t["table"].get("name") == nat.NFT_DOCKER_TABLE
                and nat.NFT_FAMILIES.get(t["table"].get("family")) in families
            ]
        )

    def _nft_tables(self, families: list[str]) -> nat.Ruleset:
        """Docker's ``docker-bridges`` table of each nft family given (``ip``, ``ip6``)."""
        ruleset = nat.Ruleset(backend="nftables")
        procs = [
            self._start("nft", "-j", "list", "table", family, nat.NFT_DOCKER_TABLE)
            for family in families
        ]
        for proc in procs:
            ruleset.merge(nat.parse_nft_json(_nft_json(self._finish(proc))))
        return ruleset

    def _start(self, *cmd: str) -> subprocess.Popen:
        try:
            proc = subprocess.Popen(
                cmd,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                stdin=subprocess.DEVNULL,
                text=True,
                env=dict(os.environ, LC_ALL="C"),
            )
        except OSError as exc:
            raise NetfilterUnavailable(f"cannot run {cmd[0]}: {exc.strerror or exc}") from None
        self._started.append(proc)
        return proc

    def _finish(self, proc: subprocess.Popen) -> str:
        command = " ".join(proc.args)
        try:
            out, err = proc.communicate(timeout=max(0.0, self._deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            raise NetfilterUnavailable(
                f"{command} did not answer within {self.timeout:g}s"
            ) from None
        if proc.returncode != 0:
            detail = (err.strip().splitlines() or [f"exit status {proc.returncode}"])[-1]
            raise NetfilterUnavailable(f"{command} failed: {detail}")
        return out


def _iptables_backends() -> list[IptablesBackend]:
    return [b for b in IPTABLES_BACKENDS if shutil.which(b.save4)] or [
        b for b in (PLAIN_IPTABLES,) if shutil.which(b.save4)
    ]


def _default_first(backends: list[IptablesBackend]) -> list[IptablesBackend]:
    """The backend `iptables` points to first: it wins when no backend holds Docker's rules."""
    target = shutil.which("iptables")
    if target and "legacy" in os.path.realpath(target):
        return sorted(backends, key=lambda b: b.name != "iptables-legacy")
    return backends


def _nft_json(text: str) -> dict:
    try:
        return json.loads(text) if text.strip() else {}
    except ValueError as exc:
        raise NetfilterUnavailable(f"nft printed invalid JSON: {exc}") from None
