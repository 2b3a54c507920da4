"""The start-up probe of the default CRI socket (exporter/sources/runtimes/grpc_probe.py), on the replies
recorded from this machine's containerds to one Version call made by grpc_probe.request: Docker's
own (its CRI plugin disabled) and the test containerd with its CRI plugin."""

from __future__ import annotations

from pathlib import Path

from exporter.sources.runtimes import grpc_probe as g

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "grpc"
METHOD = "/runtime.v1.RuntimeService/Version"
WITHOUT_CRI = (FIXTURES / "version-without-cri.bin").read_bytes()
CRI = (FIXTURES / "version-cri.bin").read_bytes()


def test_a_containerd_without_the_cri_ends_the_call_with_trailers_only():
    assert g.verdict(g.frames(WITHOUT_CRI), METHOD) == f"answers gRPC but not {METHOD}"


def test_the_cri_answers_a_message():
    assert g.verdict(g.frames(CRI), METHOD) is None


def test_a_reply_cut_anywhere_decides_nothing_until_its_deciding_frame_is_whole():
    for recorded, decided in ((WITHOUT_CRI, f"answers gRPC but not {METHOD}"), (CRI, None)):
        verdicts = [g.verdict(g.frames(recorded[:n]), METHOD) for n in range(len(recorded) + 1)]
        first = verdicts.index(decided)
        assert set(verdicts[:first]) == {""} and set(verdicts[first:]) == {decided}
        assert first == len(recorded) - (24 + 9 if recorded is CRI else 0)


def test_a_refused_stream_or_a_closed_connection_is_said():
    assert "refused" in (g.verdict([(g.RST_STREAM, 0, 1, b"\0\0\0\x07")], METHOD) or "")
    assert "closed the connection" in (g.verdict([(g.GOAWAY, 0, 0, bytes(8))], METHOD) or "")
    assert g.verdict([(g.DATA, 0, 3, b"x"), (g.HEADERS, g.END_STREAM, 3, b"")], METHOD) == ""


def test_the_request_is_one_call_on_stream_one_with_an_empty_message():
    sent = g.request(METHOD)
    assert sent.startswith(g.PREFACE)
    settings, headers, data = g.frames(sent[len(g.PREFACE) :])
    assert settings == (g.SETTINGS, 0, 0, b"")
    kind, flags, stream, fields = headers
    assert (kind, flags, stream) == (g.HEADERS, g.END_HEADERS, 1)
    assert bytes([len(METHOD)]) + METHOD.encode() in fields
    assert b"\x10application/grpc" in fields and b"\x02te\x08trailers" in fields
    assert data == (g.DATA, g.END_STREAM, 1, bytes(5))
