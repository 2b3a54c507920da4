"""Alerts of the flows collector (docs/flows.md): connections between two workloads that go
unanswered, and conntrack events lost."""

from __future__ import annotations

from . import config
from .rules import ON, SEVERITY_WARNING, _while_served, alert

PAIR = "source, source_namespace, destination, destination_namespace, protocol, port"
PEERS = (
    "{{ $labels.source }} → {{ $labels.destination }} "
    "{{ $labels.protocol }}{{ if $labels.port }}/{{ $labels.port }}{{ end }}"
)


def flow_alerts() -> list:
    unanswered, lost = "DockernetFlowUnanswered", "DockernetFlowEventsLost"
    return [
        alert(
            unanswered,
            # Per flow while it is served: it clears when the flow's series go away.
            f"sum by (job, instance, {PAIR}) (\n  "
            f"{_while_served('dockernet_flow_connections_unanswered_total', '> 0')}\n)",
            SEVERITY_WARNING,
            f"Connections {PEERS} {ON} go unanswered",
            f"{{{{ $value | humanize }}}} connections per second from {{{{ $labels.source }}}} to "
            f"{{{{ $labels.destination }}}} ({{{{ $labels.protocol }}}} port "
            f"{{{{ $labels.port }}}}) on {{{{ $labels.instance }}}} got no reply packet at all, for "
            f"{config.FOR[unanswered]}: a firewall dropping them, a dead peer, or nothing "
            "listening on a UDP port.",
        ),
        alert(
            lost,
            _while_served("dockernet_flow_events_lost_total", "> 0"),
            SEVERITY_WARNING,
            f"dockernet-exporter {ON} loses conntrack events",
            "The kernel drops conntrack events for want of room in dockernet-exporter's socket on "
            "{{ $labels.instance }}: connections opened and closed between two reads of the table "
            "are not counted. Raise --collector.flows.rcvbuf.",
        ),
    ]
