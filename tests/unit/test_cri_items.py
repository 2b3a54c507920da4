"""CRI list answers are decoded item by item: one item that cannot be decoded (a label that is not
UTF-8, which containerd takes through a raw call) is left out alone and said."""

from __future__ import annotations

import pytest

from exporter.sources.runtimes import cri_api
from exporter.sources.runtimes.proto import cri_pb2 as pb


def sandbox(sandbox_id: str, label: str = "ok") -> pb.PodSandbox:
    meta = pb.PodSandboxMetadata(name=f"p-{sandbox_id}", namespace="n", uid="u")
    return pb.PodSandbox(id=sandbox_id, metadata=meta, labels={"l": label})


def test_an_item_that_is_not_utf8_is_left_out_alone():
    data = pb.ListPodSandboxResponse(
        items=[sandbox("a"), sandbox("b", "PLACEHOLDER"), sandbox("c")]
    ).SerializeToString()
    data = data.replace(b"PLACEHOLDER", b"\xff\xfe-not-utf8")
    said: list[str] = []
    assert [s.id for s in cri_api.parse_sandboxes(data, said.append)] == ["a", "c"]
    assert len(said) == 1 and "PodSandbox" in said[0]


def test_a_container_that_cannot_be_decoded_is_left_out_alone():
    good = pb.Container(id="c1", pod_sandbox_id="a", metadata=pb.ContainerMetadata(name="app"))
    bad = pb.Container(id="PLACEHOLDER")
    data = pb.ListContainersResponse(containers=[good, bad]).SerializeToString()
    data = data.replace(b"PLACEHOLDER", b"\xff\xfe-not-utf8")
    said: list[str] = []
    assert [c.id for c in cri_api.parse_containers(data, said.append)] == ["c1"]
    assert len(said) == 1


@pytest.mark.parametrize(
    "data",
    [b"\xff\xff\xff\xff", b"\x0a\x05ab", b"\x0b", b"\x0a"],
    ids=["endless varint", "short field", "group wire type", "no length"],
)
def test_a_list_answer_that_is_no_message_is_a_value_error(data):
    with pytest.raises(ValueError, match="ListPodSandboxResponse"):
        cri_api.parse_sandboxes(data)


def test_fields_of_every_wire_type_are_skipped():
    item = sandbox("a").SerializeToString()
    # field 2 varint, field 3 fixed64, field 4 fixed32 around field 1 (the item)
    data = (
        b"\x10\x96\x01"
        + b"\x19"
        + bytes(8)
        + b"\x0a"
        + bytes([len(item)])
        + item
        + b"\x25"
        + bytes(4)
    )
    assert [s.id for s in cri_api.parse_sandboxes(data)] == ["a"]
