"""Counters against the container's own /proc/net/dev, direction included,
and the map following `docker run` / `docker rm -f` without a resync."""

from __future__ import annotations

from typing import TYPE_CHECKING

from helpers import ExporterProcess, printed, wait_for

if TYPE_CHECKING:
    from docker.models.containers import Container

COLUMNS = {"receive_bytes": 0, "receive_packets": 1, "transmit_bytes": 8, "transmit_packets": 9}


def own_view(container: Container, interface: str = "eth0") -> dict:
    text = printed(container.exec_run("cat /proc/net/dev"))
    row = next(
        l.split(":", 1)[1].split()
        for l in text.splitlines()
        if l.strip().startswith(interface + ":")
    )
    return {name: int(row[col]) for name, col in COLUMNS.items()}


def exported(e: ExporterProcess, container: Container, interface: str = "eth0") -> dict:
    m = e.metrics()
    return {
        name: m.get_value(
            f"dockernet_container_{name}_total", container_id=container.id, interface=interface
        )
        for name in COLUMNS
    }


def stable_pair(e: ExporterProcess, container: Container) -> tuple:
    """The container's own counters and the exporter's, read while nothing moved in between."""
    for _ in range(20):
        before = own_view(container)
        ours = exported(e, container)
        if own_view(container) == before:
            return before, ours
    raise AssertionError("counters never stood still")


def test_counters_mirror_the_containers_view_with_direction(containers, exporter):
    net = containers.network()
    a = containers.run(network=net.name)
    b = containers.run(network=net.name)
    e = exporter()
    wait_for(
        lambda: (
            exported(e, a)["receive_bytes"] is not None
            and exported(e, b)["receive_bytes"] is not None
        ),
        what="both containers' counters",
    )
    a0, b0 = own_view(a), own_view(b)
    b_ip = b.attrs["NetworkSettings"]["Networks"][net.name]["IPAddress"]
    size, count = 1000, 20
    assert a.exec_run(f"ping -c {count} -i 0.05 -s {size} -W 2 {b_ip}").exit_code == 0
    for c in (a, b):
        own, ours = stable_pair(e, c)
        assert ours == own, f"{c.name}: exporter {ours} != container's own view {own}"
    a1, b1 = own_view(a), own_view(b)
    frame = size + 8 + 20 + 14  # ICMP + IPv4 + Ethernet headers
    assert a1["transmit_packets"] - a0["transmit_packets"] >= count
    assert a1["transmit_bytes"] - a0["transmit_bytes"] >= count * frame
    assert b1["receive_packets"] - b0["receive_packets"] >= count
    assert b1["receive_bytes"] - b0["receive_bytes"] >= count * frame
    # and the echo replies came back the other way
    assert a1["receive_bytes"] - a0["receive_bytes"] >= count * frame


def test_series_follow_run_and_rm_without_a_resync(containers, exporter):
    e = exporter("--resync.interval=1h")
    e.wait_first_read()
    c = containers.run()
    wait_for(
        lambda: e.metrics().select("dockernet_container_receive_bytes_total", container_id=c.id),
        what="series of the new container",
    )
    c.remove(force=True)
    wait_for(
        lambda: not any(c.id in line for line in e.text().splitlines()),
        what="every series of the removed container gone",
    )
    # The series may go with the process's exit, before Docker's destroy event is read.
    m = wait_for(
        lambda: (
            (m := e.metrics())
            and m.get_value("dockernet_events_total", source="docker", action="destroy") >= 1
            and m
        ),
        what="Docker's destroy event",
    )
    assert m.get_value("dockernet_resyncs_total", source="all", reason="periodic") == 0
    assert m.get_value("dockernet_events_total", source="docker", action="start") >= 1


def test_netlink_counter_rows_equal_proc_net_dev_for_every_host_link(containers):
    """The scrape reads host veths' counters with one RTM_GETSTATS dump; /proc/net/dev is the reference."""
    from exporter.sources.kernel.netlink import Netlink
    from exporter.sources.kernel.procfs import Procfs

    a, b = containers.run(), containers.run()
    b_ip = b.attrs["NetworkSettings"]["Networks"]["bridge"]["IPAddress"]
    assert a.exec_run(f"ping -c 5 -i 0.05 -W 2 {b_ip}").exit_code == 0
    with Netlink() as netlink:
        links = {l.ifindex: l.name for l in netlink.links()}
        for _ in range(20):
            text = Procfs().net_dev()
            rows = netlink.link_stats(links.keys())
            if Procfs().net_dev() == text:  # nothing moved while netlink was read
                break
        some = netlink.link_stats({min(links)})
    assert {links[i]: row for i, row in rows.items()} == {
        name: text[name] for name in links.values()
    }
    assert set(some) == {min(links)}
    moved = [
        row
        for i, row in rows.items()
        if links[i].startswith("veth") and row[1] >= 5 and row[5] >= 5
    ]
    assert len(moved) >= 2, "the pinging containers' veths show the traffic"
