"""Loads the fixtures recorded by tests/fixtures/record.py into a HostState."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from exporter.core.model import HostState
from exporter.sources.kernel import netlink as nl
from exporter.sources.runtimes.docker import parse_container, parse_network

RECORDED = Path(__file__).resolve().parent.parent / "fixtures" / "recorded"


def links_from(path: Path) -> dict:
    return {
        l.ifindex: l
        for kind, _f, buf, start, end in nl.iter_messages(path.read_bytes())
        if kind == nl.RTM_NEWLINK
        for l in [nl.parse_link(buf, start, end)]
    }


def inspect_docs() -> list:
    return json.loads((RECORDED / "inspect.json").read_text())


def by_name() -> dict:
    return {d["Name"].lstrip("/"): d for d in inspect_docs()}


def recorded_state() -> HostState:
    ids = json.loads((RECORDED / "identities.json").read_text())
    state = HostState(host_netns_inode=ids["host_netns_inode"], runtimes_up={"docker": True})
    state.links = links_from(RECORDED / "host-links.bin")
    state.networks = {
        n["Id"]: parse_network(n) for n in json.loads((RECORDED / "networks.json").read_text())
    }
    for doc in inspect_docs():
        c = dataclasses.replace(parse_container(doc), **ids["containers"][doc["Id"]])
        state.containers[c.id] = c
        if c.nsid is not None:
            state.netns_links[c.nsid] = links_from(RECORDED / f"netns-{c.nsid}-links.bin")
    return state
