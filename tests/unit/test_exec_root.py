"""--docker.exec-root: where Docker keeps netns/, handed from the flag to the Docker source and from
the sources to the state's namespace scan."""

from __future__ import annotations

from exporter.app import flags, runtimes
from exporter.sources.kernel.netlink import Netlink
from exporter.sources.kernel.procfs import Procfs
from exporter.sources.runtimes.docker import DockerSource
from exporter.state.loader import DOCKER_NETNS_DIR, NAMED_NETNS_DIR, StateLoader


def docker_source(*argv: str) -> DockerSource:
    p = flags.Parser()
    flags.add_source_flags(p)
    args = p.parse_args(["--podman.host=", "--cri.endpoint=", *argv])
    (source,) = runtimes.from_args(args)
    assert isinstance(source, DockerSource)
    return source


def test_default_is_dockers_own_exec_root():
    assert docker_source().netns_dir == "/var/run/docker/netns" == DOCKER_NETNS_DIR


def test_flag_moves_the_netns_directory():
    assert (
        docker_source("--docker.exec-root=/run/node-a/exec/").netns_dir == "/run/node-a/exec/netns"
    )


def test_state_scans_the_sources_netns_directory(tmp_path):
    netns = tmp_path / "netns"
    netns.mkdir()
    (netns / "1-abcdefghij").write_text("")  # not a namespace: listed, with no id
    source = docker_source(f"--docker.exec-root={tmp_path}")
    with Netlink() as netlink:
        reader = StateLoader(netlink, [source], Procfs())
        assert reader.netns_dirs == (str(netns), NAMED_NETNS_DIR)
        state = reader.full(runtimes=False)
    assert state.docker_netns_dir == str(netns)
    assert state.netns_files[f"{netns}/1-abcdefghij"][1] is None
    assert state.overlay_netns == {}
