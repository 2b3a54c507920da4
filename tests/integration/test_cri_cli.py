"""The one-shot commands on pods of the real containerd (made through the CRI, tests/cri_helpers.py)
and on containers of the real Podman: `ips`, `bridges` and `orphans` name a pod by NAMESPACE and
POD, `netns visible` links its namespace as <namespace>_<pod>; against the kernel's own view."""

from __future__ import annotations

import json
import os

from test_cli import cli, cli_json
from test_cri import CRI, pods  # noqa: F401 (a fixture)
from test_podman import PODMAN

from cri_helpers import CriPods, Pod
from helpers import ip_json, sh, unique
from podman_helpers import host_ifindex


def netns_name(cri: CriPods, pod: Pod) -> str:
    return os.path.basename(cri.status(pod).netns_path)


def pod_addresses(cri: CriPods, pod: Pod) -> set:
    """(family, address, prefix length) of the pod's eth0, as `ip` reads them in its namespace."""
    (eth0,) = json.loads(sh("ip", "-n", netns_name(cri, pod), "-j", "addr", "show", "eth0"))
    families = {"inet": "ipv4", "inet6": "ipv6"}
    return {
        (families[a["family"]], a["local"], a["prefixlen"])
        for a in eth0["addr_info"]
        if a.get("scope") != "link"
    }


def host_veth(cri: CriPods, pod: Pod) -> str:
    (eth0,) = json.loads(sh("ip", "-n", netns_name(cri, pod), "-j", "link", "show", "eth0"))
    (host,) = [l["ifname"] for l in ip_json("link") if l["ifindex"] == eth0["link_index"]]
    return host


def owned_by(row: dict, cri: CriPods, pod: Pod) -> bool:
    """The row names the pod, and no container."""
    return (row["namespace"], row["pod"], row["container_id"], row["container_name"]) == (
        pod.namespace,
        pod.name,
        "",
        "",
    ) and row["sandbox_id"] == cri.status(pod).id


def test_ips_and_bridges_name_each_pod(pods):  # noqa: F811
    a, b = pods.run(namespace="shop"), pods.run(namespace="billing")
    ips = cli_json("ips", CRI)
    bridges = cli_json("bridges", CRI)
    for pod in (a, b):
        mine = [r for r in ips if r["pod"] == pod.name]
        assert mine and all(owned_by(r, pods, pod) and r["interface"] == "eth0" for r in mine)
        got = {(r["family"], *r["address"].split("/")) for r in mine}
        assert {(f, addr, int(n)) for f, addr, n in got} >= pod_addresses(pods, pod)
        (port,) = [p for br in bridges for p in br["ports"] if p["port"] == host_veth(pods, pod)]
        assert owned_by(port, pods, pod) and port["interface"] == "eth0"
    for command in ("ips", "bridges"):
        table = cli(command, CRI).stdout.splitlines()
        assert {"NAMESPACE", "POD"} <= set(table[0].split())
        assert any(a.name in line and "shop" in line for line in table[1:])


def test_orphan_in_a_pods_namespace_names_the_pod(pods, hand):  # noqa: F811
    """A Docker bridge port whose peer sits in a pod's namespace: no endpoint explains it, and the
    orphan names the pod whose namespace holds the peer."""
    pod = pods.run(namespace="shop")
    veth = hand.pair(unique("dnxq"), unique("dnxr"), netns=netns_name(pods, pod), master="docker0")
    (row,) = [r for r in cli_json("orphans", "--grace", "1s", CRI) if r["veth"] == veth]
    assert (row["reason"], row["bridge"]) == ("no_endpoint", "docker0")
    assert owned_by(row, pods, pod)
    table = cli("orphans", "--grace", "0s", CRI).stdout.splitlines()
    assert table[0].split()[-2:] == ["NAMESPACE", "POD"]
    assert any(veth in line and pod.name in line for line in table)


def test_netns_visible_names_a_pods_namespace_namespace_underscore_pod(pods):  # noqa: F811
    pod = pods.run(namespace="shop")
    name = f"shop_{pod.name}"
    try:
        rows = cli_json("netns", "visible", name, CRI)
        assert [(r["name"], r["status"]) for r in rows] == [(name, "created")]
        assert rows[0]["container_id"] == pods.status(pod).id
        inside = sh("ip", "netns", "exec", name, "ip", "-j", "link", "show", "eth0")
        assert json.loads(inside)[0]["link_index"] == int(
            sh("cat", f"/sys/class/net/{host_veth(pods, pod)}/ifindex")
        )
        assert [r["status"] for r in cli_json("netns", "invisible", name, CRI)] == ["removed"]
        assert not os.path.lexists(f"/var/run/netns/{name}")
    finally:
        cli("netns", "invisible", name, CRI, check=False)


def test_ips_and_bridges_show_podman_containers(podman):
    c = podman.run()
    c.reload()
    ips = [r for r in cli_json("ips", PODMAN) if r["container_id"] == c.id]
    networks = c.attrs["NetworkSettings"]["Networks"].values()
    assert {r["address"].split("/")[0] for r in ips} >= {n["IPAddress"] for n in networks}
    assert all(r["container_name"] == c.name and not r["pod"] for r in ips)
    veth = next(l["ifname"] for l in ip_json("link") if l["ifindex"] == host_ifindex(c))
    (port,) = [p for br in cli_json("bridges", PODMAN) for p in br["ports"] if p["port"] == veth]
    assert (port["container_id"], port["container_name"]) == (c.id, c.name)


def test_topology_draws_each_pod_as_one_namespace_of_its_containers(pods):  # noqa: F811
    web = pods.run(namespace="shop", containers=("app", "side"))
    doc = cli_json("topology", CRI)
    sandbox = pods.status(web).id
    (ns,) = [n for n in doc["namespaces"] if n["id"] == sandbox]
    assert (ns["pod"]["namespace"], ns["pod"]["name"], ns["pod"]["uid"]) == (
        web.namespace,
        web.name,
        web.uid,
    )
    assert {c["name"]: c["id"] for c in ns["containers"]} == web.containers
    (veth,) = [v for b in doc["bridges"] for v in b["veths"] if v["namespace"] == sandbox]
    assert (veth["name"], veth["bridge"]) == (host_veth(pods, web), "dncni0")
    text = cli("topology", CRI).stdout
    assert f"app (dockernet.test/busybox:1) pod={web.namespace}/{web.name}" in text
