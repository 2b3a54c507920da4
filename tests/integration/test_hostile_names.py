"""Interface names that are not UTF-8, made on the real kernel (issue 16, items 1 and 13).

The kernel takes any bytes but NUL, '/', ':' and whitespace as a name. Whoever makes one (root on the
host, or a tenant renaming its own eth0) must not fail a scrape: the exporter renders each such name
escaped (docs/names.md) in /metrics, the CLI and JSON alike.
"""

from __future__ import annotations

import json
import subprocess
import uuid

import pytest
import requests

from helpers import EXPORTER, ROOT, ExporterProcess, Metrics, parse_metrics, sh, wait_for


def scrape(e: ExporterProcess) -> str:
    """/metrics, which must answer 200 whatever the names are."""
    r = requests.get(e.url + "/metrics", timeout=10)
    assert r.status_code == 200, f"/metrics answered {r.status_code}; log:\n{e.log()[-3000:]}"
    return r.content.decode("utf-8")  # strict


def promtool_check(text: str) -> None:
    out = subprocess.run(
        ["/usr/bin/promtool", "check", "metrics"], input=text, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stdout + out.stderr


def cli(*args: str) -> str:
    out = subprocess.run(EXPORTER + list(args), cwd=ROOT, capture_output=True, timeout=60)
    assert out.returncode == 0, out.stderr.decode("utf-8", "replace")
    return out.stdout.decode("utf-8")  # strict


def veth_rows() -> list[dict]:
    return json.loads(cli("veths", "-o", "json"))


@pytest.fixture
def hostile_pair():
    """A host veth pair: one end named with byte 0xff, the other with a backslash."""
    tag = uuid.uuid4().hex[:6].encode()
    host, peer = b"dn\xff" + tag, b"dn\\" + tag
    sh("ip", "link", "add", host, "type", "veth", "peer", "name", peer)
    yield rf"dn\xff{tag.decode()}", rf"dn\x5c{tag.decode()}"
    sh("ip", "link", "del", host, check=False)


def test_a_host_veth_named_with_a_byte_that_is_not_utf8_is_exported_escaped(exporter, hostile_pair):
    e = exporter()
    escaped = set(hostile_pair)

    def exported() -> set:
        return {
            l["veth"] for l, _ in Metrics(parse_metrics(scrape(e))).select("dockernet_veth_info")
        }

    wait_for(lambda: escaped <= exported(), what=f"veth_info of {escaped}")
    text = scrape(e)
    promtool_check(text)
    assert escaped <= {row["veth"] for row in veth_rows()}
    table = cli("veths")
    assert all(name in table for name in escaped), table


def test_a_container_renaming_its_eth0_to_a_byte_that_is_not_utf8_is_seen_at_the_next_resync(
    containers, exporter
):
    c = containers.run(cap_add=["NET_ADMIN"])
    e = exporter("--resync.interval=1s")

    def interfaces() -> set:
        m = Metrics(parse_metrics(scrape(e)))
        return {l["interface"] for l, _ in m.select("dockernet_veth_info", container_id=c.id)}

    wait_for(lambda: interfaces() == {"eth0"}, what="the container's eth0")
    # busybox's ip and printf: the new name's bytes are e, 0xff, a backslash (octal 134) and x
    rename = (
        r'n=$(printf "e\377\134x"); ip link set eth0 down; ip link set eth0 name "$n"; '
        r'ip link set "$n" up'
    )
    r = c.exec_run(["sh", "-c", rename])
    assert r.exit_code == 0, r.output
    escaped = r"e\xff\x5cx"
    # The host hears of no rename (only of its veth's carrier going down and up): the periodic
    # resync (1 s here) brings the new name.
    wait_for(lambda: interfaces() == {escaped}, what=f"interface={escaped}")
    text = scrape(e)
    promtool_check(text)
    m = Metrics(parse_metrics(text))
    assert m.select(
        "dockernet_container_receive_bytes_total", container_id=c.id, interface=escaped
    ), m.select("dockernet_container_receive_bytes_total", container_id=c.id)
    for _ in range(3):  # and every later scrape too
        scrape(e)
    rows = [row for row in veth_rows() if row["container_id"] == c.id]
    assert [row["interface"] for row in rows] == [escaped], rows
