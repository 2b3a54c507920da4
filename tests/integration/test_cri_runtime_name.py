"""A CRI runtime is named as it names itself in the CRI's Version (containerd, cri-o): in
dockernet_runtime_up, dockernet_runtime_events_info and every pod's `runtime` label. CRI-O cannot
run here, so a CRI endpoint answering as CRI-O does stands in for it (a real gRPC server)."""

from __future__ import annotations

import pytest
from fake_runtimes import FakeCri, version_answer

from exporter.sources.runtimes.cri import CriSource
from helpers import wait_for


@pytest.fixture
def crio(tmp_path):
    answers = {
        "Version": lambda _r: version_answer("cri-o"),
        "ListPodSandbox": lambda _r: b"",
        "ListContainers": lambda _r: b"",
    }
    cri = FakeCri(str(tmp_path / "crio.sock"), answers).start()
    yield cri
    cri.stop()


def test_a_cri_runtime_is_labelled_with_the_name_it_reports(exporter, crio):
    e = exporter(
        "--docker.host=",
        "--podman.host=",
        f"--cri.endpoint=unix://{crio.path}",
        "--cri.events=poll",
    )
    m = wait_for(
        lambda: (m := e.metrics()).get_value("dockernet_runtime_up", runtime="cri-o") == 1 and m,
        what="cri-o up",
    )
    runtimes = {l["runtime"] for l, _ in m.get("dockernet_runtime_up", ())}
    assert runtimes == {"cri-o"}
    assert m.get_value("dockernet_runtime_events_info", runtime="cri-o", mode="poll") == 1


def test_a_cri_runtime_not_answering_yet_is_named_by_its_socket(tmp_path):
    for path, name in (("crio/crio.sock", "cri-o"), ("containerd/containerd.sock", "containerd")):
        source = CriSource(f"unix://{tmp_path / path}", timeout=1.0)
        try:
            assert source.runtime == name
        finally:
            source.close()
