"""Fills a HostState from the sources: the I/O half of the join.

Used whole by a resync (and by the one-shot CLI) and piece by piece by the
daemon as events arrive. The workload sources say which workloads run and
where their namespaces are; the kernel side (links, namespace ids and the
links inside each namespace) is read here, the same for every runtime.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Collection, Sequence

from exporter import logs
from exporter.core import overlay
from exporter.core.model import HostState, Link, Workload
from exporter.sources.kernel.netlink import Netlink
from exporter.sources.kernel.procfs import Procfs
from exporter.sources.runtimes import cni_cache
from exporter.sources.runtimes.workloads import (
    EXPECTED,
    WorkloadSource,
    describe,
)

log = logs.get_logger()

# Where `ip netns add` keeps its namespaces, bind-mounted on files; Docker's are under its exec root
# (a source's `netns_dir`), by default in DOCKER_NETNS_DIR.
NAMED_NETNS_DIR = "/var/run/netns"
DOCKER_NETNS_DIR = HostState.docker_netns_dir


class StateLoader:
    def __init__(self, netlink: Netlink, sources: Sequence[WorkloadSource], procfs: Procfs) -> None:
        self.netlink = netlink
        self.sources = sources
        self.procfs = procfs
        dirs = [s.netns_dir for s in sources or () if s.netns_dir]
        self.docker_netns_dir = dirs[0] if dirs else DOCKER_NETNS_DIR
        self.netns_dirs = (self.docker_netns_dir, NAMED_NETNS_DIR)

    def full(self, previous: HostState | None = None, runtimes: bool = True) -> HostState:
        """Everything, read afresh (only the kernel's side without `runtimes`). A runtime that does
        not answer contributes no workloads."""
        state = HostState(
            host_netns_inode=self.procfs.host_netns_inode(),
            pod_runtimes=frozenset(s.runtime for s in self.sources if s.has_pods),
            docker_netns_dir=self.docker_netns_dir,
        )
        self.reload_links(state, previous.first_seen if previous else None)
        self.reload_netns_files(state, previous.netns_files if previous else None)
        state.cni_pods = cni_cache.read()  # what names a pod whose runtime lost it
        for source in self.sources if runtimes else ():
            self.read_runtime(state, source)
        return state

    def reread(self, known: HostState) -> HostState:
        """The kernel's side afresh, with the workloads, networks and runtimes' health `known` (each
        runtime's own listing replaces its part), their namespaces looked up again."""
        state = self.full(known, runtimes=False)
        state.networks, state.runtimes_up = dict(known.networks), dict(known.runtimes_up)
        for c in known.containers.values():
            self.add_container(state, c)
        return state

    def read_runtime(self, state: HostState, source: WorkloadSource) -> None:
        """One runtime's listing into `state`; an error of any kind is that runtime's alone."""
        try:
            networks = source.networks()
            workloads = source.workloads()
        except EXPECTED as exc:
            log.debug("runtime_read_failed", runtime=source.runtime, error=describe(exc))
            state.runtimes_up[source.runtime] = False
            return
        except Exception as exc:
            log.error(
                "runtime_read_failed", runtime=source.runtime, error=describe(exc), exc_info=exc
            )
            state.runtimes_up[source.runtime] = False
            return
        state.runtimes_up[source.runtime] = True
        state.networks.update((n.id, n) for n in networks)
        for c in workloads:
            self.add_container(state, c)

    def reload_links(self, state: HostState, first_seen: dict | None = None) -> None:
        now = time.monotonic()
        state.links = {l.ifindex: l for l in self.netlink.links()}
        old = first_seen or {}
        state.first_seen = {i: old.get(i, now) for i in state.links}

    def add_container(self, state: HostState, c: Workload) -> Workload:
        """Record a running container with its namespace identity and links."""
        self.remove_container(state, c.id)
        c = self._with_namespace(c)
        state.containers[c.id] = c
        if c.nsid is not None:
            self.load_netns(state, c.nsid)
            self._follow_overlays(state, c.nsid)
        return c

    def remove_container(self, state: HostState, container_id: str) -> bool:
        """Forget a container; whether it was known."""
        gone = state.containers.pop(container_id, None)
        shared = gone is not None and any(c.nsid == gone.nsid for c in state.containers.values())
        if gone is not None and gone.nsid is not None and not shared:
            on_overlay = self._overlay_peers(state, gone.nsid) & state.overlay_netns.keys()
            state.netns_links.pop(gone.nsid, None)
            state.netns_addresses.pop(gone.nsid, None)
            if on_overlay:
                self.reload_overlays(state, on_overlay)
        return gone is not None

    def _follow_overlays(self, state: HostState, nsid: int) -> None:
        """A namespace with a veth whose peer is in an overlay namespace (or in one not seen yet):
        read those overlay namespaces again, their endpoints changed."""
        peers = self._overlay_peers(state, nsid)
        if peers - state.overlay_netns.keys():
            self.reload_netns_files(state, stale=peers)
        elif peers:
            self.reload_overlays(state, peers)

    @staticmethod
    def _overlay_peers(state: HostState, nsid: int) -> set[int]:
        """The namespaces (by id) of the peers of that namespace's veths, but the host's: a peer in
        the host is a host veth that names this end."""
        out = set()
        for link in state.netns_links.get(nsid, {}).values():
            peer = state.links.get(link.peer_ifindex)
            in_host = (
                peer is not None and peer.peer_netnsid == nsid and peer.peer_ifindex == link.ifindex
            )
            if link.kind == "veth" and link.peer_netnsid is not None and not in_host:
                out.add(link.peer_netnsid)
        return out

    def reload_overlays(self, state: HostState, stale: Collection[int] = ()) -> None:
        """Docker's overlay namespaces (core/overlay.py), from their files' ids: those not read yet
        and those `stale` dumped afresh, those whose file is gone forgotten. One dump per overlay
        whose endpoints changed, not one per overlay on the node: a container's start reads its own
        overlays only."""
        names = overlay.namespace_files(state.netns_files, state.docker_netns_dir)
        for nsid in state.overlay_netns.keys() - names.keys():
            state.netns_links.pop(nsid, None)
            state.netns_addresses.pop(nsid, None)
        state.overlay_netns = names
        for nsid in names:
            if nsid in stale or nsid not in state.netns_links:
                self.load_netns(state, nsid)

    def load_netns(self, state: HostState, nsid: int) -> None:
        """Dump the links and addresses of one container namespace by its id."""
        try:
            state.netns_links[nsid] = {l.ifindex: l for l in self.netlink.links(nsid)}
            state.netns_addresses[nsid] = tuple(self.netlink.addresses(nsid))
        except OSError as exc:  # the namespace went away between the event and the dump
            log.debug("netns_dump_failed", nsid=nsid, error=str(exc))
            state.netns_links.pop(nsid, None)
            state.netns_addresses.pop(nsid, None)

    def apply_link(self, state: HostState, action: str, link: Link) -> None:
        if action == "port":
            old = state.links.get(link.ifindex)
            if old is not None and old.master == link.master:
                state.links[link.ifindex] = dataclasses.replace(old, port_state=link.port_state)
            return
        if action == "delete":
            state.links.pop(link.ifindex, None)
            state.first_seen.pop(link.ifindex, None)
            return
        state.links[link.ifindex] = link
        state.first_seen.setdefault(link.ifindex, time.monotonic())
        self._complete_peer(state, link)
        nsid = link.peer_netnsid
        if link.kind == "veth" and nsid in state.netns_links and self._release_id(state, nsid):
            self.reload_netns_files(state)  # the id names another namespace now: whose file?
        elif link.kind == "veth" and nsid in state.overlay_netns:
            # Into an overlay's namespace, or one that has its id now: an overlay's file goes with no
            # event, and the kernel gives its id again.
            self.reload_netns_files(state)
        elif link.kind == "veth" and nsid is not None and nsid in state.netns_links:
            if link.peer_ifindex not in state.netns_links[nsid]:
                self.load_netns(
                    state, nsid
                )  # a new interface in a known container (network connect)
        elif (
            link.kind == "veth"
            and nsid is not None
            and nsid not in {n for _, n in state.netns_files.values()}
        ):
            self.reload_netns_files(state)  # a namespace not seen yet: whose file is it?

    def _release_id(self, state: HostState, nsid: int) -> bool:
        """Whether workloads held that namespace id though their namespace is gone: the kernel
        gives a freed id to the next namespace, and a stopped sandbox that its runtime lists still
        must not own that namespace's veth. They keep no id; its links and addresses go."""
        gone = [c for c in state.containers.values() if c.nsid == nsid and not self._lives(c)]
        for c in gone:
            state.containers[c.id] = dataclasses.replace(c, nsid=None)
        if gone and all(c.nsid != nsid for c in state.containers.values()):
            state.netns_links.pop(nsid, None)
            state.netns_addresses.pop(nsid, None)
        return bool(gone)

    def _lives(self, c: Workload) -> bool:
        """Whether the namespace a workload was found in is still where it was found."""
        if c.netns_path:
            try:
                inode: int | None = os.stat(c.netns_path).st_ino
            except OSError:
                inode = None
        else:
            inode = self.procfs.netns_inode(c.pid) if c.pid else None
        return inode is not None and inode == c.netns_inode

    @staticmethod
    def _complete_peer(state: HostState, link: Link) -> None:
        """The first end of a new pair is announced before its peer exists, without IFLA_LINK: fill it in."""
        if link.kind == "veth" and link.peer_netnsid is None and link.peer_ifindex:
            peer = state.links.get(link.peer_ifindex)
            if (
                peer is not None
                and peer.kind == "veth"
                and not peer.peer_ifindex
                and peer.peer_netnsid is None
            ):
                state.links[peer.ifindex] = dataclasses.replace(peer, peer_ifindex=link.ifindex)

    def reload_netns_files(
        self, state: HostState, known: dict | None = None, stale: Collection[int] = ()
    ) -> None:
        """The namespace files of Docker and of `ip netns`, with the id the host gives each; then
        the overlay namespaces among them not read yet, and those `stale`. A Swarm sandbox's file
        that comes or goes makes every overlay stale (its veths are endpoints on their br0).

        Only files not seen before (same path and inode, with an id) are opened.
        """
        known = state.netns_files if known is None else known
        files = {}
        for directory in self.netns_dirs:
            try:
                names = os.listdir(directory)
            except OSError:
                continue
            for name in names:
                path = f"{directory}/{name}"
                try:
                    inode = os.stat(path).st_ino
                except OSError:  # a dangling link or a file removed meanwhile
                    continue
                old = known.get(path)
                if old is not None and old[0] == inode and old[1] is not None:
                    files[path] = old
                else:
                    # An overlay's links are dumped by its id, and its endpoints' peers are told
                    # apart by theirs: ids are allocated, as for workloads.
                    assign = directory == self.docker_netns_dir and (
                        bool(overlay.namespace_prefix(name)) or overlay.is_sandbox(name)
                    )
                    files[path] = (inode, self._namespace(path, assign)[1])
        if any(
            overlay.is_sandbox(os.path.basename(path))
            for path in files.keys() ^ known.keys() | {p for p in files if files[p] != known.get(p)}
        ):
            stale = state.overlay_netns.keys() | set(stale)
        state.netns_files = files
        self.reload_overlays(state, stale)

    def _with_namespace(self, c: Workload) -> Workload:
        path = c.netns_path or (self.procfs.netns_path(c.pid) if c.pid else "")
        if not path:
            return c
        inode, nsid = self._namespace(path, assign=True)
        return c if inode is None else dataclasses.replace(c, netns_inode=inode, nsid=nsid)

    def _namespace(self, path: str, assign: bool = False) -> tuple[int | None, int | None]:
        """(inode, id the host gives it) of the network namespace bound at `path`: (None, None) when it
        cannot be opened; no id for the host's own namespace, or when none can be had (with `assign`,
        one is allocated: a namespace's links are dumped by id)."""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            log.debug("netns_open_failed", path=path, error=str(exc))
            return None, None
        try:
            inode = os.fstat(fd).st_ino
            if inode == self.procfs.host_netns_inode():
                return inode, None
            try:
                return inode, self.netlink.netnsid(fd, assign=assign)
            except OSError as exc:  # not a namespace (an unmounted leftover file)
                log.debug("netnsid_failed", path=path, error=str(exc))
                return inode, None
        finally:
            os.close(fd)
