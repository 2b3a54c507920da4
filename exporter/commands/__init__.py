"""One-shot commands: read the sources once, join, print, exit (see base.py)."""

from __future__ import annotations

from exporter.commands.base import Command
from exporter.commands.bridges import BridgesCommand
from exporter.commands.flows import FlowsCommand
from exporter.commands.ips import IpsCommand
from exporter.commands.nat import NatCommand
from exporter.commands.netns import NetnsCommand
from exporter.commands.orphans import OrphansCommand
from exporter.commands.topology import TopologyCommand
from exporter.commands.veths import VethsCommand

COMMANDS: tuple[Command, ...] = (
    VethsCommand(),
    NatCommand(),
    IpsCommand(),
    BridgesCommand(),
    OrphansCommand(),
    NetnsCommand(),
    TopologyCommand(),
    FlowsCommand(),
)
