"""Prometheus recording and alert rules, from the shared config."""

from __future__ import annotations

from . import config
from .owners import CONTAINER, OWNERS, Owner

S = config.SELECTOR
W = config.RATE_WINDOW
TRAFFIC = ("receive_bytes", "transmit_bytes", "receive_packets", "transmit_packets")
FAULTS = ("receive_errors", "transmit_errors", "receive_dropped", "transmit_dropped")
FAULTS_RECORD = CONTAINER.faults_record
ORPHAN_FIRST_SEEN = "veth:dockernet_veth_orphaned:first_seen_timestamp_seconds"
SEVERITY_CRITICAL, SEVERITY_WARNING = "critical", "warning"


def traffic_record(counter: str) -> str:
    return CONTAINER.record(counter)


def owner_records(owner: Owner) -> list:
    """Per interface of each container or pod: its traffic rates, and its faults in one series per
    counter."""
    traffic = [{"record": owner.record(c), "expr": owner.attach(owner.rate(c))} for c in TRAFFIC]
    faults = "\n  or ".join(
        f'label_replace({owner.rate(c)}, "counter", "{c}", "", "")' for c in FAULTS
    )
    return traffic + [{"record": owner.faults_record, "expr": owner.attach(f"(\n  {faults}\n)")}]


def recording_rules() -> list:
    # Prometheus's own first sighting of each orphan, kept while the orphan lasts:
    # the rule reads its previous value and falls back to the sample's timestamp.
    first_seen = (
        f"{ORPHAN_FIRST_SEEN}\n"
        f"  and on (job, instance, veth, bridge, reason) dockernet_veth_orphaned{{{S}}}\n"
        f"or timestamp(dockernet_veth_orphaned{{{S}}})\n"
    )
    owned = [r for owner in OWNERS for r in owner_records(owner)]
    return owned + [{"record": ORPHAN_FIRST_SEEN, "expr": first_seen}]


def alert(name: str, expr: str, severity: str, summary: str, description: str) -> dict:
    return {
        "alert": name,
        "expr": expr,
        "for": config.FOR[name],
        "labels": {"severity": severity},
        "annotations": {
            "summary": summary,
            "description": description,
            "runbook_url": f"{config.RUNBOOK_URL}#{name.lower()}",
        },
    }


ON = "on {{ $labels.instance }}"
BRIDGE = "{{ if $labels.bridge }}bridge {{ $labels.bridge }}{{ else }}no bridge{{ end }}"
PORT = "{{ $labels.host_ip }}:{{ $labels.host_port }}/{{ $labels.protocol }}"
LIMIT = config.BRIDGE_PORT_LIMIT


def alert_rules() -> list:
    from . import flow_rules  # it builds on this module's alert()

    return (
        [
            alert(
                "DockernetExporterDown",
                f"up{{{S}}} == 0",
                SEVERITY_WARNING,
                f"dockernet-exporter {ON} is down",
                "Prometheus cannot scrape dockernet-exporter at {{ $labels.instance }}: this host has no "
                "container network metrics, and no other dockernet alert can fire for it.",
            ),
            alert(
                "DockernetDockerUnreachable",
                f"dockernet_docker_up{{{S}}} == 0",
                SEVERITY_WARNING,
                f"Docker is unreachable from dockernet-exporter {ON}",
                "The Docker API has not answered dockernet-exporter on {{ $labels.instance }}: containers "
                "started since then are not mapped to their veths and published ports are not checked.",
            ),
            alert(
                "DockernetRuntimeUnreachable",
                # Docker's own alert above covers it.
                f'dockernet_runtime_up{{{S}, runtime!="docker"}} == 0',
                SEVERITY_WARNING,
                f"{{{{ $labels.runtime }}}} is unreachable from dockernet-exporter {ON}",
                "The {{ $labels.runtime }} runtime has not answered dockernet-exporter on "
                "{{ $labels.instance }}: its workloads started since then are not mapped to their "
                "veths, and their namespaces are not judged orphaned meanwhile.",
            ),
            alert(
                "DockernetCollectorFailing",
                f"dockernet_scrape_collector_success{{{S}}} == 0",
                SEVERITY_WARNING,
                f"Collector {{{{ $labels.collector }}}} of dockernet-exporter fails {ON}",
                "The {{ $labels.collector }} collector fails on every scrape on {{ $labels.instance }}; its "
                "metrics are missing (the exporter's log has one line with the error).",
            ),
            alert(
                "DockernetOrphanedVeth",
                f"dockernet_veth_orphaned{{{S}}} == 1",
                SEVERITY_WARNING,
                f"Orphaned veth {{{{ $labels.veth }}}} on {BRIDGE} {ON}",
                "The veth {{ $labels.veth }} on {{ $labels.instance }} belongs to no running container "
                f"(reason {{{{ $labels.reason }}}}, {BRIDGE}). Leaked veths hold bridge ports, and a "
                f"bridge holds at most {LIMIT:,}.",
            ),
            alert(
                "DockernetBridgePortsNearLimit",
                f"dockernet_bridge_ports{{{S}}} > {config.BRIDGE_PORT_WARNING_RATIO} * {LIMIT}",
                SEVERITY_WARNING,
                f"Bridge {{{{ $labels.bridge }}}} {ON} has {{{{ $value }}}} of {LIMIT:,} ports",
                f"Bridge {{{{ $labels.bridge }}}} on {{{{ $labels.instance }}}} has {{{{ $value }}}} ports; "
                f"a Linux bridge holds at most {LIMIT:,}, and then no further container can join its "
                "network.",
            ),
            alert(
                "DockernetPublishedPortRuleMissing",
                f"dockernet_published_port_rule_present{{{S}}} == 0",
                SEVERITY_CRITICAL,
                f"Published port {PORT} of container {{{{ $labels.container_name }}}} {ON} has no DNAT rule",
                f"Docker publishes {PORT} to port {{{{ $labels.container_port }}}} of container "
                "{{ $labels.container_name }} on {{ $labels.instance }}, but the nat table has no DNAT rule "
                "for it: connections to that port from other hosts fail.",
            ),
            alert(
                "DockernetMasqueradeRuleMissing",
                f"dockernet_masquerade_rule_present{{{S}}} == 0",
                SEVERITY_CRITICAL,
                "Bridge {{ $labels.bridge }} ({{ $labels.subnet }}) "
                + ON
                + " has no MASQUERADE rule",
                "Docker masquerades traffic from {{ $labels.subnet }} on bridge {{ $labels.bridge }} on "
                "{{ $labels.instance }}, but the nat table has no MASQUERADE rule for it: its containers "
                "cannot reach other hosts.",
            ),
        ]
        + [a for owner in OWNERS for a in owner_alerts(owner)]
        + host_netstat_alerts()
        + flow_rules.flow_alerts()
    )


def owner_alerts(owner: Owner) -> list:
    """Per container or pod: its interfaces' faults and, from the netstat collector, the TCP and UDP
    health of its namespace."""
    ratio = config.TCP_RETRANSMIT_RATIO
    faults, retransmits = owner.alert_name("InterfaceFaults"), owner.alert_name("TcpRetransmits")
    named, named_at = owner.named, owner.named_at
    return [
        alert(
            faults,
            f"{owner.faults_record} > {config.INTERFACE_FAULTS_PER_SECOND}",
            SEVERITY_WARNING,
            f"{named} {{{{ $labels.interface }}}} {ON}: {{{{ $labels.counter }}}} at "
            "{{ $value | humanize }}/s",
            f"{named_at} counts {{{{ $value | humanize }}}} {{{{ $labels.counter }}}} per second on "
            f"{{{{ $labels.interface }}}}, above {config.INTERFACE_FAULTS_PER_SECOND}/s for "
            f"{config.FOR[faults]}.",
        ),
        alert(
            owner.alert_name("ListenOverflows"),
            _within(owner, f"{owner.rate('tcp_listen_overflows')} > 0"),
            SEVERITY_WARNING,
            f"{named} {ON} overflows a TCP listen queue",
            f"{named_at} drops {{{{ $value | humanize }}}} connections per second because a "
            "listener's accept queue is full: the application accepts too slowly, or its backlog "
            "(listen(2), capped by net.core.somaxconn) is too small.",
        ),
        alert(
            retransmits,
            _within(
                owner,
                f"{owner.rate('tcp_retransmitted_segments')}\n  / {owner.rate('tcp_segments_sent')}"
                f" > {ratio}",
            ),
            SEVERITY_WARNING,
            f"{named} {ON} retransmits {{{{ $value | humanizePercentage }}}} of its TCP segments",
            f"{named_at} retransmits {{{{ $value | humanizePercentage }}}} of the TCP segments it "
            f"sends, above {ratio:.0%} for {config.FOR[retransmits]}: packets "
            "are lost on the way to or from its peers.",
        ),
        alert(
            owner.alert_name("UdpReceiveBufferErrors"),
            _within(owner, f"{owner.rate('udp_receive_buffer_errors')} > 0"),
            SEVERITY_WARNING,
            f"{named} {ON} drops UDP datagrams ({{{{ $labels.family }}}}): receive buffer full",
            f"{named_at} drops {{{{ $value | humanize }}}} {{{{ $labels.family }}}} UDP datagrams "
            "per second because a socket's receive buffer is full: the application reads too slowly, "
            "or its SO_RCVBUF (capped by net.core.rmem_max) is too small.",
        ),
    ]


def _within(owner: Owner, expr: str) -> str:
    """A condition on a container's or pod's series, with its metadata; it ends with its owner."""
    return owner.attach(f"(\n  {expr}\n)")


def _while_served(counter: str, condition: str) -> str:
    """The counter's rate meets the condition, while the exporter still serves the counter."""
    return f"rate({counter}{{{S}}}[{W}]) {condition}\nand {counter}{{{S}}}"


def host_netstat_alerts() -> list:
    """From the netstat collector (the host's conntrack table) and the NAT collector's drop
    counters."""
    return [
        alert(
            "DockernetConntrackTableNearLimit",
            f"dockernet_conntrack_entries{{{S}}}\n  / dockernet_conntrack_entries_limit{{{S}}}"
            f" > {config.CONNTRACK_WARNING_RATIO}",
            SEVERITY_WARNING,
            f"The conntrack table {ON} is {{{{ $value | humanizePercentage }}}} full",
            "The host's conntrack table on {{ $labels.instance }} holds {{ $value | humanizePercentage "
            "}} of its limit (nf_conntrack_max); when it is full, new connections through Docker's "
            "NAT and bridges are dropped.",
        ),
        alert(
            "DockernetConntrackInsertFailures",
            _while_served("dockernet_conntrack_insert_failed_total", "> 0"),
            SEVERITY_WARNING,
            f"Conntrack insertions fail {ON}",
            "The host's conntrack on {{ $labels.instance }} fails to insert {{ $value | humanize }} "
            "entries per second: the table is full, or concurrent packets of one new flow race "
            "(often UDP, such as DNS through Docker's NAT); those packets are dropped.",
        ),
        alert(
            "DockernetFirewallDrops",
            _while_served(
                "dockernet_firewall_dropped_packets_total", f"> {config.FIREWALL_DROPS_PER_SECOND}"
            ),
            SEVERITY_WARNING,
            "Docker drops {{ $labels.reason }} traffic to bridge {{ $labels.bridge }} " + ON,
            "Docker's {{ $labels.reason }} rule drops {{ $value | humanize }} packets per second "
            "bound for bridge {{ $labels.bridge }} (network {{ $labels.network }}) on "
            f"{{{{ $labels.instance }}}}, above {config.FIREWALL_DROPS_PER_SECOND}/s for "
            f"{config.FOR['DockernetFirewallDrops']}: something keeps sending where Docker's "
            "firewall does not let it.",
        ),
    ]


def rules_file() -> dict:
    # One group: Prometheus evaluates a group's rules in order, so an alert reads the recording rules
    # of the same evaluation; groups run independently, and across two the alert could lag a step.
    from .overlay_rules import overlay_alerts  # it reads this module's alert()

    rules = recording_rules() + alert_rules() + overlay_alerts()
    return {"groups": [{"name": "dockernet", "rules": rules}]}
