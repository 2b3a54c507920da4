"""The overlays and the flows on the topology page (headless Chromium) and /topology.json, against
the real exporter, kernel and dockerd.

Flows: two containers on one bridge exchanging TCP, and connections to a port that the server's
namespace drops; ground truth the connections the test makes and `conntrack -L`. Overlays: a
single-node swarm of its own (tests/swarm_helpers.py) with an attachable overlay and two containers
on it; ground truth `ip` in the overlay's namespace and the containers' own /sys. Peers: a second
node with a container on the overlay, until it leaves; ground truth the forwarding database."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
from typing import TYPE_CHECKING

import pytest
import requests
from flow_helpers import address, connect, conntrack, drop_syns, known, start_exporter
from swarm_helpers import Cluster, Node, NodeExporter
from test_overlay_swarm import fdb_destinations, nodes  # noqa: F401 (nodes: a fixture)
from test_topology import browser, console_errors  # noqa: F401 (browser: a fixture)

from exporter.sources.kernel.overlay import in_namespace
from helpers import ExporterProcess, unique, wait_for

if TYPE_CHECKING:
    from selenium.webdriver.remote.webdriver import WebDriver, WebElement

XSS_PROJECT = "<img src=x onerror=window.pwned=1>"
OVERLAY_SUBNET = "198.18.237.0/24"


# -- flows ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def flow_exporter(docker_client):
    exporter = start_exporter()
    yield exporter
    exporter.stop()


def topology(exporter: ExporterProcess) -> dict:
    r = requests.get(exporter.url + "/topology.json", timeout=10)
    r.raise_for_status()
    return r.json()


def edges(doc: dict, source: str, destination: str) -> dict[str, dict]:
    """port -> the edge from source to destination."""
    return {
        e["port"]: e
        for e in doc["flows"]["edges"]
        if e["source"] == source and e["destination"] == destination
    }


def test_flow_edges_on_the_json_and_the_page_unanswered_in_red(flow_exporter, containers, browser):  # noqa: F811
    from selenium.webdriver.common.by import By

    net = containers.network(unique("dnxflow"))
    server = containers.run(command="httpd -f -p 80", network=net.name)
    client = containers.run(network=net.name, labels={"com.docker.compose.project": XSS_PROJECT})
    drop_syns(server, 81)
    known(flow_exporter, server, client)
    server_ip, client_ip = address(server, net), address(client, net)
    assert connect(client, server_ip, 80, 5) == 5
    assert connect(client, server_ip, 81, 3, timeout=0.3) == 0

    def settled() -> dict | None:
        found = edges(topology(flow_exporter), client.name, server.name)
        web, dropped = found.get("80"), found.get("81")
        if web and dropped and web["opened_total"] == 5 and dropped["unanswered_total"] == 3:
            return found
        return None

    found = wait_for(settled, 20, what="both edges on /topology.json with their counts")
    answered = conntrack("-p", "tcp", "-s", client_ip, "-d", server_ip, "--dport", "80")
    unreplied = conntrack("-p", "tcp", "-s", client_ip, "-d", server_ip, "--dport", "81")
    assert len(answered) == 5 and len(unreplied) == 3
    assert all("[UNREPLIED]" in l for l in unreplied)
    web, dropped = found["80"], found["81"]
    assert (web["protocol"], web["source_namespace"], web["source_kind"]) == (
        "tcp",
        XSS_PROJECT,
        "workload",
    )
    assert (web["unanswered_total"], dropped["opened_total"]) == (0, 3)
    assert web["open"] == len(answered)  # closed, in TIME_WAIT: still in the table

    browser.get(flow_exporter.url + "/topology#filter=" + client.name)

    def drawn(port: int) -> list[dict]:
        return [
            r
            for r in flow_rows(browser)
            if f"tcp/{port}" in r["text"] and server.name in r["text"] and r["shown"]
        ]

    (row,) = wait_for(lambda: drawn(80), 20, what="the edge to port 80 drawn")
    assert not row["red"] and row["color"] != RED
    assert row["figures"] == {"open": str(web["open"]), "opened": "5", "unanswered": "0"}
    assert XSS_PROJECT in row["text"]  # the compose project as text
    (red,) = drawn(81)
    assert red["red"] and red["color"] == RED
    assert red["figures"] == {"open": str(dropped["open"]), "opened": "3", "unanswered": "3"}
    assert browser.find_elements(By.CSS_SELECTOR, "main img") == []
    assert browser.execute_script("return typeof window.pwned;") == "undefined"

    # A new unanswered connection while the page is open: its count is drawn without a reload.
    browser.execute_script("window.sameDocument = 42;")
    assert connect(client, server_ip, 81, 1, timeout=0.3) == 0
    wait_for(
        lambda: [r for r in drawn(81) if r["figures"]["unanswered"] == "4"],
        30,
        what="4 unanswered drawn",
    )
    assert browser.execute_script("return window.sameDocument;") == 42
    assert console_errors(browser) == []


RED = "rgb(187, 0, 0)"


def flow_rows(driver: WebDriver) -> list[dict]:
    """Each flow row drawn: its text, whether it is shown and marked unanswered, the colour of its
    text, its figures by name. Read in one script run: the page's refresh may swap its body
    between two reads."""
    return driver.execute_script(
        "return Array.from(document.querySelectorAll('section.flows tr.flow')).map(r => ({"
        "text: r.textContent, shown: r.getClientRects().length > 0,"
        "red: r.classList.contains('unanswered'),"
        "color: getComputedStyle(r.querySelector('td')).color,"
        "figures: Object.fromEntries(['open', 'opened', 'unanswered'].map("
        "k => [k, r.querySelector(`td[data-live=${k}]`).textContent]))}));"
    )


def test_without_the_flows_collector_the_document_says_flows_are_off(scene_without_flows):
    doc = topology(scene_without_flows)
    assert doc["flows"] is None
    page = requests.get(scene_without_flows.url + "/topology", timeout=10).text
    assert "runs without --collector.flows" in page


@pytest.fixture(scope="module")
def scene_without_flows(docker_client):
    exporter = ExporterProcess().wait_ready()
    yield exporter
    exporter.stop()


# -- overlays ------------------------------------------------------------------------------


class Forward:
    """127.0.0.1:<port> on the host, each connection piped to the node's exporter in the node's
    namespace: the browser runs in the host's."""

    def __init__(self, exporter: NodeExporter) -> None:
        self.exporter = exporter
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                near, _ = self.listener.accept()
            except OSError:  # closed
                return
            far = in_namespace(
                self.exporter.node.netns,
                lambda: socket.create_connection(("127.0.0.1", self.exporter.port), 10),
            )
            for a, b in ((near, far), (far, near)):
                threading.Thread(target=_pipe, args=(a, b), daemon=True).start()

    def close(self) -> None:
        self.listener.close()


def _pipe(source: socket.socket, sink: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while data := source.recv(65536):
            sink.sendall(data)
    with contextlib.suppress(OSError):
        sink.shutdown(socket.SHUT_WR)


@pytest.fixture(scope="module")
def swarm():
    """One node, swarm initialised, an attachable overlay `ov` with two containers on it."""
    cluster = Cluster(unique("dnxtov"))
    try:
        node = cluster.add()
        cluster.init()
        node.docker(
            "network", "create", "-d", "overlay", "--attachable", "--subnet", OVERLAY_SUBNET, "ov"
        )
        node.run("ovone", "ov")
        node.run("ovtwo", "ov")
        yield node
    finally:
        cluster.close()


@pytest.fixture(scope="module")
def node_page(swarm):
    exporter = NodeExporter(swarm).wait_ready()
    forward = Forward(exporter)
    yield exporter, forward
    forward.close()
    exporter.stop()


def overlay_truth(node: Node, container: str) -> dict:
    """The overlay's namespace, VNI and VXLAN device, and the container's veth on its br0 with
    the container's address, as docker and ip say."""
    network = node.inspect("network", "ov")
    netns = node.overlay_netns(network["Id"])
    links = json.loads(node.nsenter("ip", "-j", "-d", "link", netns=netns))
    (vxlan,) = [l for l in links if l.get("linkinfo", {}).get("info_kind") == "vxlan"]
    iflink = int(node.exec(container, "cat", "/sys/class/net/eth0/iflink"))
    (veth,) = [l for l in links if l["ifindex"] == iflink]
    settings = node.inspect("container", container)["NetworkSettings"]["Networks"]["ov"]
    return {
        "namespace": netns,
        "vni": network["Options"]["com.docker.network.driver.overlay.vxlanid_list"],
        "vxlan": vxlan["ifname"],
        "vxlan_id": str(vxlan["linkinfo"]["info_data"]["id"]),
        "mtu": vxlan["mtu"],
        "veth": veth["ifname"],
        "master": veth["master"],
        "address": settings["IPAddress"],
    }


def test_the_overlay_on_the_json_and_the_page_with_its_containers(swarm, node_page, browser):  # noqa: F811
    from selenium.webdriver.common.by import By

    exporter, forward = node_page
    truth = {name: overlay_truth(swarm, name) for name in ("ovone", "ovtwo")}
    t = truth["ovone"]
    assert t["vni"] == t["vxlan_id"] and t["master"] == "br0"

    def ov() -> tuple[dict, dict] | None:
        status, body = exporter.get("/topology.json")
        doc = json.loads(body) if status == 200 else {"overlays": []}
        found = [o for o in doc["overlays"] if o["network"] == "ov"]
        named = {e["container_name"] for e in found[0]["endpoints"]} if found else set()
        return (doc, found[0]) if {"ovone", "ovtwo"} <= named else None

    doc, o = wait_for(ov, 30, what="ov with both containers on /topology.json")
    assert doc["flows"] is None  # the node's exporter runs without the flows collector
    assert (o["namespace"], o["vni"], o["bridge"], o["subnets"]) == (
        t["namespace"],
        t["vni"],
        "br0",
        [OVERLAY_SUBNET],
    )
    assert o["vxlan"] == {"name": t["vxlan"], "mtu": t["mtu"]}
    assert o["peers"] == []  # one node: no remote VTEP in the forwarding database
    for name, truth_of in truth.items():
        assert {"veth": truth_of["veth"], "container_name": name, "interface": "eth0"}.items() <= (
            next(e for e in o["endpoints"] if e["container_name"] == name).items()
        )

    browser.get(forward.url + "/topology")
    box = browser.find_element(By.CSS_SELECTOR, 'section.overlay[data-overlay="ov"]')
    head = box.find_element(By.TAG_NAME, "h3").text
    assert f"VNI {t['vni']}" in head and t["namespace"] in head and OVERLAY_SUBNET in head
    vtep = box.find_element(By.CSS_SELECTOR, ".vtep").text
    assert f"{t['vxlan']} mtu {t['mtu']}" in vtep and "no peers" in vtep
    for name, truth_of in truth.items():
        end = endpoint(browser, truth_of["veth"])
        assert end.find_element(By.CSS_SELECTOR, ".cname").text == name
        assert end.find_element(By.CSS_SELECTOR, ".ifname").text == "eth0"
        assert truth_of["address"] in end.text
    sandboxes = [e for e in o["endpoints"] if e["container_id"] is None]
    assert [e["sandbox"] for e in sandboxes] == ["lb-ov"]  # Swarm's lb_ sandbox, Docker's name
    for e in sandboxes:
        assert "lb-ov: Swarm's own sandbox" in endpoint(browser, e["veth"]).text
    assert console_errors(browser) == []


def endpoint(driver: WebDriver, veth: str) -> WebElement:
    from selenium.webdriver.common.by import By

    (found,) = driver.find_elements(
        By.CSS_SELECTOR, f'section.overlay[data-overlay="ov"] .endpoint[data-endpoint="{veth}"]'
    )
    return found


def test_the_filter_keeps_an_overlay_by_its_name_or_its_containers(node_page, browser):  # noqa: F811
    from selenium.webdriver.common.by import By

    exporter, forward = node_page
    browser.get(forward.url + "/topology#filter=ovtwo")
    shown = browser.execute_script(
        "return Array.from(document.querySelectorAll('.endpoint'))"
        ".filter(e => e.getClientRects().length > 0).map(e => e.textContent);"
    )
    assert len(shown) == 1 and "ovtwo" in shown[0]
    box = browser.find_element(By.ID, "filter")
    box.clear()
    box.send_keys("ov")  # the overlay's name: all of its endpoints
    ends = browser.execute_script(
        'return Array.from(document.querySelectorAll(\'section.overlay[data-overlay="ov"] '
        ".endpoint')).filter(e => e.getClientRects().length > 0).length;"
    )
    status, body = exporter.get("/topology.json")
    (o,) = [o for o in json.loads(body)["overlays"] if o["network"] == "ov"]
    assert status == 200 and ends == len(o["endpoints"])
    assert console_errors(browser) == []


# -- two nodes: the other node is a peer -----------------------------------------------------


def test_the_other_node_is_drawn_as_a_peer_and_goes_when_it_leaves(nodes, browser):  # noqa: F811
    """test_overlay_swarm's two nodes: `ov` with `ca` on the manager, `cb` on the worker."""
    manager, worker = nodes
    exporter = NodeExporter(manager).wait_ready()
    forward = Forward(exporter)
    try:
        assert fdb_destinations(manager) == {worker.address}

        def peers() -> list | None:
            status, body = exporter.get("/topology.json")
            found = [o for o in json.loads(body)["overlays"] if o["network"] == "ov"]
            return found[0]["peers"] if status == 200 and found else None

        assert wait_for(peers, 30, what="ov's peers on /topology.json") == [worker.address]
        browser.get(forward.url + "/topology")
        browser.execute_script("window.sameDocument = 42;")
        assert drawn_peers(browser) == [worker.address]
        # The worker leaves: its VTEP leaves the forwarding database, and the open page redraws.
        worker.docker("rm", "-f", "cb")
        worker.docker("swarm", "leave", "--force")
        wait_for(lambda: fdb_destinations(manager) == set(), 90, interval=1, what="FDB forgets")
        wait_for(lambda: drawn_peers(browser) == [], 30, what="no peer drawn any more")
        assert "no peers" in browser.execute_script(
            "return document.querySelector('section.overlay[data-overlay=\"ov\"] .vtep').textContent;"
        )
        assert browser.execute_script("return window.sameDocument;") == 42
        assert console_errors(browser) == []
    finally:
        forward.close()
        exporter.stop()


def drawn_peers(driver: WebDriver) -> list[str]:
    return driver.execute_script(
        "return Array.from(document.querySelectorAll("
        "'section.overlay[data-overlay=\"ov\"] .vtep .peer')).map(e => e.textContent);"
    )
