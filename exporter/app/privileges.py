"""Which of the capabilities the exporter needs the process lacks."""

from __future__ import annotations

# Opening /proc/<pid>/ns/net of other processes needs ptrace access; dumping
# links by namespace id and assigning an id need CAP_NET_ADMIN.
REQUIRED = {"CAP_NET_ADMIN": 12, "CAP_SYS_PTRACE": 19}


def effective_capabilities(status_path: str = "/proc/self/status") -> int:
    with open(status_path) as f:
        for line in f:
            if line.startswith("CapEff:"):
                return int(line.split()[1], 16)
    return 0


def missing_privileges(status_path: str = "/proc/self/status") -> list[str]:
    caps = effective_capabilities(status_path)
    return [name for name, bit in REQUIRED.items() if not caps & (1 << bit)]
