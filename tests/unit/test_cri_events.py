"""The CRI source's event modes without a runtime: which modes auto tries on which runtime, the
poll diff on listings recorded from the real containerd (tests/fixtures/record_cri.py) through a
pod's lifecycle, and the CRI's own events (built with the generated classes) read into the same
WorkloadEvents."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from exporter.app import flags
from exporter.sources.runtimes import cri_api, cri_events
from exporter.sources.runtimes.cri_events import AUTO, CONTAINERD, CRI, POLL
from exporter.sources.runtimes.proto import cri_pb2 as pb
from exporter.sources.runtimes.workloads import Effect

RECORDED = Path(__file__).resolve().parent.parent / "fixtures" / "cri"
STEPS = json.loads((RECORDED / "steps.json").read_text())


def test_auto_tries_containerds_service_only_on_containerd_then_the_cri_then_polls():
    assert cri_events.candidates(AUTO, "containerd") == (CONTAINERD, CRI, POLL)
    assert cri_events.candidates(AUTO, "cri-o") == (CRI, POLL)
    assert cri_events.candidates(CONTAINERD, "cri-o") == (CONTAINERD, POLL)
    assert cri_events.candidates(CRI, "containerd") == (CRI, POLL)
    assert cri_events.candidates(POLL, "containerd") == (POLL,)


def test_actions_of_each_mode_and_the_flags_choices():
    assert cri_events.actions(POLL) == ("poll_changed", "poll_gone")
    assert set(cri_events.actions(CRI)) == {*cri_events.CRI_KINDS, "poll_changed", "poll_gone"}
    assert len(cri_events.actions(AUTO)) == 9
    assert flags.CRI_EVENT_MODES == cri_events.MODES
    assert cri_events.CRI_KINDS[1] == "CONTAINER_STARTED_EVENT"


def recorded(step: int) -> cri_events.Listing:
    sandboxes = cri_api.parse_sandboxes((RECORDED / f"{step}-sandboxes.bin").read_bytes())
    containers = cri_api.parse_containers((RECORDED / f"{step}-containers.bin").read_bytes())
    return cri_events.listing(sandboxes, containers)


def pod_ids() -> dict[str, str]:
    """Pod name -> sandbox id, from the recordings."""
    data = (RECORDED / "2-sandboxes.bin").read_bytes()
    return {s.name: s.id for s in cri_api.parse_sandboxes(data)}


def test_recorded_listings_are_the_steps():
    ids = pod_ids()
    web, db = ids["web"], ids["db"]
    assert STEPS[3] == "web runs side" and len(recorded(3)[web][1]) == 2
    assert recorded(4)[web] == recorded(2)[web]  # side exited: app alone again
    assert recorded(5)[db] == (False, frozenset())  # stopped: not ready, nothing running
    assert db not in recorded(6)


@pytest.mark.parametrize(
    ("step", "wanted"),
    [
        (1, [("poll_changed", "web")]),  # web runs app
        (2, [("poll_changed", "db")]),  # db runs app
        (3, [("poll_changed", "web")]),  # web's second container started
        (4, [("poll_changed", "web")]),  # and exited
        (5, [("poll_changed", "db")]),  # db stopped: looked up again, then dropped
        (6, [("poll_gone", "db")]),  # db removed
    ],
    ids=lambda v: STEPS[v] if isinstance(v, int) else "",
)
def test_each_step_of_the_lifecycle_is_one_event_of_its_pod(step, wanted):
    names = {i: n for n, i in pod_ids().items()}
    events = cri_events.diff(recorded(step - 1), recorded(step), 12.5)
    assert [(e.action, names[e.workload_id]) for e in events] == wanted
    assert all(e.time == 12.5 for e in events)
    effects = {"poll_changed": Effect.CHANGED, "poll_gone": Effect.GONE}
    assert all(e.effect is effects[e.action] for e in events)


def test_no_change_no_event_and_gaps_are_summed_up():
    for step in range(len(STEPS)):
        assert cri_events.diff(recorded(step), recorded(step), 0) == []
    ids = pod_ids()
    # From nothing to both pods running; from both to web alone (db never seen stopped).
    assert [e.workload_id for e in cri_events.diff(recorded(0), recorded(3), 0)] == sorted(
        ids.values()
    )
    assert [(e.action, e.workload_id) for e in cri_events.diff(recorded(3), recorded(6), 0)] == [
        ("poll_gone", ids["db"]),
        ("poll_changed", ids["web"]),
    ]


def container_event(kind: pb.ContainerEventType, container_id: str, sandbox_id: str = "") -> bytes:
    msg = pb.ContainerEventResponse(
        container_id=container_id,
        container_event_type=kind,
        created_at=1_700_000_000_250_000_000,
        containers_statuses=[pb.ContainerStatus(id="c1", state=pb.CONTAINER_RUNNING)],
    )
    if sandbox_id:
        msg.pod_sandbox_status.id = sandbox_id
        msg.pod_sandbox_status.metadata.name = "web"
    return msg.SerializeToString()


def test_cri_events_concern_their_pod():
    started = cri_api.parse_container_event(
        container_event(pb.CONTAINER_STARTED_EVENT, "c1", "sb1")
    )
    assert started == cri_api.CriEvent("CONTAINER_STARTED_EVENT", "c1", "sb1", 1700000000.25)
    event = cri_events.from_cri_event(started)
    assert (event.action, event.effect, event.workload_id) == (
        "CONTAINER_STARTED_EVENT",
        Effect.CHANGED,
        "sb1",
    )
    assert event.time == 1700000000.25
    # A container deleted from a live pod changes the pod; the sandbox's own deletion ends it.
    deleted = cri_api.parse_container_event(
        container_event(pb.CONTAINER_DELETED_EVENT, "c1", "sb1")
    )
    assert cri_events.from_cri_event(deleted).effect is Effect.CHANGED
    for sandbox_status in ("sb1", ""):  # a deleted sandbox may come without its status
        gone = cri_api.parse_container_event(
            container_event(pb.CONTAINER_DELETED_EVENT, "sb1", sandbox_status)
        )
        assert (cri_events.from_cri_event(gone).effect, gone.sandbox_id) == (
            Effect.GONE,
            sandbox_status,
        )
    # Without a sandbox status a container's event names the container: the lookup finds its pod.
    bare = cri_api.parse_container_event(container_event(pb.CONTAINER_STOPPED_EVENT, "c1"))
    assert cri_events.from_cri_event(bare).workload_id == "c1"
    assert cri_events.from_cri_event(bare).effect is Effect.CHANGED
