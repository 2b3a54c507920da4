"""The pods CNI's cache names, by namespace file (exporter/sources/runtimes/cni_cache.py), on the results
the test containerd cached for one pod (shop/web-7d4b9c): its eth0 on the bridge network and its
loopback."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from exporter.core.model import PodRef
from exporter.sources.runtimes import cni_cache

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "cni"
NETNS = "/var/run/netns/cni-e710389a-f848-4f77-4669-375501417a99"
POD = PodRef("shop", "web-7d4b9c")


def recorded(prefix: str) -> dict:
    (path,) = FIXTURES.glob(prefix + "-*")
    return json.loads(path.read_text())


def test_a_cached_result_names_its_pod_and_namespace_file():
    assert cni_cache.parse(recorded("dockernet-pods")) == (NETNS, POD)
    assert cni_cache.parse(recorded("cni-loopback")) == (NETNS, POD)


def test_a_result_without_a_pod_or_a_namespace_names_nothing():
    doc = recorded("dockernet-pods")
    assert cni_cache.parse(doc | {"cniArgs": [["IgnoreUnknown", "1"]]}) is None
    assert cni_cache.parse(doc | {"cniArgs": "K8S_POD_NAME=x"}) is None
    assert cni_cache.parse(doc | {"result": {"interfaces": [{"name": "veth1"}]}}) is None
    assert cni_cache.parse(doc | {"kind": "other"}) is None
    assert cni_cache.parse([]) is None


def test_the_top_level_netns_of_newer_caches_and_run_spellings_are_one_path():
    doc = recorded("dockernet-pods") | {"netns": NETNS.removeprefix("/var")}
    assert cni_cache.parse(doc) == (NETNS, POD)


def test_read_keeps_what_parses_and_leaves_the_rest(tmp_path):
    for path in FIXTURES.iterdir():
        shutil.copy(path, tmp_path)
    (tmp_path / "broken-x-eth0").write_text("{not json")
    (tmp_path / "a-directory").mkdir()
    assert cni_cache.read(str(tmp_path)) == {NETNS: POD}
    assert cni_cache.read(str(tmp_path / "missing")) == {}
