"""`netns visible` planning: idempotent, removes only its own links, cleans
links of containers that are gone."""

from __future__ import annotations

from exporter.commands.netns import Entry, matches, plan
from exporter.core.model import Workload


def c(name: str, pid: int) -> Workload:
    return Workload(id=name[0] * 64, name=name, pid=pid)


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
    assert create == [] and [s.name for s in skipped] == ["db"]


def test_selected_containers_only_but_stale_links_of_others_go():
    record = [Entry("old", "o" * 64, "old", "/proc/9/ns/net")]
    remove, _, create, _ = plan(
        record, [c("web", 10), c("db", 11)], {"old": "/proc/9/ns/net"}, {"w" * 64}
    )
    assert [e.name for e in remove] == ["old"] and [e.name for e in create] == ["web"]


def test_matches_by_name_or_id_prefix():
    assert matches("abcdef" + "0" * 58, "web", ["web"])
    assert matches("abcdef" + "0" * 58, "web", ["abcd"])
    assert not matches("abcdef" + "0" * 58, "web", ["abc"])  # too short to be an id prefix
