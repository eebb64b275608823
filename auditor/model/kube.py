"""Kubernetes timeline: pods (with tombstones), endpoint condition changes and Events.

Built by :func:`auditor.sources.kube_stream.read_kube_streams` from ``kubectl --watch`` streams and
``kubectl get -o json`` lists; read by the pod index (enrich) and the correlation engine.

Times and their precision
-------------------------
All times are ``int`` nanoseconds since the epoch, UTC, or ``None`` when unknown.
Kubernetes object timestamps (``creationTimestamp``, ``deletionTimestamp``, ``finishedAt``,
``lastTransitionTime``...) have one-second resolution: they are *coarse*. The ``observedAt`` field a
watcher adds to each watch event (RFC 3339 with nanoseconds) is *precise*. Fields whose source is fixed
say so in their comment; the two fields that may come from either carry a ``*_precise`` flag.
In the tables, every ``time`` column has a ``precise`` bool column next to it.
"""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

_RFC3339 = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9})\d*)?(Z|z|[+-]\d{2}:\d{2})$"
)


def parse_time_ns(text: str) -> tuple[int, bool]:
    """Parse an RFC 3339 time exactly (no float): ``(ns since epoch UTC, had a sub-second fraction)``.

    Raises ``ValueError`` for anything else.
    """
    m = _RFC3339.match(text.strip()) if isinstance(text, str) else None
    if m is None:
        raise ValueError(f"not an RFC 3339 time: {text!r}")
    y, mo, d, hh, mi, ss = (int(g) for g in m.groups()[:6])
    frac, tz = m.group(7), m.group(8)
    seconds = calendar.timegm((y, mo, d, hh, mi, ss, 0, 0, 0))
    if tz not in ("Z", "z"):
        sign = 1 if tz[0] == "+" else -1
        seconds -= sign * (int(tz[1:3]) * 3600 + int(tz[4:6]) * 60)
    ns = int(frac.ljust(9, "0")) if frac else 0
    return seconds * 1_000_000_000 + ns, frac is not None


def format_time_ns(ns: int) -> str:
    """RFC 3339 UTC with nine fractional digits (the inverse of :func:`parse_time_ns`)."""
    seconds, frac = divmod(ns, 1_000_000_000)
    import time

    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{frac:09d}Z"


@dataclass(frozen=True, slots=True)
class InputProblem:
    """One unreadable or suspicious piece of input, kept and shown, never raised."""

    file: str
    line: int  # 1-based; 0 when the problem concerns the whole file
    message: str

    def __str__(self) -> str:
        where = f"{self.file} line {self.line}" if self.line else self.file
        return f"{where}: {self.message}"


@dataclass(frozen=True, slots=True)
class PodRef:
    """What the enrichers attach to an address: which pod held it."""

    uid: str
    name: str
    namespace: str
    node: str | None
    replicaset: str | None
    deployment: str | None


class PrestopKind(StrEnum):
    """How a pod's preStop hook delays SIGTERM (see :func:`auditor.sources.kube_pod.prestop_of`)."""

    NONE = "none"
    SLEEP = "sleep"  # the native sleep action, or an exec hook that only sleeps
    EXEC = "exec"  # another command: prestop_sleep_s is the sleeps found in it (a lower bound) or None
    HTTP = "http"
    TCP = "tcp"
    UNKNOWN = "unknown"


class WatchType(StrEnum):
    ADDED = "ADDED"
    MODIFIED = "MODIFIED"
    DELETED = "DELETED"


@dataclass(frozen=True, slots=True)
class WatchEvent:
    """One object change as a watcher (or a kubectl watch stream, or a list) delivers it.

    ``obj`` is the object as the API server sent it (a plain dict); ``observed_ns`` when the watcher
    received it (precise), None when unknown (a list item, kubectl output without observedAt);
    ``bound_ns`` for a change learnt by a relist: it happened before this, but when is unknown.
    """

    type: str  # a WatchType value
    obj: dict[str, Any]
    observed_ns: int | None = None
    bound_ns: int | None = None
    object_kind: str = ""  # "Pod", "EndpointSlice", "Event"...; "" : the object's own "kind"

    @property
    def kind(self) -> str:
        return self.object_kind or str(self.obj.get("kind") or "")


@dataclass(frozen=True, slots=True)
class PodInfo:
    """Everything the streams said about one pod (uid), kept after its deletion (a tombstone)."""

    uid: str
    namespace: str
    name: str
    node: str | None  # spec.nodeName
    ips: tuple[str, ...]  # every pod IP ever seen, in order of first sight
    ips_first_seen_ns: tuple[int, ...]  # per IP: observedAt of the event where it appeared (precise);
    # creation (coarse) if the first version seen of the pod already had it, or without observedAt
    replicaset: str | None  # ownerReferences kind=ReplicaSet
    deployment: str | None  # replicaset minus "-<pod-template-hash>"
    host_network: bool  # spec.hostNetwork: its IP is the node's, never resolved to this pod
    created_ns: int | None  # metadata.creationTimestamp (coarse)
    first_seen_ns: int | None  # observedAt of the first event (precise) else created_ns (coarse)
    first_seen_precise: bool
    ready_ns: int | None  # first Ready=True: observedAt of the event showing the transition (precise),
    ready_precise: bool  # else the condition's lastTransitionTime (coarse)
    deletion_ns: int | None  # first metadata.deletionTimestamp (coarse) = request time + deletion_grace_s
    deletion_observed_ns: int | None  # observedAt of the first event carrying deletionTimestamp (precise)
    deleted: bool  # a DELETED watch event was seen
    deleted_observed_ns: int | None  # observedAt of the DELETED event (precise)
    deletion_grace_s: int | None  # metadata.deletionGracePeriodSeconds of that first version
    termination_grace_s: int | None  # spec.terminationGracePeriodSeconds
    prestop_sleep_s: float | None  # longest preStop sleep over containers; None = none or unknown
    prestop_kind: str  # "none" | "sleep" | "exec" | "http" | "tcp" | "unknown" (see kube_stream docs)
    has_readiness_probe: bool
    container_finished_ns: int | None  # max state.terminated.finishedAt (coarse)
    exit_code: int | None  # of the container that finished last
    exit_reason: str | None  # e.g. "Completed", "Error", "OOMKilled"
    phase: str | None  # last status.phase seen
    restarts: int  # max restartCount over containers (lastState.terminated = an earlier run)
    deleted_bound_ns: int | None = None  # DELETED learnt by a relist: it happened before this (coarse)

    def __post_init__(self) -> None:
        """Only values the stream reader can produce: a record that breaks these is a bug where it is
        built, not something the engine should guess around."""
        problems = []
        if not self.uid:
            problems.append("empty uid")
        if len(self.ips) != len(self.ips_first_seen_ns):
            problems.append(f"{len(self.ips)} IPs but {len(self.ips_first_seen_ns)} first-seen times")
        if len(set(self.ips)) != len(self.ips):
            problems.append("an IP listed twice")
        if self.deleted_observed_ns is not None and not self.deleted:
            problems.append("deleted_observed_ns without deleted")
        if self.deleted_bound_ns is not None and not self.deleted:
            problems.append("deleted_bound_ns without deleted")
        if self.deletion_observed_ns is not None and self.deletion_ns is None:
            problems.append("deletion_observed_ns without deletion_ns (deletionTimestamp)")
        if self.prestop_kind not in {k.value for k in PrestopKind}:
            problems.append(f"unknown prestop_kind {self.prestop_kind!r}")
        if self.first_seen_precise and self.first_seen_ns is None:
            problems.append("first_seen_precise without first_seen_ns")
        if self.restarts < 0:
            problems.append("negative restarts")
        if problems:
            raise ValueError(f"PodInfo {self.namespace}/{self.name}: " + "; ".join(problems))

    def ref(self) -> PodRef:
        return PodRef(self.uid, self.name, self.namespace, self.node, self.replicaset, self.deployment)


ENDPOINT_COLUMNS: tuple[str, ...] = (
    "time", "precise", "namespace", "service", "slice", "address", "pod", "pod_uid", "node",
    "ready", "serving", "terminating", "present", "ports", "trigger_time",
)  # fmt: skip
EVENT_COLUMNS: tuple[str, ...] = (
    "time", "precise", "namespace", "kind", "name", "uid", "reason", "message", "count",
)  # fmt: skip


def endpoint_frame(rows: list[dict[str, object]]) -> pd.DataFrame:
    """The endpoint-change table (one row per (slice, address) change), with fixed dtypes."""
    import pandas as pd

    df = pd.DataFrame(rows, columns=list(ENDPOINT_COLUMNS))
    df["time"] = pd.to_datetime(pd.Series(df["time"], dtype="Int64"), unit="ns", utc=True)
    df["trigger_time"] = pd.to_datetime(pd.Series(df["trigger_time"], dtype="Int64"), unit="ns", utc=True)
    df["precise"] = df["precise"].astype(bool)
    df["present"] = df["present"].astype(bool)
    for name in ("ready", "serving", "terminating"):
        df[name] = df[name].astype("boolean")
    for name in ("namespace", "service", "slice", "address", "pod", "pod_uid", "node", "ports"):
        df[name] = df[name].astype("string")
    return df


def event_frame(rows: list[dict[str, object]]) -> pd.DataFrame:
    """The Kubernetes Events table, with fixed dtypes."""
    import pandas as pd

    df = pd.DataFrame(rows, columns=list(EVENT_COLUMNS))
    df["time"] = pd.to_datetime(pd.Series(df["time"], dtype="Int64"), unit="ns", utc=True)
    df["precise"] = df["precise"].astype(bool)
    df["count"] = df["count"].astype("Int64")
    for name in ("namespace", "kind", "name", "uid", "reason", "message"):
        df[name] = df[name].astype("string")
    return df


@dataclass(slots=True)
class KubeInput:
    """The Kubernetes timeline read from one or more files."""

    pods: dict[str, PodInfo]  # by uid
    endpoints: pd.DataFrame  # ENDPOINT_COLUMNS, sorted by time
    events: pd.DataFrame  # EVENT_COLUMNS, sorted by time
    problems: list[InputProblem] = field(default_factory=list)
    events_read: int = 0  # watch events / list items used
    events_skipped: int = 0  # BOOKMARK, ERROR, unknown kinds, unreadable chunks
    skipped_kinds: dict[str, int] = field(default_factory=dict)  # object kind -> events not used
