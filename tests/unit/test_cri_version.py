"""Which runtime answers at a CRI socket is asked once at construction, for the name it is
labelled with, and again only at a subscription that follows a stream that ended (a restarted
runtime, maybe another one). Against a CRI endpoint of the test's own (a real gRPC server on a
unix socket, tests/fake_runtimes.py)."""

from __future__ import annotations

from collections.abc import Iterator

from fake_runtimes import FakeCri, version_answer

from exporter.sources.runtimes import cri
from exporter.sources.runtimes.cri import CriSource

SUBSCRIBE = "/containerd.services.events.v1.Events/Subscribe"


def test_the_first_subscription_reuses_constructions_answer_and_a_later_one_asks_again(
    tmp_path, monkeypatch
):
    monkeypatch.setattr(cri, "NAME_TIMEOUT", 30.0)  # construction's answer, however loaded the host
    names, versions, subscriptions = ["containerd"], [], []

    def version(_request: bytes) -> bytes:
        versions.append(names[-1])
        return version_answer(names[-1])

    def subscribe() -> Iterator[bytes]:
        subscriptions.append(names[-1])
        return iter(())  # ends at once: serves no events, as an unserved stream does

    unary = {"Version": version, "ListPodSandbox": lambda _r: b"", "ListContainers": lambda _r: b""}
    endpoint = FakeCri(str(tmp_path / "cri.sock"), unary, {SUBSCRIBE: subscribe}).start()
    source = CriSource(f"unix://{endpoint.path}", timeout=30.0, poll_interval=3600)
    try:
        assert source.runtime == "containerd" and versions == ["containerd"]
        source.events()
        source.close_events()
        # Asked nothing more; containerd's own events service tried, as on containerd.
        assert versions == ["containerd"] and subscriptions == ["containerd"]
        names.append("cri-o")  # the socket's runtime restarted as another one
        source.events()
        source.close_events()
        # Asked again: a CRI-O is not offered containerd's service; the label stays until restart.
        assert versions == ["containerd", "cri-o"] and subscriptions == ["containerd"]
        assert source.runtime == "containerd"
    finally:
        source.close()
        endpoint.stop()
