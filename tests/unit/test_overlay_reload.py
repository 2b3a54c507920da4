"""When the state reads overlay namespaces again, on the recorded single-node swarm: a container's
start or stop dumps the overlays its veths lead into, not every overlay on the node; a Swarm
sandbox's file that comes or goes makes every overlay stale (its veths are endpoints on their br0);
a namespace file of a container's alone reads no overlay."""

from __future__ import annotations

import os
from pathlib import Path
from typing import cast

from recorded import links_from
from test_overlay_recorded import RECORDED, recorded_state

from exporter.core.model import HostState
from exporter.sources.kernel.netlink import Netlink
from exporter.sources.kernel.procfs import Procfs
from exporter.state.loader import StateLoader


class RecordedNetlink:
    """Each namespace's recorded links by id, and the ids of the files in `ids` by inode."""

    def __init__(self, ids: dict[int, int | None] | None = None) -> None:
        self.ids = ids or {}
        self.dumped: list[int] = []

    def links(self, nsid: int | None = None) -> list:
        assert nsid is not None
        self.dumped.append(nsid)
        return list(links_from(RECORDED / f"netns-{nsid}-links.bin").values())

    def addresses(self, nsid: int | None = None) -> list:
        return []

    def netnsid(self, fd: int, assign: bool = False) -> int | None:
        return self.ids.get(os.fstat(fd).st_ino)


def loader(netlink: RecordedNetlink, netns_dir: str = "") -> StateLoader:
    reader = StateLoader(cast(Netlink, netlink), (), Procfs("/nonexistent"))
    if netns_dir:
        reader.docker_netns_dir, reader.netns_dirs = (
            netns_dir,
            (netns_dir, f"{netns_dir}/no-named-netns"),
        )
    return reader


def overlays(state: HostState) -> dict[str, int]:
    """Overlay network name (from its file name's prefix) -> its namespace's id."""
    return {
        next(n.name for n in state.networks.values() if n.id.startswith(name.split("-")[1])): nsid
        for nsid, name in state.overlay_netns.items()
    }


def test_a_containers_start_and_stop_dump_its_own_overlays_only():
    state = recorded_state()
    ov = overlays(state)
    assert set(ov) == {"ov", "ingress"}
    c1 = next(c for c in state.containers.values() if c.name == "c1")  # on ov only
    netlink = RecordedNetlink()
    reader = loader(netlink)

    assert reader.remove_container(state, c1.id)
    assert netlink.dumped == [ov["ov"]]
    netlink.dumped.clear()
    reader.add_container(state, c1)
    assert netlink.dumped == [c1.nsid, ov["ov"]]


def test_a_new_containers_file_reads_no_overlay_and_a_sandboxs_file_every_one(
    tmp_path: Path,
) -> None:
    state = recorded_state()
    ids: dict[int, int | None] = {}
    files = {}
    for path, (_inode, nsid) in state.netns_files.items():
        copy = tmp_path / os.path.basename(path)
        copy.touch()
        ids[copy.stat().st_ino] = nsid
        files[str(copy)] = (copy.stat().st_ino, nsid)
    state.netns_files, state.docker_netns_dir = files, str(tmp_path)
    netlink = RecordedNetlink(ids)
    reader = loader(netlink, str(tmp_path))
    reader.reload_netns_files(state)
    assert netlink.dumped == []  # nothing new: every overlay read already

    (tmp_path / "0123456789ab").touch()  # a new container's sandbox
    reader.reload_netns_files(state)
    assert netlink.dumped == [] and str(tmp_path / "0123456789ab") in state.netns_files

    (tmp_path / "lb_wxp0shoh5").unlink()  # a Swarm sandbox goes: its veths on br0 with it
    reader.reload_netns_files(state)
    assert sorted(netlink.dumped) == sorted(state.overlay_netns)
