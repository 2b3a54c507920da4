"""The one shared config: every selector, threshold and name the dashboards
and rules use. Change it here, then run `make dashboards`.
"""

from __future__ import annotations

# Selects the exporter's targets in every query. Set it to the job name your
# scrape config gives the exporter.
SELECTOR = 'job="dockernet"'

# Grafana: the datasource variable every panel uses, and dashboard defaults.
DATASOURCE_VAR = "datasource"
DATASOURCE_TYPE = "prometheus"
UID_PREFIX = "dockernet"
TAGS = ["dockernet", "docker", "network"]
REFRESH = "30s"
TIME_FROM = "now-1h"
TIMEZONE = "browser"
GRAFANA_FOLDER = "Docker network"
# Where the provisioning file tells Grafana to read the dashboard JSON from.
DASHBOARDS_PATH = "/var/lib/grafana/dashboards/dockernet"
PROMETHEUS_URL = "${PROMETHEUS_URL}"

# Recording rules: the rate window of the per-container series.
RATE_WINDOW = "5m"
TOP_TALKERS = 10

# A Linux bridge holds at most 1,023 ports: the kernel's BR_MAX_PORTS is 1,024 port numbers, but
# number 0 is reserved, and the 1,024th `ip link set ... master` fails with "Exchange full" (EXFULL;
# checked on kernel 6.18). Docker users hit it: then no further container joins that network.
BRIDGE_PORT_LIMIT = 1023
BRIDGE_PORT_WARNING_RATIO = 0.9

# Errors plus drops per second, per container or pod interface and counter.
INTERFACE_FAULTS_PER_SECOND = 1

# Retransmitted TCP segments per segment sent, per container or pod namespace (the netstat
# collector).
TCP_RETRANSMIT_RATIO = 0.05
# The host's conntrack table: entries against its size limit.
CONNTRACK_WARNING_RATIO = 0.9
# Packets per second dropped by one of Docker's drop rules (isolation, unpublished port, direct access).
FIREWALL_DROPS_PER_SECOND = 1

# Overlay networks: addresses in use against what the subnet can hand out (per node), and the bytes
# VXLAN adds to each packet (IPv4 underlay).
ADDRESS_USE_WARNING_RATIO = 0.9
VXLAN_OVERHEAD_BYTES = 50

# How long each fault must last before its alert fires.
FOR = {
    "DockernetExporterDown": "5m",
    "DockernetDockerUnreachable": "5m",
    "DockernetRuntimeUnreachable": "5m",
    "DockernetCollectorFailing": "15m",
    "DockernetOrphanedVeth": "15m",
    "DockernetBridgePortsNearLimit": "15m",
    "DockernetPublishedPortRuleMissing": "5m",
    "DockernetMasqueradeRuleMissing": "5m",
    "DockernetContainerInterfaceFaults": "15m",
    "DockernetContainerListenOverflows": "5m",
    "DockernetContainerTcpRetransmits": "15m",
    "DockernetContainerUdpReceiveBufferErrors": "15m",
    "DockernetPodInterfaceFaults": "15m",
    "DockernetPodListenOverflows": "5m",
    "DockernetPodTcpRetransmits": "15m",
    "DockernetPodUdpReceiveBufferErrors": "15m",
    "DockernetConntrackTableNearLimit": "5m",
    "DockernetConntrackInsertFailures": "15m",
    "DockernetFirewallDrops": "15m",
    "DockernetNetworkAddressesNearExhaustion": "15m",
    "DockernetOverlayVxlanTransmitWithoutReceive": "10m",
    "DockernetOverlayPeerMissing": "10m",
    "DockernetOverlayMtuMismatch": "5m",
    "DockernetOverlayLeaked": "15m",
    "DockernetFlowUnanswered": "5m",
    "DockernetFlowEventsLost": "5m",
}

# Alerts link here (runbook_url + "#" + alert name in lower case); point it at
# where you publish docs/runbook.md.
RUNBOOK_URL = "docs/runbook.md"
