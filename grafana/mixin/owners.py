"""Who owns a network namespace's series: a Docker or Podman container, or a Kubernetes pod. The
rules and the dashboards are written once, for either."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from . import config

S = config.SELECTOR
W = config.RATE_WINDOW


@dataclass(frozen=True)
class Owner:
    kind: str  # the metric infix: dockernet_<kind>_...
    title: str  # the alert name infix and what the texts call it
    keys: str  # the labels that identify one, for joins
    legend: str
    named: str  # how an alert's text names one
    named_at: str  # ... with its identity and host
    attach: Callable[[str], str]  # the owner's metadata, ending the series the moment it ends

    def metric(self, counter: str) -> str:
        return f"dockernet_{self.kind}_{counter}_total"

    def rate(self, counter: str, selector: str = f"{{{S}}}") -> str:
        return f"rate({self.metric(counter)}{selector}[{W}])"

    def record(self, counter: str) -> str:
        return f"{self.kind}_interface:dockernet_{self.kind}_{counter}:rate{W}"

    @property
    def faults_record(self) -> str:
        return self.record("faults")

    def alert_name(self, what: str) -> str:
        return f"Dockernet{self.title}{what}"


def _with_project(expr: str) -> str:
    """Attach compose_project/compose_service; the series ends the moment its container does."""
    return (
        f"{expr}\n* on (job, instance, container_id) group_left (compose_project, compose_service)\n"
        f"  dockernet_container_info{{{S}}}\n"
    )


def _while_ready(expr: str) -> str:
    """The series ends the moment its pod's sandbox is no longer ready."""
    return f"{expr}\nand on (job, instance, namespace, pod) dockernet_pod_info{{{S}}}\n"


CONTAINER = Owner(
    kind="container",
    title="Container",
    keys="container_id",
    legend="{{container_name}}",
    named="Container {{ $labels.container_name }}",
    named_at="Container {{ $labels.container_name }} ({{ $labels.container_id }}) on "
    "{{ $labels.instance }}",
    attach=_with_project,
)
POD = Owner(
    kind="pod",
    title="Pod",
    keys="namespace, pod",
    legend="{{namespace}}/{{pod}}",
    named="Pod {{ $labels.namespace }}/{{ $labels.pod }}",
    named_at="Pod {{ $labels.namespace }}/{{ $labels.pod }} on {{ $labels.instance }}",
    attach=_while_ready,
)
OWNERS = (CONTAINER, POD)
