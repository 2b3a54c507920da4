"""Plain data that sources return and the topology joins. No I/O here."""

from __future__ import annotations

from dataclasses import dataclass, field

# A counter row: the eight counters of one interface, as /proc/net/dev and rtnetlink both give them.
RX_BYTES, RX_PACKETS, RX_ERRS, RX_DROP, TX_BYTES, TX_PACKETS, TX_ERRS, TX_DROP = range(8)
Counters = tuple[int, int, int, int, int, int, int, int]


@dataclass(frozen=True)
class Link:
    """One network interface as rtnetlink reports it, in one namespace."""

    ifindex: int
    name: str
    kind: str = ""  # veth, bridge, macvlan, ... ("" for physical/lo)
    mac: str = ""
    flags: int = 0
    operstate: str = "unknown"
    master: int = 0  # ifindex of the bridge it is a port of
    peer_ifindex: int = 0  # IFLA_LINK: peer's ifindex, in the peer's namespace
    peer_netnsid: int | None = (
        None  # IFLA_LINK_NETNSID: None when the peer is in the same namespace
    )
    port_state: int | None = None  # bridge port STP state (0 disabled .. 4 blocking)
    stp_state: int | None = None  # bridges only: 0 off, 1 kernel, 2 user
    bridge_id: str = ""  # bridges only: "8000.0242c0a80001"
    mtu: int = 0


@dataclass(frozen=True)
class Address:
    ifindex: int
    family: str  # "ipv4" | "ipv6"
    address: str
    prefix_length: int
    scope: int = 0


@dataclass(frozen=True)
class Endpoint:
    """A container's attachment to one Docker network (from docker inspect)."""

    network: str
    network_id: str
    mac: str = ""
    ipv4: str = ""
    ipv4_prefix: int = 0
    ipv6: str = ""
    ipv6_prefix: int = 0


@dataclass(frozen=True)
class PortBinding:
    protocol: str  # tcp | udp | sctp
    container_port: int
    host_ip: str
    host_port: int


@dataclass(frozen=True)
class PodMember:
    """A running container of a pod (its sandbox is the workload that holds the namespace)."""

    id: str
    name: str
    image: str


@dataclass(frozen=True)
class PodRef:
    """A Kubernetes pod by name, as the CNI cache still names one whose runtime forgot it."""

    namespace: str
    name: str


@dataclass(frozen=True)
class Workload:
    """A running workload, as its runtime reports it, plus its namespace identity.

    The namespace is the one of ``pid`` (``/proc/<pid>/ns/net``), or the file at
    ``netns_path`` where the runtime names one (a CRI pod sandbox's). The
    compose, endpoint and port fields are those of Docker-like runtimes; others
    leave them empty. A Kubernetes pod is one workload, its sandbox (``id`` is
    the sandbox id), with the ``pod_*`` fields and its running containers in
    ``members``; ``ready`` is false for a sandbox whose process died and that
    its runtime still lists (its namespace lives on until it is stopped).
    """

    id: str
    name: str
    runtime: str = "docker"
    image: str = ""
    pid: int = 0
    netns_path: str = ""
    # As the runtime reports it: default, bridge, host, none, container:<id>, <network>.
    network_mode: str = ""
    compose_project: str = ""
    compose_service: str = ""
    started_at: str = ""
    endpoints: tuple[Endpoint, ...] = ()
    ports: tuple[PortBinding, ...] = ()
    netns_inode: int | None = None  # st_ino of the namespace file; None if unreadable
    nsid: int | None = None  # the host's id for that namespace (RTM_GETNSID)
    pod_namespace: str = ""
    pod_name: str = ""
    pod_uid: str = ""
    ready: bool = True
    members: tuple[PodMember, ...] = ()
    nat_chains: str = "docker"  # whose chains hold its DNAT rules: docker | netavark

    @property
    def is_pod(self) -> bool:
        return bool(self.pod_name)


@dataclass(frozen=True)
class Network:
    """A network of a runtime: Docker's or Podman's, or a CNI network of the CRI's pods."""

    id: str
    name: str
    driver: str
    bridge: str = ""  # Linux bridge name for driver=bridge
    subnets: tuple[tuple[str, str], ...] = ()  # (subnet, gateway)
    internal: bool = False
    masquerade: bool = True
    runtime: str = "docker"  # whose it is, as the runtime names itself
    nat_chains: str = "docker"  # whose chains hold its MASQUERADE rules: docker | netavark
    vni: str = ""  # overlay: the VXLAN ids (Docker's vxlanid_list, comma-separated)
    encrypted: bool = False  # overlay: IPsec between nodes (--opt encrypted)


@dataclass
class HostState:
    """Everything the sources know at one moment; input of topology.build()."""

    links: dict[int, Link] = field(default_factory=dict)  # host namespace, by ifindex
    # nsid -> ifindex -> Link, and nsid -> addresses, of the workloads' namespaces
    netns_links: dict[int, dict[int, Link]] = field(default_factory=dict)
    netns_addresses: dict[int, tuple[Address, ...]] = field(default_factory=dict)
    containers: dict[str, Workload] = field(default_factory=dict)  # by id
    networks: dict[str, Network] = field(default_factory=dict)  # by id
    first_seen: dict[int, float] = field(default_factory=dict)  # host ifindex -> monotonic time
    # namespace file -> (inode, nsid)
    netns_files: dict[str, tuple[int, int | None]] = field(default_factory=dict)
    host_netns_inode: int | None = None
    # Where Docker binds its namespaces: its exec root's netns/ (dockerd --exec-root).
    docker_netns_dir: str = "/var/run/docker/netns"
    # nsid -> file name of Docker's overlay namespaces (core/overlay.py); their links and addresses
    # are in netns_links and netns_addresses beside the workloads' namespaces'.
    overlay_netns: dict[int, str] = field(default_factory=dict)
    # Whether each workload source answered its last call; a runtime that did not cannot be
    # asked whom a namespace belongs to.
    runtimes_up: dict[str, bool] = field(default_factory=dict)
    pod_runtimes: frozenset[str] = frozenset()  # the followed runtimes whose workloads are pods
    # namespace file -> the pod the CNI cache names for it (sources/cni_cache.py)
    cni_pods: dict[str, PodRef] = field(default_factory=dict)

    @property
    def workloads_known(self) -> bool:
        """Every runtime answered: a namespace that none of them claims belongs to nobody."""
        return bool(self.runtimes_up) and all(self.runtimes_up.values())
