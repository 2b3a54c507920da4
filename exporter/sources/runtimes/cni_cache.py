"""CNI's cache of results: each pod's attachments (its network, bridge and address, what the CRI
source maps a pod's interfaces with), and the pods it names by their namespace file, what is left to
name a pod whose runtime no longer lists it (a leaked ``cni-*`` namespace, docs/orphans.md).

Each attachment's result is cached as JSON in ``/var/lib/cni/results/<network>-<sandbox id>-<ifname>``
(kind ``cniCacheV1``) until the runtime tears the network down: ``cniArgs`` holds the pod's
``K8S_POD_NAMESPACE`` and ``K8S_POD_NAME`` as the runtime passed them, and the result's interface
inside the pod names the namespace file (``sandbox``). ``parse`` and ``parse_cni_result`` are pure;
``read`` and ``attachments`` do the I/O.
"""

from __future__ import annotations

import ipaddress
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass

from exporter.core.model import Endpoint, Network, PodRef

RESULTS = "/var/lib/cni/results"
CNI_LOOPBACK = "cni-loopback"


def netns_key(path: str) -> str:
    """A namespace file's path as the state spells it (/var/run/netns/...): /run is /var/run, and
    runtimes write either."""
    return "/var" + path if path.startswith("/run/") else path


def parse(doc: object) -> tuple[str, PodRef] | None:
    """(namespace file, pod) of one cached result (a pod's loopback and eth0 name the same); None
    when it names no pod or no namespace file, or is no cached result."""
    if not isinstance(doc, dict) or doc.get("kind") != "cniCacheV1":
        return None
    args = {
        pair[0]: pair[1]
        for pair in doc.get("cniArgs") or ()
        if isinstance(pair, list) and len(pair) == 2 and all(isinstance(x, str) for x in pair)
    }
    namespace, name = args.get("K8S_POD_NAMESPACE", ""), args.get("K8S_POD_NAME", "")
    interfaces = (doc.get("result") or {}).get("interfaces") or ()
    sandboxes = [i.get("sandbox") for i in interfaces if isinstance(i, dict)]
    netns = doc.get("netns") or next((s for s in sandboxes if isinstance(s, str) and s), "")
    if not (namespace and name and isinstance(netns, str) and netns):
        return None
    return netns_key(netns), PodRef(namespace, name)


def read(directory: str = RESULTS) -> dict[str, PodRef]:
    """Namespace file (netns_key) -> pod, from every result cached; {} where the cache cannot be
    read. A file that cannot be read or parsed is left out alone."""
    try:
        names = os.listdir(directory)
    except OSError:
        return {}
    pods = {}
    for name in names:
        try:
            with open(os.path.join(directory, name), "rb") as f:
                found = parse(json.load(f))
        except (OSError, ValueError):
            continue
        if found is not None:
            pods[found[0]] = found[1]
    return pods


@dataclass(frozen=True)
class CniAttachment:
    """One cached CNI result: a sandbox's interface on a network, and the host bridge it uses."""

    sandbox_id: str
    network: str
    bridge: str
    subnets: tuple[tuple[str, str], ...]
    endpoint: Endpoint


def parse_cni_result(doc: dict) -> CniAttachment | None:
    """A cached CNI result (kind cniCacheV1); None for the loopback and for what it cannot read.
    The host-side interfaces come without a sandbox: with the bridge plugin, the bridge first,
    then the host veth; a plugin without a bridge (ptp) lists the veth alone."""
    result = doc.get("result") or {}
    name, if_name = doc.get("networkName") or "", doc.get("ifName") or ""
    if doc.get("kind") != "cniCacheV1" or not name or name == CNI_LOOPBACK:
        return None
    interfaces = result.get("interfaces") or []
    host_side = [i.get("name", "") for i in interfaces if not i.get("sandbox")]
    inside = [i for i in interfaces if i.get("sandbox") and i.get("name") == if_name]
    subnets, address, prefix = [], "", 0
    for ip in result.get("ips") or ():
        try:
            iface = ipaddress.ip_interface(ip.get("address", ""))
        except ValueError:
            continue
        subnets.append((str(iface.network), ip.get("gateway") or ""))
        if iface.version == 4 and not address:
            address, prefix = str(iface.ip), iface.network.prefixlen
    return CniAttachment(
        sandbox_id=doc.get("containerId") or "",
        network=name,
        bridge=host_side[0] if len(host_side) > 1 else "",
        subnets=tuple(sorted(set(subnets))),
        endpoint=Endpoint(
            network=name,
            network_id=cni_network_id(name),
            mac=inside[0].get("mac", "") if inside else "",
            ipv4=address,
            ipv4_prefix=prefix,
        ),
    )


def cni_network_id(name: str) -> str:
    return f"cni:{name}"


def cni_networks(
    attachments: Iterable[CniAttachment], runtime: str = "containerd"
) -> list[Network]:
    """The CNI networks the cached results show, with their bridges. Their NAT (the bridge
    plugin's ipMasq chains) is not attributed: no MASQUERADE rule is expected of them."""
    by_name: dict[str, tuple[str, set]] = {}
    for a in attachments:
        bridge, subnets = by_name.setdefault(a.network, (a.bridge, set()))
        subnets.update(a.subnets)
        if a.bridge and not bridge:
            by_name[a.network] = (a.bridge, subnets)
    return [
        Network(
            id=cni_network_id(name),
            name=name,
            driver="bridge" if bridge else "cni",
            bridge=bridge,
            subnets=tuple(sorted(subnets)),
            masquerade=False,
            runtime=runtime,
        )
        for name, (bridge, subnets) in sorted(by_name.items())
    ]


def attachments(directory: str = RESULTS, sandbox_id: str = "") -> list[CniAttachment]:
    """The cached CNI results (of one sandbox); none where the cache cannot be read."""
    try:
        names = os.listdir(directory)
    except OSError:
        return []
    out = []
    for name in names:
        if sandbox_id and f"-{sandbox_id}-" not in name:
            continue
        try:
            with open(os.path.join(directory, name)) as f:
                found = parse_cni_result(json.load(f))
        except (OSError, ValueError):
            continue
        if found is not None and (not sandbox_id or found.sandbox_id == sandbox_id):
            out.append(found)
    return out
