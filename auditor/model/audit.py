"""The audit's records: what the engine reads (:class:`AuditInputs`) and the rows of what it finds.

The engine works on tables (a rollout has millions of packet events), but every table has one typed
record that names its columns, in order: :class:`Episode` (one terminated pod IP), :class:`NodeTimeline`
(one episode as one node saw it) and :class:`Failure` (one failed connection with its cause). The column
tuples are derived from the dataclasses, as :mod:`auditor.model.packet` does for packet events, so a new
field cannot drift between the record and the table; :func:`records` turns a table back into records.

Times are ``int`` nanoseconds since the epoch (UTC); :data:`MISSING_NS` stands for "unknown" in integer
columns (it is numpy's ``NaT``, so a view as ``datetime64[ns]`` shows NaT). Every time that may come
from a coarse source (a one-second Kubernetes timestamp) has a ``*_precise`` flag next to it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, fields
from enum import StrEnum
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from auditor.model.client import ClientResult
from auditor.model.kube import InputProblem, KubeInput

if TYPE_CHECKING:
    import pandas as pd

MISSING_NS: int = int(np.iinfo(np.int64).min)


class Cause(StrEnum):
    """Why a connection failed (see :mod:`auditor.correlate.causes`)."""

    PROPAGATION_GAP = "propagation_gap"
    INFLIGHT_RESET = "inflight_reset"
    AFTER_REMOVAL = "after_removal"
    NO_ENDPOINTS = "no_endpoints"
    UNRELATED = "unrelated"


CAUSES: tuple[str, ...] = tuple(c.value for c in Cause)
# the causes a rollout is blamed for (the others are outside any termination)
ROLLOUT_FAILURE_CAUSES: tuple[str, ...] = (Cause.PROPAGATION_GAP, Cause.INFLIGHT_RESET, Cause.AFTER_REMOVAL)


class FailureKind(StrEnum):
    """What the client's connection met."""

    REFUSED = "refused"  # a SYN answered by RST (nothing listening)
    RESET = "reset"  # an established connection reset
    UNREACHABLE = "unreachable"  # an ICMP destination unreachable quoting the connection


class ConsumerKind(StrEnum):
    """Who opened the connections to an endpoint (see :mod:`auditor.correlate.consumers`)."""

    KUBE_PROXY = "kube-proxy"  # a node's service rules (the consumer's name is the node)
    POD = "pod"  # a pod dialing pod IPs itself: an ingress, a proxy, a sidecar (name: namespace/pod)
    EXTERNAL = "external"  # an address outside the pod network: a load balancer, a node-local proxy


class Verdict(StrEnum):
    """GAP: failures attributed to terminations (or a preStop shorter than a measured delay); SAFE: every
    termination covered by evidence and none failed; INCONCLUSIVE: the inputs cannot tell (with reasons)."""

    GAP = "GAP"
    SAFE = "SAFE"
    INCONCLUSIVE = "INCONCLUSIVE"


# ``auditor analyze --fail-on-gap`` exit codes (2 is a usage error, as click uses it)
EXIT_CODES: dict[str, int] = {Verdict.SAFE: 0, Verdict.GAP: 1, Verdict.INCONCLUSIVE: 3}


@dataclass(frozen=True, slots=True)
class Episode:
    """One terminated pod IP (a dual-stack pod has two episodes). Field order is the column order."""

    episode: int  # id, 0.. in order of deletion
    pod_uid: str
    namespace: str
    pod: str
    pod_node: str  # "" when unknown
    ip: str
    replicaset: str  # "" when none
    deployment: str  # "" when none
    rollout: str  # namespace/deployment (else replicaset, else pod name)
    deleted_ns: int  # when the deletion was requested (see correlate.episodes.deletion_of)
    deleted_precise: bool
    prestop_s: float  # NaN: no preStop sleep known
    prestop_kind: str  # a PrestopKind value
    grace_s: float  # the deletion's grace period (else the spec's); NaN when unknown
    endpoint_terminating_ns: int = MISSING_NS  # the EndpointSlice marked it not ready / terminating
    endpoint_terminating_precise: bool = False
    endpoint_removed_ns: int = MISSING_NS  # the EndpointSlice dropped it
    endpoint_removed_precise: bool = False
    exited_ns: int = MISSING_NS  # the pod was gone (DELETED received, else its containers finished)
    exited_precise: bool = False
    window_start_ns: int = MISSING_NS  # traffic to the IP inside [start, end] belongs to the episode
    window_end_ns: int = MISSING_NS


@dataclass(frozen=True, slots=True)
class NodeTimeline:
    """One episode as one node saw it. Field order is the column order."""

    episode: int
    node: str
    rule_removed_ns: int  # this node stopped routing new connections to the pod
    rule_removed_source: str  # "dataplane:<backend>" | "inferred:last_syn" | ""
    listener_closed_ns: int
    listener_closed_source: str  # "ebpf:listen_close" | "inferred:synack_refusal_midpoint" | ...
    listener_closed_pm_s: float  # inferred: +- half the bracket [last SYN-ACK, first refusal] (0 when measured)
    last_syn_ns: int
    first_refused_ns: int
    propagation_delay_s: float  # rule removed - deleted; NaN when the rule removal is unknown
    propagation_delay_precise: bool
    gap_s: float  # rule removed - listener closed, >= 0


@dataclass(frozen=True, slots=True)
class Failure:
    """One failed connection. Field order is the column order of the failure table."""

    time_ns: int
    node: str
    failure: str  # a FailureKind value
    server_ip: str  # the side that refused/reset (a pod IP, or a service IP seen before un-DNAT)
    server_port: int
    client_ip: str
    client_port: int
    kind: str  # the packet event's EventKind
    tcp_flags: int
    seq: int
    ack: int
    source: str  # "pcap" | "ebpf"
    file: str
    frame: int
    server_is_pod: bool = False
    episode: int = -1  # -1: no termination episode
    cause: str = Cause.UNRELATED
    pod: str = ""
    rollout: str = ""
    consumer_kind: str = ""  # a ConsumerKind value; "" outside any episode
    consumer: str = ""  # the node (kube-proxy), namespace/pod, or the address (external)


@dataclass(frozen=True, slots=True)
class ConsumerTimeline:
    """One consumer of one terminating endpoint, as one node saw it. Field order is the column order."""

    episode: int
    consumer_kind: str  # a ConsumerKind value
    consumer: str
    node: str  # where its connections were seen
    new_connections: int  # SYNs to the pod in the episode window
    last_new_ns: int  # its last new connection to the pod after the deletion (MISSING_NS: none)
    first_refused_ns: int
    refused: int
    resets: int  # its established connections reset by the pod
    propagation_delay_s: float  # last new connection - deletion; NaN when none after the deletion
    propagation_delay_precise: bool
    gap_s: float  # last new connection - the pod's listener close, >= 0


@dataclass(frozen=True, slots=True)
class Coverage:
    """A time span during which a node's traffic was recorded: a capture file (first to last packet seen),
    or a node agent's run (start to its last update). ``lost``: events the recorder lost in the span
    (kernel ring buffer, queue); ``truncated``: the file ends mid-record (it may have been cut)."""

    node: str
    source: str  # "capture" | "agent" | "events"
    start_ns: int
    end_ns: int
    file: str = ""
    lost: int = 0
    truncated: bool = False


@dataclass(frozen=True, slots=True)
class NodeEvidence:
    """What one node's inputs can say about one episode. Field order is the column order."""

    episode: int
    node: str
    needed_start_ns: int  # the deletion minus 1 s
    needed_end_ns: int  # the node's rule removal, else the pod's exit, else the deletion + grace
    covered_start_ns: int  # the recorded span overlapping the episode (MISSING_NS: none)
    covered_end_ns: int
    covered: bool  # the recorded span holds [needed_start, needed_end]
    connections: int  # new connections to the pod's IP seen in the episode window (SYNs, refusals)
    rule_records: int  # dataplane records for the pod's IP on this node in the window
    lost: int  # events lost by the recorders overlapping the window
    truncated: bool  # a capture overlapping the window ends mid-record
    delay_measured: bool  # this node's propagation delay is known

    @property
    def traffic_seen(self) -> bool:
        return self.connections > 0 or self.rule_records > 0


def _columns(cls: type) -> tuple[str, ...]:
    return tuple("time" if f.name == "time_ns" else f.name for f in fields(cls))


EPISODE_COLUMNS: tuple[str, ...] = _columns(Episode)
EVIDENCE_COLUMNS: tuple[str, ...] = _columns(NodeEvidence)
CONSUMER_COLUMNS: tuple[str, ...] = _columns(ConsumerTimeline)
TIMELINE_COLUMNS: tuple[str, ...] = _columns(NodeTimeline)
FAILURE_COLUMNS: tuple[str, ...] = _columns(Failure)
# the packet-derived part of a failure row (find_failures); the engine adds the rest
FAILURE_PACKET_COLUMNS: tuple[str, ...] = FAILURE_COLUMNS[: FAILURE_COLUMNS.index("server_is_pod")]

R = TypeVar("R", Episode, NodeTimeline, Failure, NodeEvidence, ConsumerTimeline)


def records(table: pd.DataFrame, cls: type[R]) -> Iterator[R]:
    """The rows of an engine table as typed records (``time`` columns back to ``time_ns`` ints)."""
    import pandas as pd

    names = [f.name for f in fields(cls)]
    cols = ["time" if n == "time_ns" else n for n in names]
    data: dict[str, Any] = {}
    for name, col in zip(names, cols, strict=True):
        s = table[col]
        if col == "time":
            data[name] = pd.DatetimeIndex(s).as_unit("ns").asi8.tolist()
        else:
            data[name] = s.tolist()
    for values in zip(*(data[n] for n in names), strict=True):
        yield cls(*values)


@dataclass(slots=True)
class AuditInputs:
    """Everything one audit reads, as :func:`auditor.sources.inputs.load_inputs` produces it.

    ``packets``: the packet event table (:mod:`auditor.model.packet`); ``kube``: pods as typed
    :class:`~auditor.model.kube.PodInfo` (tombstones kept), EndpointSlice changes and Events;
    ``dataplane``: rule changes (:mod:`auditor.model.dataplane`) or None; ``client``: the load
    generator's result or None. ``problems``: every unreadable or suspicious piece of input, kept and
    shown in every report; ``info``: what was read (counts per input, for the report's ``inputs``);
    ``coverage``: when each node's traffic was recorded (the evidence a SAFE verdict needs).
    """

    packets: pd.DataFrame
    kube: KubeInput
    dataplane: pd.DataFrame | None = None
    client: ClientResult | None = None
    problems: list[str] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)
    coverage: list[Coverage] = field(default_factory=list)  # when each node's traffic was recorded

    def report_inputs(self) -> dict[str, Any]:
        """The ``inputs`` section of the report: what was read, then the problems and their count."""
        out = dict(self.info)
        out["problems"] = [str(p) for p in self.problems]
        out["problems_count"] = len(self.problems)
        return out

    def add_problems(self, problems: list[InputProblem] | list[str]) -> None:
        self.problems.extend(str(p) for p in problems)
