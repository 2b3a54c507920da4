"""The topology page in a real browser (headless Chromium through selenium), /topology.json and the
`topology` command, against the real exporter, kernel and dockerd: containers on two networks, one
on both, one sharing another's namespace, a host-network one, a published port, an orphan and a
hostile compose label."""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import re
import subprocess
import tempfile
from typing import TYPE_CHECKING, Any

import bcrypt
import pytest
import requests

from helpers import (
    CHROMIUM_FLAGS,
    EXPORTER,
    ROOT,
    Containers,
    ExporterProcess,
    Hand,
    free_port,
    ip_json,
    printed,
    unique,
    wait_for,
)

if TYPE_CHECKING:
    from docker.models.containers import Container
    from selenium.webdriver import Chrome
    from selenium.webdriver.remote.webdriver import WebDriver
    from selenium.webdriver.remote.webelement import WebElement

XSS_PROJECT = "<img src=x onerror=alert(1)>"
XSS_SERVICE = "<img src=x onerror=window.pwned=1>"
PASSWORD = "topology-secret-password"


@pytest.fixture(scope="module")
def scene(docker_client):
    """The host the page draws, and an exporter that flags orphans at once."""
    made, hand = Containers(docker_client), Hand()
    try:
        a, b = made.network(), made.network()
        port = free_port()
        c = {
            "web": made.run(
                network=a.name,
                ports={"80/tcp": ("127.0.0.1", port)},
                labels={
                    "com.docker.compose.project": XSS_PROJECT,
                    "com.docker.compose.service": XSS_SERVICE,
                },
            ),
            "back": made.run(network=b.name),
            "both": made.run(network=a.name),
            "hostnet": made.run(network_mode="host"),
        }
        b.connect(c["both"])
        c["side"] = made.run(network_mode=f"container:{c['both'].id}")
        base = unique()
        orphan = hand.pair(base + "a", base + "b", master="docker0")
        exporter = ExporterProcess("--collector.orphans.grace=0s").wait_ready()
        exporter.metrics()  # a scrape reads the firewall: the page shows what it found
        yield {"containers": c, "made": made, "orphan": orphan, "exporter": exporter, "port": port}
        exporter.stop()
    finally:
        hand.cleanup()
        made.cleanup()


def topology(exporter: ExporterProcess, **kw: Any) -> dict:
    r = requests.get(exporter.url + "/topology.json", timeout=10, **kw)
    r.raise_for_status()
    return r.json()


def shown(doc: dict, *names: str) -> bool:
    """Whether every name is a container of the document."""
    containers = [c for ns in doc["namespaces"] for c in ns["containers"]]
    containers += doc["host_network"] + doc["no_network"]
    return set(names) <= {c["name"] for c in containers}


def wait_shown(exporter: ExporterProcess, containers: dict) -> dict:
    names = [c.name for c in containers.values()]
    return wait_for(
        lambda: (doc := topology(exporter)) and shown(doc, *names) and doc,
        what="every container on /topology.json",
    )


def ground_truth(container: Container) -> list[dict]:
    """Each interface of the container as the kernel and Docker say: its name, MAC, address and
    network (docker inspect), the host veth it pairs with and that veth's bridge (ip -j link)."""
    links = {l["ifindex"]: l for l in ip_json("link")}
    container.reload()
    by_mac = {
        n["MacAddress"]: (name, n)
        for name, n in container.attrs["NetworkSettings"]["Networks"].items()
    }
    out = []
    for interface in ("eth0", "eth1"):
        r = container.exec_run(
            f"cat /sys/class/net/{interface}/iflink /sys/class/net/{interface}/address"
        )
        if r.exit_code != 0:
            continue
        iflink, mac = printed(r).split()
        network, settings = by_mac[mac]
        veth = links[int(iflink)]
        out.append(
            {
                "interface": interface,
                "mac": mac,
                "address": settings["IPAddress"],
                "network": network,
                "veth": veth["ifname"],
                "bridge": veth.get("master", ""),
            }
        )
    return out


def check_document(doc: dict, scene: dict) -> None:
    """/topology.json (or the command's JSON) against ip -j link and docker inspect."""
    c = scene["containers"]
    namespaces = {ns["id"]: ns for ns in doc["namespaces"]}
    bridges = {b["name"]: b for b in doc["bridges"]}
    for name in ("web", "back", "both"):
        ns = namespaces[c[name].id]
        truth = ground_truth(c[name])
        assert len(truth) == (2 if name == "both" else 1)
        for t in truth:
            (i,) = [i for i in ns["interfaces"] if i["name"] == t["interface"]]
            assert (i["mac"], i["veth"], i["bridge"], i["network"]) == (
                t["mac"],
                t["veth"],
                t["bridge"],
                t["network"],
            )
            assert t["address"] in [a["address"] for a in i["addresses"]]
            (v,) = [v for v in bridges[t["bridge"]]["veths"] if v["name"] == t["veth"]]
            assert (v["namespace"], v["interface"], v["orphan"]) == (
                c[name].id,
                t["interface"],
                None,
            )
            network = scene["made"].client.networks.get(t["network"])
            subnets = [s["subnet"] for s in bridges[t["bridge"]]["subnets"]]
            assert network.attrs["IPAM"]["Config"][0]["Subnet"] in subnets
            assert bridges[t["bridge"]]["network"] == t["network"]
    shared = namespaces[c["both"].id]
    assert shared["shared"] and [m["name"] for m in shared["containers"]] == [
        c["both"].name,
        c["side"].name,
    ]
    assert c["hostnet"].name in [h["name"] for h in doc["host_network"]]
    (web,) = namespaces[c["web"].id]["containers"]
    assert web["compose_project"] == XSS_PROJECT
    assert [
        (p["host_ip"], p["host_port"], p["container_port"], p["dnat"]) for p in web["ports"]
    ] == [("127.0.0.1", scene["port"], 80, "present")]
    orphans = {o["veth"]: o for o in doc["orphans"]}
    assert orphans[scene["orphan"]]["reason"] == "peer_in_host"
    assert orphans[scene["orphan"]]["bridge"] == "docker0"


def test_json_matches_the_kernel_and_docker(scene):
    check_document(wait_shown(scene["exporter"], scene["containers"]), scene)


def test_command_json_and_tree_match_the_kernel_and_docker(scene):
    def run(*args: str) -> str:
        return subprocess.run(
            EXPORTER + ["topology", *args], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout

    check_document(json.loads(run("--output", "json")), scene)
    lines = run().splitlines()
    for name in ("web", "back", "both"):
        c = scene["containers"][name]
        for t in ground_truth(c):
            (at,) = [n for n, l in enumerate(lines) if f" {t['veth']} [" in l]
            assert f"<-> {t['interface']} [" in lines[at] and t["address"] in lines[at]
            assert any(lines[at + 1 + k].split("\u2500 ", 1)[1].startswith(c.name) for k in (0, 1))
            bridge_line = max(
                n
                for n, l in enumerate(lines[:at])
                if not l.startswith(("\u2502", "\u251c", "\u2514", " "))
            )
            assert lines[bridge_line].startswith(t["bridge"] + " ")
    assert f"!! {scene['orphan']} on docker0: peer_in_host" in "\n".join(lines)
    assert any(
        l.endswith(scene["containers"]["hostnet"].name + " (dockernet-test:busybox)") for l in lines
    )


def raw_get(exporter: ExporterProcess, path: str, encoding: str) -> tuple[requests.Response, bytes]:
    """The answer, and its body as the server sent it (not decoded by the client)."""
    r = requests.get(
        exporter.url + path, headers={"Accept-Encoding": encoding}, timeout=10, stream=True
    )
    return r, r.raw.read(decode_content=False)


def inline_hashes(page: str) -> set[str]:
    found = re.findall(r"<script>(.*?)</script>", page, re.S)
    found += re.findall(r"<style>(.*?)</style>", page, re.S)
    assert len(found) == 2
    return {
        "sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode()
        for text in found
    }


def test_the_policy_admits_exactly_the_inline_assets_served_and_gzip_is_served_when_asked(scene):
    exporter = scene["exporter"]
    plain, sent = raw_get(exporter, "/topology", "identity")
    assert plain.status_code == 200 and "Content-Encoding" not in plain.headers
    policy = plain.headers["Content-Security-Policy"]
    allowed = set(re.findall(r"'(sha256-[^']+)'", policy))
    assert inline_hashes(sent.decode()) == allowed and "unsafe-inline" not in policy
    for path in ("/topology", "/topology?fragment=1", "/topology.json"):
        packed, sent = raw_get(exporter, path, "gzip")
        assert packed.headers["Content-Encoding"] == "gzip"
        body = gzip.decompress(sent)
        assert len(sent) < len(body)
        if path == "/topology":
            assert inline_hashes(body.decode()) == allowed
        if path.endswith(".json"):
            assert json.loads(body)["schema"] == 1


# -- the browser ---------------------------------------------------------------------------


@pytest.fixture
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    profile = tempfile.TemporaryDirectory(prefix="dnx-chromium-")
    for flag in CHROMIUM_FLAGS + ("--window-size=1280,1000", f"--user-data-dir={profile.name}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()
    profile.cleanup()


def console_errors(driver: Chrome) -> list:
    return [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]


def pair_of(driver: WebDriver, veth: str) -> WebElement:
    from selenium.webdriver.common.by import By

    (pair,) = driver.find_elements(By.CSS_SELECTOR, f'.pair[data-veth="{veth}"]')
    return pair


def test_page_draws_every_container_beside_its_veth(scene, browser):
    from selenium.webdriver.common.by import By

    doc = wait_shown(scene["exporter"], scene["containers"])
    browser.get(scene["exporter"].url + "/topology")
    body = browser.find_element(By.TAG_NAME, "body").text
    for c in scene["containers"].values():
        assert c.name in body
    for b in doc["bridges"]:
        assert b["name"] in body
    for name in ("web", "back", "both"):
        c = scene["containers"][name]
        for t in ground_truth(c):
            pair = pair_of(browser, t["veth"])
            bridge = pair.find_element(By.XPATH, "ancestor::details[1]")
            assert bridge.get_attribute("data-bridge") == t["bridge"]
            names = [e.text for e in pair.find_elements(By.CSS_SELECTOR, ".cname")]
            assert c.name in names
            assert pair.find_element(By.CSS_SELECTOR, ".ifname").text == t["interface"]
            assert t["address"] in pair.text
    assert (
        scene["containers"]["side"].name
        in pair_of(browser, ground_truth(scene["containers"]["both"])[0]["veth"]).text
    )
    orphan = pair_of(browser, scene["orphan"])
    assert (
        "orphan" in (orphan.get_attribute("class") or "").split() and "peer_in_host" in orphan.text
    )
    hostnet = browser.find_element(By.CSS_SELECTOR, ".apart.hostnet")
    assert scene["containers"]["hostnet"].name in hostnet.text
    assert (
        "DNAT present" in pair_of(browser, ground_truth(scene["containers"]["web"])[0]["veth"]).text
    )
    assert console_errors(browser) == []


def drawn_now(driver: WebDriver, selector: str) -> tuple[int, list[str]]:
    """How many elements match, and the data-veth of those drawn: read in one script run, so that
    the page's refresh cannot swap its body between two reads (other tests' veths on this host
    change the revision at any time)."""
    return driver.execute_script(
        "const all = Array.from(document.querySelectorAll(arguments[0]));"
        "return [all.length, all.filter(e => e.getClientRects().length > 0)"
        ".map(e => e.dataset.veth || '')];",
        selector,
    )


def visible_pairs(driver: WebDriver) -> set:
    return set(drawn_now(driver, ".pair")[1])


def test_the_filter_keeps_what_matches_any_word_and_lives_in_the_url(scene, browser):
    from selenium.webdriver.common.by import By

    web, back = scene["containers"]["web"], scene["containers"]["back"]
    (web_truth,), (back_truth,) = ground_truth(web), ground_truth(back)
    browser.get(f"{scene['exporter'].url}/topology#filter={web.name}%20{scene['orphan']}")
    assert visible_pairs(browser) == {web_truth["veth"], scene["orphan"]}
    hidden = browser.find_element(By.CSS_SELECTOR, f'details[data-bridge="{back_truth["bridge"]}"]')
    assert not hidden.is_displayed()
    box = browser.find_element(By.ID, "filter")
    box.clear()
    box.send_keys(back.name)
    assert visible_pairs(browser) == {back_truth["veth"]}
    assert browser.execute_script("return location.hash;") == f"#filter={back.name}"
    assert console_errors(browser) == []


def test_a_container_started_while_the_page_is_open_appears_without_reload(scene, browser):
    from selenium.webdriver.common.by import By

    browser.get(scene["exporter"].url + "/topology")
    browser.execute_script("window.sameDocument = 42;")
    late = scene["made"].run(network=scene["made"].networks[0].name)
    veth = wait_for(
        lambda: next(
            (
                i["veth"]
                for ns in topology(scene["exporter"])["namespaces"]
                if ns["id"] == late.id
                for i in ns["interfaces"]
            ),
            None,
        ),
        what="the new container on /topology.json",
    )
    wait_for(
        lambda: browser.find_elements(By.CSS_SELECTOR, f'.pair[data-veth="{veth}"] .cname'),
        timeout=20,
        what="the new container drawn on the open page",
    )
    assert late.name in pair_of(browser, veth).text
    assert browser.execute_script("return window.sameDocument;") == 42  # not reloaded
    assert "updated" in browser.find_element(By.ID, "status").text
    assert console_errors(browser) == []


def test_a_hostile_compose_label_shows_as_text_and_runs_nothing(scene, browser):
    from selenium.common.exceptions import NoAlertPresentException
    from selenium.webdriver.common.by import By

    browser.get(scene["exporter"].url + "/topology")
    projects = [e.text for e in browser.find_elements(By.CSS_SELECTOR, ".project")]
    assert f"{XSS_PROJECT}/{XSS_SERVICE}" in projects
    assert browser.find_elements(By.CSS_SELECTOR, "main img") == []
    assert browser.execute_script("return typeof window.pwned;") == "undefined"
    with pytest.raises(NoAlertPresentException):
        browser.switch_to.alert.text  # noqa: B018 (the property raises when no alert is open)
    assert console_errors(browser) == []


def test_print_drops_the_controls_and_rates_and_makes_a_pdf(scene, browser):
    import base64

    from selenium.webdriver.common.by import By

    browser.get(scene["exporter"].url + "/topology")
    browser.execute_cdp_cmd("Emulation.setEmulatedMedia", {"media": "print"})
    assert not browser.find_element(By.ID, "filter").is_displayed()
    rates, drawn = drawn_now(browser, ".rates")
    assert rates and not drawn
    assert scene["containers"]["web"].name in browser.find_element(By.TAG_NAME, "main").text
    pdf = browser.execute_cdp_cmd("Page.printToPDF", {})
    assert base64.b64decode(pdf["data"])[:5] == b"%PDF-"
    assert console_errors(browser) == []


# -- basic auth ----------------------------------------------------------------------------


def test_the_page_and_its_json_need_the_password_under_basic_auth(docker_client, tmp_path):
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(10)).decode()
    config = tmp_path / "web.yml"
    config.write_text(f"basic_auth_users:\n  viewer: '{hashed}'\n")
    p = ExporterProcess(f"--web.config.file={config}")
    try:
        wait_for(lambda: "event=listening" in p.log(), 20, what="exporter to listen")
        for path in ("/topology", "/topology.json", "/topology?fragment=1"):
            r = requests.get(p.url + path, timeout=10)
            assert r.status_code == 401 and "Basic" in r.headers["WWW-Authenticate"]
            assert (
                requests.get(p.url + path, auth=("viewer", "wrong"), timeout=10).status_code == 401
            )
        ok = requests.get(p.url + "/topology", auth=("viewer", PASSWORD), timeout=10)
        assert ok.status_code == 200 and "Content-Security-Policy" in ok.headers
        assert (
            requests.get(p.url + "/topology.json", auth=("viewer", PASSWORD), timeout=10).json()[
                "schema"
            ]
            == 1
        )
    finally:
        p.stop()
