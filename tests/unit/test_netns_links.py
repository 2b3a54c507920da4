"""`netns visible` planning: idempotent, removes only its own links, cleans
links of containers and Docker namespaces that are gone; what each of Docker's
own namespaces is."""

from __future__ import annotations

from exporter.commands.netns import (
    Candidate,
    Entry,
    chosen,
    docker_candidates,
    matches,
    plan,
    workload_candidate,
)
from exporter.core.model import Network, Workload

DOCKER_NETNS = "/var/run/docker/netns"
OV = Network("h2qftybqtzq1opvy0sy4r7tln", "ov", "overlay")
INGRESS = Network("lh6pz0gqw3mhgqvspnk2kfwno", "ingress", "overlay")
BRIDGE = Network("b" * 64, "bridge", "bridge", bridge="docker0")


def c(name: str, pid: int) -> Candidate:
    return workload_candidate(Workload(id=name[0] * 64, name=name, pid=pid))


def test_first_run_links_every_container():
    remove, keep, create, skipped = plan([], [c("web", 10), c("db", 11)], {})
    assert (remove, keep, skipped) == ([], [], [])
    assert [(e.name, e.target) for e in create] == [
        ("web", "/proc/10/ns/net"),
        ("db", "/proc/11/ns/net"),
    ]


def test_second_run_keeps_everything():
    record = [Entry("web", "w" * 64, "web", "/proc/10/ns/net")]
    remove, keep, create, _ = plan(record, [c("web", 10)], {"web": "/proc/10/ns/net"})
    assert (remove, keep, create) == ([], record, [])


def test_gone_or_restarted_containers_lose_their_links():
    record = [
        Entry("web", "w" * 64, "web", "/proc/10/ns/net"),
        Entry("db", "d" * 64, "db", "/proc/11/ns/net"),
    ]
    on_disk: dict[str, str | None] = {"web": "/proc/10/ns/net", "db": "/proc/11/ns/net"}
    remove, keep, create, _ = plan(record, [c("web", 20)], on_disk)  # web restarted, db gone
    assert {e.name for e in remove} == {"web", "db"}
    assert keep == [] and [(e.name, e.target) for e in create] == [("web", "/proc/20/ns/net")]


def test_foreign_names_are_never_touched():
    record = [Entry("web", "w" * 64, "web", "/proc/10/ns/net")]
    # Someone replaced our link with a namespace of `ip netns add`; another name is taken too.
    on_disk: dict[str, str | None] = {"web": None, "db": None}
    remove, keep, create, skipped = plan(record, [c("db", 11)], on_disk)
    assert remove == [] and keep == []
    assert [(e.name, e.container_id) for e in create] == [
        ("dddddddddddd", "d" * 64)
    ]  # the short id instead
    _, _, create, skipped = plan([], [c("db", 11)], {"db": None, "dddddddddddd": None})
    assert create == [] and [s.container_name for s in skipped] == ["db"]


def test_selected_containers_only_but_stale_links_of_others_go():
    record = [Entry("old", "o" * 64, "old", "/proc/9/ns/net")]
    remove, _, create, _ = plan(
        record, [c("web", 10), c("db", 11)], {"old": "/proc/9/ns/net"}, {c("web", 10).key}
    )
    assert [e.name for e in remove] == ["old"] and [e.name for e in create] == ["web"]


def test_matches_by_name_or_id_prefix():
    assert matches("abcdef" + "0" * 58, "web", ["web"])
    assert matches("abcdef" + "0" * 58, "web", ["abcd"])
    assert not matches("abcdef" + "0" * 58, "web", ["abc"])  # too short to be an id prefix


def test_docker_namespaces_are_told_apart_by_their_file_names():
    files = ["1-h2qftybqtz", "lb_h2qftybqt", "ingress_sbox", "1-lh6pz0gqw3", "0a1b2c3d4e5f", "x"]
    found = docker_candidates(files, DOCKER_NETNS + "/", [OV, INGRESS, BRIDGE])
    assert [(f.names, f.kind, f.network, f.target) for f in found] == [
        (("1-h2qftybqtz",), "overlay", "ov", f"{DOCKER_NETNS}/1-h2qftybqtz"),
        (("1-lh6pz0gqw3",), "overlay", "ingress", f"{DOCKER_NETNS}/1-lh6pz0gqw3"),
        (("ingress_sbox",), "routing-mesh", "ingress", f"{DOCKER_NETNS}/ingress_sbox"),
        (("lb_h2qftybqt",), "load-balancer", "ov", f"{DOCKER_NETNS}/lb_h2qftybqt"),
    ]  # a container's sandbox (12 hex digits) is linked by its container; other files never
    assert all(f.container_id == "" for f in found)
    # A namespace whose network Docker no longer lists is still one of Docker's own: linked too.
    (leaked,) = docker_candidates(["9-dnxleak000"], DOCKER_NETNS, [OV])
    assert (leaked.kind, leaked.network) == ("overlay", "")


def test_docker_namespaces_are_linked_by_file_name_and_unlinked_when_gone():
    ov, lb = docker_candidates(["1-h2qftybqtz", "lb_h2qftybqt"], DOCKER_NETNS, [OV])
    remove, keep, create, _ = plan([], [c("web", 10), ov, lb], {})
    assert [(e.name, e.kind, e.target) for e in create] == [
        ("web", "container", "/proc/10/ns/net"),
        ("1-h2qftybqtz", "overlay", f"{DOCKER_NETNS}/1-h2qftybqtz"),
        ("lb_h2qftybqt", "load-balancer", f"{DOCKER_NETNS}/lb_h2qftybqt"),
    ]
    on_disk: dict[str, str | None] = {e.name: e.target for e in create}
    remove, keep, create, _ = plan(keep + create, [c("web", 10), ov], on_disk)  # lb_ gone
    assert [e.name for e in remove] == ["lb_h2qftybqt"] and create == []
    assert [e.name for e in keep] == ["web", "1-h2qftybqtz"]


def test_named_by_container_or_by_the_namespace_file_or_network():
    ov, lb = docker_candidates(["1-h2qftybqtz", "lb_h2qftybqt"], DOCKER_NETNS, [OV])
    web = c("web", 10)
    assert [x.names[0] for x in (web, ov, lb) if chosen(x, ["ov"])] == [
        "1-h2qftybqtz",
        "lb_h2qftybqt",
    ]
    assert [x.names[0] for x in (web, ov, lb) if chosen(x, ["lb_h2qftybqt"])] == ["lb_h2qftybqt"]
    assert [x.names[0] for x in (web, ov, lb) if chosen(x, ["web"])] == ["web"]
    assert chosen(Entry("1-h2qftybqtz", "", "", ov.target, "overlay", "ov"), ["ov"])
    assert not chosen(Entry("web", web.container_id, "web", web.target), ["ov"])


def test_a_record_written_before_docker_namespaces_were_linked_still_loads():
    e = Entry(
        **{
            "name": "web",
            "container_id": "w" * 64,
            "container_name": "web",
            "target": "/proc/10/ns/net",
        }
    )
    assert (e.kind, e.network) == ("container", "")
