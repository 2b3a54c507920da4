"""Command line: the daemon (no command) and the one-shot inspection commands.

Only what parsing needs is imported here; the daemon's and each command's
modules load when they run, so ``--help`` and a short command start fast.
"""

from __future__ import annotations

import argparse
import os
import sys

from exporter import __version__, logs
from exporter.app import flags
from exporter.commands import COMMANDS
from exporter.metrics import collectors

PROG = "dockernet-exporter"
DEFAULT_LISTEN = ":9917"


def build_parser() -> flags.Parser:
    p = flags.Parser(
        prog=PROG,
        description="Prometheus exporter for the host side of container networking: maps every "
        "host veth to its container exactly (by peer namespace id and peer ifindex) and serves "
        "per-container interface counters, veth and bridge membership, addresses, NAT rules and "
        "orphaned veths. Without a command it runs the daemon; the commands print the same "
        "knowledge once and exit.",
    )
    p.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    p.add_argument(
        "--web.listen-address",
        dest="listen_address",
        default=DEFAULT_LISTEN,
        type=flags.listen_address,
        help="address to serve /metrics on, [host]:port; no host: every address, IPv4 and IPv6 "
        f"(default: {DEFAULT_LISTEN})",
    )
    p.add_argument(
        "--web.telemetry-path",
        dest="telemetry_path",
        default="/metrics",
        help="path under which to expose metrics (default: /metrics)",
    )
    p.add_argument(
        "--web.config.file",
        dest="web_config_file",
        default="",
        help="exporter-toolkit web config (TLS, basic auth); empty: plain HTTP without auth",
    )
    flags.add_first_scrape_flag(p)
    flags.add_source_flags(p)
    p.add_argument(
        "--resync.interval",
        dest="resync_interval",
        type=flags.duration,
        default="5m",
        help="full re-read of all sources as a safety net behind the event streams (default: 5m)",
    )
    p.add_argument(
        "--netlink.receive-buffer",
        dest="netlink_rcvbuf",
        type=flags.byte_size,
        default="8MiB",
        help="receive buffer of the link notification socket; when a burst overflows it, "
        "the exporter re-reads all links (counted in dockernet_resyncs_total; default: 8MiB)",
    )
    p.add_argument(
        "--log.level",
        dest="log_level",
        choices=logs.LEVELS,
        default="info",
        help="log level (default: info)",
    )
    p.add_argument(
        "--log.format",
        dest="log_format",
        choices=logs.FORMATS,
        default="logfmt",
        help="log format (default: logfmt)",
    )
    collectors.add_flags(p)
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=flags.Parser)
    for command in COMMANDS:
        command.add_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logs.configure(args.log_level, args.log_format)
    from exporter.app.privileges import missing_privileges

    missing = missing_privileges()
    if missing:
        sys.stderr.write(
            f"{PROG}: error: needs root or the capabilities {', '.join(missing)} "
            f"(to read other processes' network namespaces and dump their links)\n"
        )
        return 1
    if args.command:
        return run_command(args)
    from exporter.app.service import run_daemon

    return run_daemon(args)


def run_command(args: argparse.Namespace) -> int:
    from exporter.commands.base import CommandError

    try:
        return args.run(args)
    except CommandError as exc:
        sys.stderr.write(f"{PROG}: error: {exc}\n")
        return 1
    except BrokenPipeError:  # the reader went away (`| head`): not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
