"""`dockernet-exporter flows` on the real kernel and dockerd, against `conntrack -L`."""

from __future__ import annotations

import json
import subprocess
from typing import TYPE_CHECKING

from flow_helpers import address, connect, conntrack

from helpers import EXPORTER, ROOT, unique

if TYPE_CHECKING:
    from docker.models.containers import Container


def flows_json(*args: str) -> list[dict]:
    out = subprocess.run(
        [*EXPORTER, "flows", "-o", "json", *args], cwd=ROOT, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def row(found: list[dict], source: Container, destination: Container) -> dict | None:
    matches = [
        r for r in found if (r["source"], r["destination"]) == (source.name, destination.name)
    ]
    return matches[0] if matches else None


def test_the_table_as_it_is(containers):
    net = containers.network(unique("dnxflow"))
    server = containers.run(command="httpd -f -p 80", network=net.name)
    client = containers.run(network=net.name)
    assert connect(client, address(server, net), 80, 3) == 3
    found = row(flows_json(), client, server)
    entries = conntrack("-p", "tcp", "-s", address(client, net), "-d", address(server, net))
    assert found is not None and found["connections"] == len(entries) == 3
    assert (found["protocol"], found["port"], found["connections_waiting"]) == ("tcp", "80", 0)
    assert found["connections_opened"] == 0  # opened before the command looked


def test_watch_counts_what_is_opened_meanwhile(containers):
    net = containers.network(unique("dnxflow"))
    server = containers.run(network=net.name)
    client = containers.run(network=net.name)
    command = subprocess.Popen(
        [*EXPORTER, "--log.level=debug", "flows", "-o", "json", "--watch=5s"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert command.stderr is not None
    # The command has read the table once it logs so; what comes after is counted opened.
    assert any("flows_following" in line for line in command.stderr)
    assert connect(client, address(server, net), 83, 2) == 0  # refused: answered by resets
    out = command.stdout.read() if command.stdout else ""
    assert command.wait(30) == 0
    found = row(json.loads(out), client, server)
    assert found is not None
    assert (found["connections_opened"], found["connections_unanswered"]) == (2, 0)


def test_table_output(containers):
    out = subprocess.run(
        [*EXPORTER, "flows"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    assert out.splitlines()[0].split()[:4] == ["SOURCE", "SOURCE", "NS", "DESTINATION"]


def test_topology_draws_the_connections_in_the_table_when_asked(containers):
    net = containers.network(unique("dnxflow"))
    server = containers.run(command="httpd -f -p 80", network=net.name)
    client = containers.run(network=net.name)
    assert connect(client, address(server, net), 80, 3) == 3
    entries = conntrack("-p", "tcp", "-s", address(client, net), "-d", address(server, net))

    def topology(*args: str) -> str:
        out = subprocess.run(
            [*EXPORTER, "topology", "--no-nat", *args], cwd=ROOT, capture_output=True, text=True
        )
        assert out.returncode == 0, out.stderr
        return out.stdout

    doc = json.loads(topology("--flows", "-o", "json"))
    assert doc["flows"]["following"]
    (edge,) = [
        e
        for e in doc["flows"]["edges"]
        if (e["source"], e["destination"]) == (client.name, server.name)
    ]
    assert len(entries) == 3  # what conntrack -L lists of them
    assert (edge["protocol"], edge["port"], edge["open"]) == ("tcp", "80", 3)
    assert f"  {client.name} -> {server.name} tcp/80: open 3" in topology("--flows").splitlines()
    assert json.loads(topology("-o", "json"))["flows"] is None  # not asked: not read
