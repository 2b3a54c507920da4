"""Flows between workloads: the host's conntrack entries attributed to workloads by address and
counted per (source, destination, protocol, server port). Pure: the caller passes the entries, the
attribution built from a snapshot, and the time.

A connection's source is its opener, the original tuple's source; its destination is whoever
answers, the reply tuple's source. Both tuples together read through NAT: a published port's
connection (DNAT) is answered by the container behind it, a masqueraded one (SNAT) was opened by
the container behind the host's address. The port is the server's, the reply tuple's source port:
the container's port for a published one; a port in the ephemeral range is left out.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    pass

WORKLOAD, HOST, EXTERNAL, OTHER = "workload", "host", "external", "other"
NEW, UPDATE, DESTROY = "new", "update", "destroy"  # what a conntrack event says
IPS_SEEN_REPLY = 1 << 1  # status bits
IPS_ASSURED = 1 << 2
TCP_SYN_SENT = 1  # TCP_CONNTRACK_SYN_SENT: the opener's SYN, nothing back yet


class Entry(NamedTuple):
    """One connection as the kernel reports it. Addresses are packed (4 or 16 bytes); the
    original tuple is the opener's view (source = client), the reply tuple the answerer's
    (its source is the server after any DNAT). ``counters`` is (original packets, original
    bytes, reply packets, reply bytes), None without accounting."""

    id: int
    protocol: int
    status: int
    src: bytes
    dst: bytes
    sport: int
    dport: int
    reply_src: bytes
    reply_dst: bytes
    reply_sport: int
    reply_dport: int
    counters: tuple[int, int, int, int] | None = None
    tcp_state: int = 0  # TCP_CONNTRACK_*, 0 where the message has none

    @property
    def answered(self) -> bool:
        """Whether a reply packet was seen. A reset answering a SYN ends the entry without the
        SEEN_REPLY bit; its TCP state (past SYN_SENT) or its reply counters still tell."""
        return bool(
            self.status & IPS_SEEN_REPLY
            or self.tcp_state > TCP_SYN_SENT
            or (self.counters is not None and self.counters[2] > 0)
        )
