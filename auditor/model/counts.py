"""Exact event counts: the probes' in-kernel aggregates, one record per key and time bucket.

Per-event detail (:class:`~auditor.model.packet.PacketEvent`) is a budget: under a storm the ring
buffer fills and detail events are lost (counted). The counts are not: every probe event is also
counted in the kernel under what a report counts it by (``probes/aggregates.h``), and the agent writes
one :class:`CountRecord` per key and bucket to ``counts-<node>-<stamp>.jsonl``
(:func:`~auditor.model.logfiles.counts_name`).

``addr``/``port`` are the connection's *server side*: the address a refused client tried, the sender
of an RST that refused a SYN, a listener, the destination of a SYN or of a quoted datagram, otherwise
the end with the lower port. ``side`` says which end of the event's packet that is, in the direction
:class:`PacketEvent` uses (``src`` sent it). Kernel values stay raw (``_raw``) as in the detail events:
``state_raw`` is the TCP state (of the resetting socket, 0 for none; of the reset one; before the
close), ``flags_raw`` the TCP flags of the packet a socketless RST answered (``rst_sent``) or of the
dropped or quoted packet, ``reason_raw`` the ``sk_rst_reason``, ``skb_drop_reason`` or ICMP code.

:func:`failure_counts` turns records into what the engine calls failures
(:mod:`auditor.correlate.failures`), per server address and port, without the per-connection pairing
it does on detail events: a refusal seen from both ends on this node (the server's RST and the
client's ``refused``) counts once, as the larger of the two totals.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, fields
from typing import Any

from auditor.model.packet import unreachable_fails_a_connection

SYN, ACK = 0x02, 0x10
REFUSED, RESET, UNREACHABLE = "refused", "reset", "unreachable"  # FailureKind values (model.audit)


@dataclass(frozen=True, slots=True)
class CountRecord:
    """Events of one aggregate key in one bucket ``[time_ns, time_ns + bucket_ns)``."""

    time_ns: int  # UTC start of the bucket
    bucket_ns: int
    kind: str  # an EventKind value
    family: int  # 4 or 6
    addr: str  # the server side (see the module docstring)
    port: int
    side: str  # "src" | "dst": the end of the event's packet addr:port is
    reason_raw: int
    state_raw: int
    flags_raw: int
    ip_proto: int
    events: int  # exact
    detail_lost: int  # of which no detail event reached the agent (output channel full)
    node: str = ""
    bucket_raw: int = 0  # bpf_ktime_get_ns() // bucket_ns

    def to_json_line(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> CountRecord:
        """One record from its JSON object; KeyError / TypeError / ValueError if it is not one."""
        names = [f.name for f in fields(cls)]
        return cls(**{n: obj[n] for n in names if n in obj})

    @property
    def server(self) -> str:
        """``addr:port`` (``[addr]:port`` for IPv6)."""
        return f"[{self.addr}]:{self.port}" if ":" in self.addr else f"{self.addr}:{self.port}"


def failure_of(rec: CountRecord) -> str | None:
    """The failure an event of this key stands for, as :mod:`auditor.correlate.failures` names it:
    a socketless ``rst_sent`` that did not answer an ACK refused a connection, any other ``rst_sent``
    reset one; a client's ``refused``; an ICMP unreachable. None for the rest."""
    if rec.kind == "rst_sent":
        answered_ack = rec.flags_raw != 0 and rec.flags_raw & ACK
        return REFUSED if rec.state_raw == 0 and not answered_ack else RESET
    if rec.kind == "refused":
        return REFUSED
    if rec.kind == "icmp_unreachable":
        return UNREACHABLE if unreachable_fails_a_connection(rec.flags_raw) else None
    return None


@dataclass
class ServerCounts:
    """Failures of one server address and port, and every event counted under it."""

    refused_by_server: int = 0  # socketless RSTs that answered a SYN (the server is on this node)
    refused_by_client: int = 0  # client sockets refused (the client is on this node)
    reset: int = 0
    unreachable: int = 0
    events: int = 0
    detail_lost: int = 0

    @property
    def refused(self) -> int:
        """Refused connections: both ends count the same ones when both are on this node."""
        return max(self.refused_by_server, self.refused_by_client)

    def as_dict(self) -> dict[str, int]:
        return {"refused": self.refused, "reset": self.reset, "unreachable": self.unreachable,
                "events": self.events, "detail_lost": self.detail_lost}  # fmt: skip


def failure_counts(records: Iterable[CountRecord]) -> dict[str, ServerCounts]:
    """Per server (``addr:port``): its failures and events, summed over the records given."""
    out: dict[str, ServerCounts] = {}
    for r in records:
        c = out.get(r.server)
        if c is None:
            c = out[r.server] = ServerCounts()
        c.events += r.events
        c.detail_lost += r.detail_lost
        failure = failure_of(r)
        if failure == REFUSED:
            if r.kind == "rst_sent":
                c.refused_by_server += r.events
            else:
                c.refused_by_client += r.events
        elif failure == RESET:
            c.reset += r.events
        elif failure == UNREACHABLE:
            c.unreachable += r.events
    return out


def total_failures(servers: Iterable[ServerCounts]) -> dict[str, int]:
    """``{"refused": n, "reset": n, "unreachable": n}`` over servers."""
    out = {REFUSED: 0, RESET: 0, UNREACHABLE: 0}
    for c in servers:
        out[REFUSED] += c.refused
        out[RESET] += c.reset
        out[UNREACHABLE] += c.unreachable
    return out


def sampled_note(detail: int, events: int, exact: bool = True) -> str:
    """``detail sampled: 1.1 M of 3.0 M events; counts exact`` (or ``detail complete``)."""
    tail = "counts exact" if exact else "counts incomplete (the aggregates overflowed)"
    if detail >= events:
        return f"detail complete: {_amount(events)} events; {tail}"
    return f"detail sampled: {_amount(detail)} of {_amount(events)} events; {tail}"


def _amount(n: int) -> str:
    if n >= 1_000_000:
        return f"{n / 1e6:.1f} M"
    if n >= 10_000:
        return f"{n / 1e3:.0f} k"
    return f"{n:,}"


__all__ = [
    "CountRecord",
    "ServerCounts",
    "failure_counts",
    "failure_of",
    "sampled_note",
    "total_failures",
]
