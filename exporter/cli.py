"""Command line: the daemon (no subcommand) and one-shot inspection commands."""

from __future__ import annotations

import argparse
import os
import re
import signal
import sys
import threading

import structlog

from . import __version__, logs, orphans
from .collectors import ALL as COLLECTORS
from .commands import COMMANDS, add_source_flags
from .daemon import Daemon
from .privileges import missing_privileges
from .scrape import Scraper
from .sources.docker import DockerSource, default_host
from .sources.procfs import Procfs
from .web import Server, parse_listen_address
from .webconfig import WebConfig, WebConfigError
from .webconfig import load as load_web_config

PROG = "dockernet-exporter"
DEFAULT_LISTEN = ":9917"

log = structlog.get_logger()


class Parser(argparse.ArgumentParser):
    """Usage errors are one line and exit code 2."""

    def error(self, message: str) -> None:
        sys.stderr.write(f"{self.prog}: error: {message} (see --help)\n")
        raise SystemExit(2)


def duration(text: str) -> float:
    """'300', '300s', '5m', '1h', '1.5s' -> seconds."""
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m|h)?", text.strip())
    if not m:
        raise argparse.ArgumentTypeError(f"invalid duration {text!r}: use e.g. 30s, 5m, 1h")
    scale = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, None: 1}[m.group(2)]
    return float(m.group(1)) * scale


def procfs_path(text: str) -> str:
    """A procfs mount point: it has a directory per process, pid 1's among them."""
    if not os.path.isdir(os.path.join(text, "1", "ns")):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a procfs mount (no {os.path.join(text, '1', 'ns')})"
        )
    return text


def byte_size(text: str) -> int:
    """'8MiB', '512KiB', '65536' -> bytes."""
    m = re.fullmatch(r"(\d+)(KiB|MiB)?", text.strip())
    if not m:
        raise argparse.ArgumentTypeError(f"invalid size {text!r}: use e.g. 65536, 512KiB, 8MiB")
    return int(m.group(1)) * {"KiB": 1024, "MiB": 1024 * 1024, None: 1}[m.group(2)]


def listen_address(text: str) -> str:
    try:
        parse_listen_address(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc))
    return text


def build_parser() -> Parser:
    p = Parser(
        prog=PROG,
        description="Prometheus exporter for Docker's host-side networking: maps every host veth to its "
        "container exactly (by peer namespace id and peer ifindex) and serves per-container "
        "interface counters, veth and bridge membership. Without a command it runs the daemon; "
        "the commands print the same knowledge once and exit.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    p.add_argument(
        "--web.listen-address",
        dest="listen_address",
        default=DEFAULT_LISTEN,
        type=listen_address,
        help="address to serve /metrics on, [host]:port",
    )
    p.add_argument(
        "--web.telemetry-path",
        dest="telemetry_path",
        default="/metrics",
        help="path under which to expose metrics",
    )
    p.add_argument(
        "--web.config.file",
        dest="web_config_file",
        default="",
        help="exporter-toolkit web config (TLS, basic auth); empty: plain HTTP without auth",
    )
    p.add_argument(
        "--docker.host",
        dest="docker_host",
        default=default_host(),
        help="Docker Engine API address (default: $DOCKER_HOST, else the local socket)",
    )
    p.add_argument(
        "--docker.timeout",
        dest="docker_timeout",
        type=duration,
        default="10s",
        help="timeout of each Docker API call",
    )
    p.add_argument(
        "--path.procfs",
        dest="procfs",
        type=procfs_path,
        default="/proc",
        help="procfs mount point (the host's /proc when running in a container)",
    )
    p.add_argument(
        "--resync.interval",
        dest="resync_interval",
        type=duration,
        default="5m",
        help="full re-read of all sources as a safety net behind the event streams",
    )
    p.add_argument(
        "--netlink.receive-buffer",
        dest="netlink_rcvbuf",
        type=byte_size,
        default="8MiB",
        help="receive buffer of the link notification socket; when a burst overflows it, "
        "the exporter re-reads all links (counted in dockernet_resyncs_total)",
    )
    p.add_argument(
        "--log.level", dest="log_level", choices=logs.LEVELS, default="info", help="log level"
    )
    p.add_argument(
        "--log.format", dest="log_format", choices=logs.FORMATS, default="logfmt", help="log format"
    )
    for c in COLLECTORS:
        p.add_argument(
            f"--collector.{c.name}",
            dest=f"collector_{c.name}",
            action=argparse.BooleanOptionalAction,
            default=c.default,
            help=f"enable the {c.name} collector: {c.help}",
        )
    p.add_argument(
        "--collector.nat.cache",
        dest="nat_cache",
        type=duration,
        default="0s",
        help="reuse the firewall rules read for this long (0s: read them on every scrape)",
    )
    p.add_argument(
        "--collector.nat.timeout",
        dest="nat_timeout",
        type=duration,
        default="5s",
        help="timeout of the iptables-save / nft commands of one read",
    )
    p.add_argument(
        "--collector.orphans.scope",
        dest="orphans_scope",
        choices=orphans.SCOPES,
        default="docker",
        help="docker: flag only veths Docker can be blamed for; all: also those of other tools "
        "(ports of other bridges, namespaces of `ip netns add`)",
    )
    p.add_argument(
        "--collector.orphans.grace",
        dest="orphans_grace",
        type=duration,
        default="30s",
        help="how long a veth must have looked orphaned before it is flagged",
    )
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for cmd in COMMANDS:
        cmd.add_parser(sub)
    for command_parser in sub.choices.values():
        add_source_flags(command_parser)
    return p


def main(argv: list | None = None) -> int:
    args = build_parser().parse_args(argv)
    logs.configure(args.log_level, args.log_format)
    missing = missing_privileges()
    if missing:
        sys.stderr.write(
            f"{PROG}: error: needs root or the capabilities {', '.join(missing)} "
            f"(to read other processes' network namespaces and dump their links)\n"
        )
        return 1
    if args.command:
        return run_command(args)
    return run_daemon(args)


def run_command(args: argparse.Namespace) -> int:
    try:
        return args.run(args)
    except BrokenPipeError:  # the reader went away (`| head`): not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def run_daemon(args: argparse.Namespace) -> int:
    try:
        web_config = load_web_config(args.web_config_file) if args.web_config_file else WebConfig()
    except WebConfigError as exc:
        sys.stderr.write(f"{PROG}: error: --web.config.file={args.web_config_file}: {exc}\n")
        return 1
    procfs = Procfs(args.procfs)
    daemon = Daemon(
        DockerSource(args.docker_host, args.docker_timeout),
        procfs,
        args.resync_interval,
        args.netlink_rcvbuf,
    )
    collectors = [
        c(
            procfs=procfs,
            nat_cache=args.nat_cache,
            nat_timeout=args.nat_timeout,
            orphans_scope=args.orphans_scope,
            orphans_grace=args.orphans_grace,
        )
        for c in COLLECTORS
        if getattr(args, f"collector_{c.name}")
    ]
    try:
        server = Server(
            args.listen_address, args.telemetry_path, Scraper(daemon, collectors).render, web_config
        )
    except OSError as exc:
        sys.stderr.write(
            f"{PROG}: error: cannot listen on {args.listen_address}: {exc.strerror or exc}\n"
        )
        return 1
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    daemon.start()
    server.serve_in_background()
    log.info(
        "listening",
        url=server.url,
        version=__version__,
        collectors=",".join(c.name for c in collectors),
    )
    done.wait()
    log.info("stopping")
    server.shutdown()
    server.server_close()
    daemon.stop()
    return 0
