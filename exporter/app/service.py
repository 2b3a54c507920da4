"""The daemon's wiring: sources, state loop, collectors and the HTTP server,
started in the order that serves soonest, and stopped on SIGTERM or SIGINT
within two seconds whatever a source is doing. SIGHUP re-reads the web
configuration (TLS, basic auth, headers)."""

from __future__ import annotations

import argparse
import ctypes
import os
import signal
import sys

from exporter import __version__, logs
from exporter.app import runtimes
from exporter.core.orphan_rules import DEFAULT_GRACE
from exporter.metrics import collectors
from exporter.metrics.collectors.base import Context
from exporter.metrics.collectors.flows import FlowsCollector
from exporter.metrics.collectors.nat import NatCollector
from exporter.metrics.collectors.orphans import OrphansCollector
from exporter.metrics.collectors.overlay import OverlayCollector
from exporter.metrics.scrape import Scraper
from exporter.sources.kernel.procfs import Procfs
from exporter.state.daemon import Daemon
from exporter.views.page import TopologyPage
from exporter.web.config import WebConfig, WebConfigError
from exporter.web.config import load as load_web_config
from exporter.web.server import Server

log = logs.get_logger()
PROG = "dockernet-exporter"


# glibc gives each thread that allocates while others do an arena of its own, up to 8 per core, and
# frees little of them: with grpcio's threads beside the scrape's, the CRI source's exporter held
# 89 MB at 2,000 veths against 59 MB with two arenas (bench/README.md). MALLOC_ARENA_MAX wins.
MALLOC_ARENAS = 2
M_ARENA_MAX = -8  # glibc's mallopt parameter


def limit_malloc_arenas(arenas: int = MALLOC_ARENAS) -> bool:
    """Bound glibc's malloc arenas, unless MALLOC_ARENA_MAX says otherwise; called before any
    thread starts. Whether the bound was set (not on another libc)."""
    if "MALLOC_ARENA_MAX" in os.environ:
        return False
    try:
        return ctypes.CDLL(None).mallopt(M_ARENA_MAX, arenas) == 1
    except (OSError, AttributeError):
        return False


STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT}
SIGNALS = STOP_SIGNALS | {signal.SIGHUP}


def topology_page(daemon: Daemon, enabled: list[collectors.Collector]) -> TopologyPage:
    """The page reads the rules through the NAT collector's reader (one cache, one read in flight
    for both), shows orphans as the orphans collector flags them (its defaults when it is off),
    reads the overlays' peers through the overlay collector's sockets and the flows from the flows
    collector's table (none of either when that collector is off)."""
    by_name = {c.name: c for c in enabled}
    nat, orphans = by_name.get("nat"), by_name.get("orphans")
    overlay, flows = by_name.get("overlay"), by_name.get("flows")
    return TopologyPage(
        lambda: daemon.snapshot,
        nat.firewall if isinstance(nat, NatCollector) else None,
        scope=orphans.scope if isinstance(orphans, OrphansCollector) else "docker",
        grace=orphans.grace if isinstance(orphans, OrphansCollector) else DEFAULT_GRACE,
        overlay_peers=(
            overlay.sockets.fdb_destinations if isinstance(overlay, OverlayCollector) else None
        ),
        flows=flows.rows if isinstance(flows, FlowsCollector) else None,
    )


def run_daemon(args: argparse.Namespace) -> int:
    limit_malloc_arenas()
    # Every thread inherits this mask, so the signals reach only the main thread's sigwait: a
    # signal the kernel hands to a busy thread would not wake a main thread blocked on a lock.
    signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
    try:
        web_config = load_web_config(args.web_config_file) if args.web_config_file else WebConfig()
        sources = runtimes.from_args(args)
    except (WebConfigError, runtimes.SourceConfigError) as exc:
        where = (
            f"--web.config.file={args.web_config_file}: " if isinstance(exc, WebConfigError) else ""
        )
        sys.stderr.write(f"{PROG}: error: {where}{exc}\n")
        return 1
    procfs = Procfs(args.procfs)
    daemon = Daemon(
        sources, procfs, args.resync_interval, args.netlink_rcvbuf, args.first_scrape_wait
    )
    enabled = collectors.enabled(args, Context(procfs=procfs))
    try:
        server = Server(
            args.listen_address,
            args.telemetry_path,
            Scraper(daemon, enabled).render,
            web_config,
            pages=topology_page(daemon, enabled).routes(),
        )
    except OSError as exc:
        sys.stderr.write(
            f"{PROG}: error: cannot listen on {args.listen_address}: {exc.strerror or exc}\n"
        )
        return 1
    server.failure = lambda: daemon.failure
    server.serve_in_background()
    daemon.start()
    for c in enabled:
        c.start(lambda: daemon.snapshot)
    log.info(
        "listening",
        url=server.url,
        topology=server.url.removesuffix(server.telemetry_path) + "/topology",
        version=__version__,
        collectors=",".join(c.name for c in enabled),
    )
    while signal.sigwait(SIGNALS) not in STOP_SIGNALS:
        server.reload_config(args.web_config_file)  # SIGHUP
    log.info("stopping")
    server.shutdown()
    server.server_close()
    for c in enabled:
        c.stop()
    daemon.stop()
    return 0
