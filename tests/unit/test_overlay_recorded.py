"""The join on a recorded single-node swarm (tests/fixtures/record_overlay.py): an attachable overlay
`ov` with c1 and c2, a service of two tasks on `ov` publishing a port (so on `ingress` too), and
Swarm's own sandboxes. Every interface of every container is mapped, its overlay veth found in the
overlay's namespace by the peer's namespace id and ifindex, and no gwbridge veth is a suspect."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
from recorded import links_from

from exporter.commands.topology import tree
from exporter.core import orphan_rules, overlay, topology
from exporter.core.model import Endpoint, HostState
from exporter.sources.runtimes.docker import (
    parse_container,
    parse_gateway_endpoints,
    parse_network,
    with_gateway,
)
from exporter.views import document as topology_view

RECORDED = Path(__file__).resolve().parent.parent / "fixtures" / "overlay"


def load(name: str) -> Any:
    return json.loads((RECORDED / name).read_text())


def recorded_state(gateways: bool = True) -> HostState:
    ids = load("identities.json")
    netns_dir = ids["exec_root"] + "/netns"
    files = {f"{netns_dir}/{n}": (inode, nsid) for n, (inode, nsid) in ids["netns_files"].items()}
    state = HostState(
        host_netns_inode=ids["host_netns_inode"],
        runtimes_up={"docker": True},
        docker_netns_dir=netns_dir,
        netns_files=files,
        overlay_netns=overlay.namespace_files(files, netns_dir),
    )
    state.links = links_from(RECORDED / "host-links.bin")
    state.networks = {n["Id"]: parse_network(n) for n in load("networks.json")}
    endpoints = parse_gateway_endpoints(load("gwbridge.json")) if gateways else {}
    for doc in load("inspect.json"):
        c = with_gateway(parse_container(doc), endpoints)
        state.containers[c.id] = dataclasses.replace(c, **ids["containers"][doc["Id"]])
    for nsid in {i["nsid"] for i in ids["containers"].values()} | {f[1] for f in files.values()}:
        state.netns_links[nsid] = links_from(RECORDED / f"netns-{nsid}-links.bin")
    return state


@pytest.fixture(scope="module")
def snap() -> topology.Snapshot:
    return topology.build(recorded_state())


def by_container(snap: topology.Snapshot) -> dict[str, dict[str, topology.Interface]]:
    out: dict[str, dict[str, topology.Interface]] = {}
    for i in snap.interfaces:
        out.setdefault(i.container.name, {})[i.interface] = i
    return out


def test_every_gwbridge_veth_is_mapped_and_none_is_a_suspect(snap):
    gwbridge = [v for v in snap.veths if v.bridge == "docker_gwbridge"]
    assert len(gwbridge) == 5  # c1, c2, two tasks, the ingress sandbox
    assert sorted(v.container.name for v in gwbridge if v.container) == sorted(
        n for n in by_container(snap) if n
    )
    assert snap.suspects == ()


def test_without_docker_gwbridge_endpoints_the_containers_veths_would_be_suspects():
    snap = topology.build(recorded_state(gateways=False))
    assert sorted(s.reason for s in snap.suspects) == ["no_endpoint"] * 4


def test_overlay_interfaces_name_their_veth_on_br0(snap):
    ov = next(ns for ns in snap.overlays if ns.network_name == "ov")
    eth0 = by_container(snap)["c1"]["eth0"]
    veth = next(l for l in ov.links if l.name == eth0.veth)
    assert (veth.peer_netnsid, veth.peer_ifindex) == (eth0.container.nsid, eth0.ifindex)
    assert veth.master == ov.bridge.ifindex
    assert (eth0.bridge, eth0.network, eth0.netns, eth0.veth_ifindex) == ("br0", "ov", ov.name, 0)
    assert eth0.netns_veth == (ov.nsid, veth.ifindex)
    assert eth0.mac == next(ep.mac for ep in eth0.container.endpoints if ep.network == "ov")


def test_service_tasks_have_ingress_overlay_and_gateway_interfaces(snap):
    interfaces = by_container(snap)
    tasks = [n for n in interfaces if n.startswith("svc.")]
    assert len(tasks) == 2
    for task in tasks:
        assert sorted(i.network for i in interfaces[task].values()) == [
            "docker_gwbridge",
            "ingress",
            "ov",
        ]
    modes = {v.container.name: v.network_mode for v in snap.containers}
    assert set(modes.values()) == {"ov"}


def test_overlay_namespaces_hold_br0_vxlan_and_one_veth_per_endpoint(snap):
    names = {ns.network_name: ns for ns in snap.overlays}
    assert set(names) == {"ov", "ingress"}
    # ov: c1, c2, two tasks and its lb_ sandbox; ingress: two tasks and the ingress sandbox.
    assert len(names["ov"].endpoints) == 5
    assert len(names["ingress"].endpoints) == 3
    assert all(ns.vxlan is not None and ns.vxlan.kind == "vxlan" for ns in snap.overlays)
    assert names["ov"].network.vni == "4097"


def test_namespace_kinds_follow_the_exec_root():
    state = recorded_state()
    kinds = orphan_rules.netns_kinds(state.netns_files, state.docker_netns_dir)
    assert sorted(kinds.values()) == ["docker"] * 4 + ["docker_internal"] * 4
    # Under the default directory, these files are nobody's: the exec root is what says whose.
    assert orphan_rules.netns_kinds(state.netns_files) == {}


def test_task_network_mode_is_its_first_overlay_besides_ingress():
    networks = recorded_state().networks
    ids = {n.name: n.id for n in networks.values()}

    def endpoints(*names: str) -> tuple[Endpoint, ...]:
        return tuple(Endpoint(network=n, network_id=ids[n]) for n in names)

    assert overlay.task_network(endpoints("ingress", "ov", "docker_gwbridge"), networks) == "ov"
    assert overlay.task_network(endpoints("ingress"), networks) == "ingress"
    assert overlay.task_network(endpoints("bridge"), networks) == ""
    assert overlay.task_network(endpoints("ov", "bridge"), networks) == ""
    assert overlay.task_network((), networks) == ""


def test_topology_document_and_tree_draw_the_overlays(snap):
    doc = topology_view.document(snap, now=0.0)
    ov = next(o for o in doc["overlays"] if o["network"] == "ov")
    assert (ov["bridge"], ov["vxlan"]["name"], ov["vni"]) == ("br0", "vxlan0", "4097")
    named = {e["container_name"] for e in ov["endpoints"]}
    assert {"c1", "c2", None} <= named and len(ov["endpoints"]) == 5
    eth0 = by_container(snap)["c1"]["eth0"]
    assert {
        "veth": eth0.veth,
        "container_id": eth0.container.id,
        "container_name": "c1",
        "interface": "eth0",
        "sandbox": None,
    } in ov["endpoints"]
    # Swarm's own endpoints, named as `docker network inspect` lists them among the containers.
    sandboxes = {
        o["network"]: [(e["veth"], e["sandbox"]) for e in o["endpoints"] if e["sandbox"]]
        for o in doc["overlays"]
    }
    assert {n: [s for _veth, s in ends] for n, ends in sandboxes.items()} == {
        "ov": ["lb-ov"],
        "ingress": ["ingress-sbox"],
    }
    lines = tree(doc).splitlines()
    at = lines.index("overlay networks")
    assert any(l.startswith("  ov (overlay, vni 4097): namespace 1-") for l in lines[at:])
    assert f"    {eth0.veth} -> c1 eth0" in lines
    assert f"    {sandboxes['ov'][0][0]} -> lb-ov (Swarm's own sandbox)" in lines


def test_a_load_balancer_sandbox_of_a_network_no_longer_listed_keeps_its_file_name():
    assert overlay.sandbox_name("lb_wxp0shoh5", {}) == "lb_wxp0shoh5"
    assert overlay.sandbox_name("ingress_sbox", {}) == "ingress-sbox"
