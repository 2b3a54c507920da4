"""A leaked CRI namespace's orphan names the pod CNI's cache names for its namespace file: in the
suspect, in dockernet_veth_orphaned's namespace and pod labels, and only where the cache does."""

from __future__ import annotations

import dataclasses

from test_orphan_classification import host, veth

from exporter.core import topology
from exporter.core.model import HostState, PodRef
from exporter.metrics.collectors.orphans import OrphansCollector
from exporter.metrics.exposition import render

CNI_BR = 8
LEAKED = "/var/run/netns/cni-e710389a-f848-4f77-4669-375501417a99"
OTHER = "/var/run/netns/cni-0b4d5d36-9a53-2f7c-1cb9-0ad2a2a3f4a1"
POD = PodRef("shop", "web-7d4b9c")


def leaked_host(cni_pods: dict) -> HostState:
    state = host(
        veth(10, "vethc2038853", 2, nsid=3, master=CNI_BR),
        veth(11, "veth0b4d5d36", 2, nsid=4, master=CNI_BR),
        files={LEAKED: (4026532900, 3), OTHER: (4026532901, 4)},
    )
    state.links[CNI_BR] = dataclasses.replace(state.links[6], ifindex=CNI_BR, name="dncni0")
    state.cni_pods = cni_pods
    return state


def test_the_suspect_names_the_pod_the_cache_names_for_its_namespace():
    snap = topology.build(leaked_host({LEAKED: POD}))
    by_veth = {s.link.name: s for s in snap.suspects}
    assert by_veth["vethc2038853"].reason == "netns_without_container"
    assert by_veth["vethc2038853"].pod == POD
    assert by_veth["veth0b4d5d36"].pod is None  # the cache has nothing for that one


def test_the_orphan_metric_carries_namespace_and_pod_where_known():
    snap = topology.build(leaked_host({LEAKED: POD}), now=0.0)
    text = render(OrphansCollector(grace=0.0, clock=lambda: 1.0).collect(snap))
    assert (
        'dockernet_veth_orphaned{veth="vethc2038853",bridge="dncni0",'
        'reason="netns_without_container",namespace="shop",pod="web-7d4b9c"} 1\n'
    ) in text
    assert (
        'dockernet_veth_orphaned{veth="veth0b4d5d36",bridge="dncni0",'
        'reason="netns_without_container"} 1\n'
    ) in text


def test_a_cache_read_later_is_judged_again_in_an_incremental_build():
    state = leaked_host({})  # the same links (objects) in both builds: only the cache differs
    before = topology.build(state, now=0.0)
    state.cni_pods = {LEAKED: POD}
    after = topology.build(state, before, now=1.0)
    assert {s.link.name: s.pod for s in after.suspects}["vethc2038853"] == POD
    assert after.suspect_since == before.suspect_since  # still the same suspect, since then
