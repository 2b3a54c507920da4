"""The overlay networks of a snapshot, for /topology.json, the page and the `topology` tree. Pure:
the caller passes the remote VTEPs it read."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from exporter.core.overlay import sandbox_at

if TYPE_CHECKING:
    from exporter.core.topology import Interface, Snapshot


def overlays(
    snap: Snapshot, peers: Mapping[str, Sequence[str]] | None = None
) -> list[dict[str, Any]]:
    """Each overlay namespace on this node: its network, br0, the VXLAN device with its peers (by
    namespace name; None: not read) and the endpoints on br0, each with the container interface
    at its other end (None for Swarm's own sandboxes, which ``sandbox`` names)."""
    at_veth = {(i.netns, i.veth): i for i in snap.interfaces if i.netns}
    out = []
    for ns in snap.overlays:
        n = ns.network
        vxlan = ns.vxlan
        out.append(
            {
                "namespace": ns.name,
                "network": n.name if n else None,
                "network_id": n.id if n else None,
                "vni": n.vni if n else None,
                "subnets": [s for s, _gateway in n.subnets] if n else [],
                "bridge": ns.bridge.name if ns.bridge else None,
                "vxlan": {"name": vxlan.name, "mtu": vxlan.mtu} if vxlan else None,
                "peers": _peers(peers, ns.name) if vxlan else None,
                "endpoints": [
                    _endpoint(
                        l.name,
                        at_veth.get((ns.name, l.name)),
                        sandbox_at(snap.sandboxes, l.peer_netnsid),
                    )
                    for l in ns.endpoints
                ],
            }
        )
    return out


def _peers(peers: Mapping[str, Sequence[str]] | None, namespace: str) -> list[str] | None:
    if peers is None or namespace not in peers:
        return None
    return sorted(peers[namespace])


def _endpoint(veth: str, i: Interface | None, sandbox: str | None) -> dict[str, Any]:
    return {
        "veth": veth,
        "container_id": i.container.id if i else None,
        "container_name": i.container.name if i else None,
        "interface": i.interface if i else None,
        "sandbox": sandbox if i is None else None,
    }


def tree_lines(overlays: list[dict[str, Any]]) -> list[list[str]]:
    """The `topology` tree's lines of each overlay: the network, then one line per endpoint."""
    out = []
    for o in overlays:
        vxlan = o["vxlan"] or {}
        head = (
            f"  {o['network'] or '(no network)'} (overlay, vni {o['vni'] or '-'}): namespace "
            f"{o['namespace']}, {o['bridge'] or '-'} + {vxlan.get('name', '-')} mtu {vxlan.get('mtu', '-')}"
        )
        if o.get("peers") is not None:
            head += f", peers {' '.join(o['peers']) or 'none'}"
        ends = [
            f"    {e['veth']} -> {e['container_name']} {e['interface']}"
            if e["container_id"]
            else f"    {e['veth']} -> {e['sandbox']} (Swarm's own sandbox)"
            if e["sandbox"]
            else f"    {e['veth']} -> (no container)"
            for e in o["endpoints"]
        ]
        out.append([head, *ends])
    return out
