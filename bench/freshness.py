"""Target 2: from Docker's event time to the container's counters on /metrics, and back.

A removal can show before Docker's ``die`` event (a negative latency): the exporter
watches the container's process and drops it when it exits, while dockerd reports
``die`` only after containerd has told it."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from .checks import check
from .load import LABEL
from .stats import percentile

if TYPE_CHECKING:
    from docker import DockerClient

    from .load import Load
    from .procs import Exporter

POLL_SLEEP = 0.005
TIMEOUT = 10.0


class DockerEvents:
    """Start and die times (ns, Docker's clock = this host's) of our containers, as Docker reports them."""

    def __init__(self, client: DockerClient, prefix: str) -> None:
        self.times: dict = {}
        self._cond = threading.Condition()
        self._stream = client.api.events(
            decode=True,
            filters={"type": "container", "event": ["start", "die"], "label": f"{LABEL}={prefix}"},
        )
        threading.Thread(target=self._follow, daemon=True).start()

    def _follow(self) -> None:
        try:
            for ev in self._stream:
                with self._cond:
                    self.times.setdefault((ev["id"], ev["Action"]), ev["timeNano"])
                    self._cond.notify_all()
        except Exception:  # the stream is closed by close()
            pass

    def wait(self, container_id: str, action: str) -> int:
        with self._cond:
            if not self._cond.wait_for(lambda: (container_id, action) in self.times, TIMEOUT):
                raise RuntimeError(
                    f"no Docker {action} event for {container_id[:12]} within {TIMEOUT}s"
                )
            return self.times[(container_id, action)]

    def close(self) -> None:
        self._stream.close()


def counters_of(container_id: str) -> str:
    return f'dockernet_container_receive_bytes_total{{container_id="{container_id}"'


def poll_until(
    ours: Exporter,
    predicate: Callable[[str], bool],
    what: str,
    failed: Callable[[], object] = lambda: None,
) -> int:
    """Scrape until predicate(text) holds; the wall clock (ns) when that response arrived."""
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        text = ours.text()
        if predicate(text):
            return time.time_ns()
        failed()
        time.sleep(POLL_SLEEP)
    shown = [line.split("{")[0] for line in text.splitlines() if what in line]
    raise RuntimeError(
        f"/metrics did not change as expected within {TIMEOUT}s; {what[:12]} is in: {shown}"
    )


def while_polling(
    ours: Exporter,
    action: Callable[[], object],
    predicate: Callable[[str], bool],
    what: str,
    returned: list | None = None,
) -> int:
    """Run the runtime's call in the background and scrape meanwhile: the series may change before
    the call returns (`docker rm` returns only after the network and the filesystem are gone).
    The wall clock (ns) of the call's return is appended to `returned`, when given."""
    done = threading.Event()
    errors: list = []

    def call() -> None:
        try:
            action()
        except Exception as exc:
            errors.append(exc)
        finally:
            if returned is not None:
                returned.append(time.time_ns())
            done.set()

    def failed() -> None:
        if errors:
            raise errors[0]

    threading.Thread(target=call, daemon=True).start()
    seen = poll_until(ours, predicate, what, failed)
    done.wait(TIMEOUT)
    failed()
    return seen


def percentiles(appear: list, vanish: list) -> dict:
    return {
        f"{name}_{stat}_ms": round(percentile(xs, p), 1)
        for name, xs in (("appear", appear), ("vanish", vanish))
        for stat, p in (("p50", 50), ("p99", 99), ("max", 100))
    }


def one_cycle(load: Load, ours: Exporter, events: DockerEvents, i: int) -> tuple:
    cid = load.create_container(f"{load.prefix}-f{i}", load.extra_network())
    seen = while_polling(
        ours, lambda: load.start_container(cid), lambda t: counters_of(cid) in t, cid
    )
    started = events.wait(cid, "start")
    gone = while_polling(
        ours, lambda: load.remove_container(cid), lambda t: f'container_id="{cid}"' not in t, cid
    )
    died = events.wait(cid, "die")
    return (seen - started) / 1e6, (gone - died) / 1e6


def run(client: DockerClient, load: Load, ours: Exporter, starts: int) -> dict:
    events = DockerEvents(client, load.prefix)
    try:
        cycles = [one_cycle(load, ours, events, i) for i in range(starts)]
    finally:
        events.close()
    return latency_report(
        cycles,
        ("freshness: start -> series, p99", "freshness: removal -> gone, p99"),
        100.0,
        f"upper bound: first scrape showing it; {starts} starts",
    ) | {"starts": starts}


def latency_report(cycles: list, names: tuple[str, str], target_ms: float, how: str) -> dict:
    """Percentiles of (appear, vanish) latencies in ms, the latencies, and their p99 checks."""
    appear, vanish = [c[0] for c in cycles], [c[1] for c in cycles]
    figures = percentiles(appear, vanish)
    return {
        **figures,
        "appear_ms": appear,
        "vanish_ms": vanish,
        "checks": [
            check(
                name,
                figures[f"{kind}_p99_ms"],
                "ms",
                f"<= {target_ms:g} ms",
                figures[f"{kind}_p99_ms"] <= target_ms,
                how,
            )
            for name, kind in zip(names, ("appear", "vanish"), strict=True)
        ],
    }
