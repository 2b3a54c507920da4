"""One-shot commands: read the sources once, join, print, exit (see base.py)."""

from __future__ import annotations

from .base import Command
from .bridges import BridgesCommand
from .ips import IpsCommand
from .nat import NatCommand
from .netns import NetnsCommand
from .orphans import OrphansCommand
from .topology import TopologyCommand
from .veths import VethsCommand

COMMANDS: tuple[Command, ...] = (
    VethsCommand(),
    NatCommand(),
    IpsCommand(),
    BridgesCommand(),
    OrphansCommand(),
    NetnsCommand(),
    TopologyCommand(),
)
