"""The pods that CNI's cache of results names, by their namespace file: what is left to name a
pod whose runtime no longer lists it (a leaked ``cni-*`` namespace, docs/orphans.md).

Each attachment's result is cached as JSON in ``/var/lib/cni/results/<network>-<sandbox id>-<ifname>``
(kind ``cniCacheV1``) until the runtime tears the network down: ``cniArgs`` holds the pod's
``K8S_POD_NAMESPACE`` and ``K8S_POD_NAME`` as the runtime passed them, and the result's interface
inside the pod names the namespace file (``sandbox``). ``parse`` is pure; ``read`` does the I/O.
"""

from __future__ import annotations

import json
import os

from exporter.core.model import PodRef

RESULTS = "/var/lib/cni/results"


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
