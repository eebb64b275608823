"""The load client's failures on the timeline, and what the client saw against what the nodes saw.

Per-request results (fortio's access log, vegeta, k6, hey ``-o csv``) are placed on the episodes: a
client failure is **matched** to a node failure it can be (refused to a refusal, reset to a reset, and an
HTTP 502 to a refused or reset upstream connection of a proxy: a consumer that dials pod addresses) within
:data:`MATCH_TOLERANCE_NS`, in time order, one to one, and takes that failure's episode, cause and
consumer; an unmatched client failure inside an episode's window is **unexplained** there (the nodes did
not see it: a node without a capture, a proxy's 5xx...), and outside every window it is a failure
**outside any termination**.

An aggregate result (counts only) is reconciled with the nodes only when its run overlaps the inputs'
time span (or its time is unknown, which the reconciliation says); a client result from another
time is reported as such and not reconciled.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd

from auditor.model.audit import MISSING_NS, Cause, ConsumerKind, FailureKind
from auditor.model.client import ERROR_CLASSES, ClientResult, ErrorClass
from auditor.model.kube import format_time_ns

NS = 1_000_000_000
# the client stamps a request when it starts; the node sees the SYN and its RST a round trip later, on
# a clock that NTP keeps within milliseconds of the client's
MATCH_TOLERANCE_NS = 200_000_000
# the client's view of an episode: from the deletion (minus the watch slack) to the last node's rule
# removal (else the pod's exit) plus this
WINDOW_TAIL_NS = NS

# client class -> the node failures it can be, and whether only a proxy's (a consumer dialing pod addresses:
# nginx answers 502 when its upstream connection is refused or reset), in matching order
_NODE_KINDS: tuple[tuple[ErrorClass, tuple[FailureKind, ...], bool], ...] = (
    (ErrorClass.REFUSED, (FailureKind.REFUSED,), False),
    (ErrorClass.RESET, (FailureKind.RESET,), False),
    (ErrorClass.HTTP_502, (FailureKind.REFUSED, FailureKind.RESET), True),
)
_PROXIES = (ConsumerKind.POD, ConsumerKind.EXTERNAL)
PLACEMENTS = ("matched", "unexplained", "outside")


def client_window(client: ClientResult) -> tuple[int, int] | None:
    """The client's run as ns (start, end), when the tool says; None when unknown."""
    if not client.time_known:
        return None
    table = client.requests_table
    if table is not None and not table.empty:
        t = table["time"].to_numpy(dtype="datetime64[ns]").astype("int64")
        return int(t.min()), int(t.max())
    if client.start is None:
        return None
    start = _ns(client.start)
    end = _ns(client.end) if client.end is not None else start + int((client.duration_s or 0) * NS)
    return start, end


def _ns(t: datetime) -> int:
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    return int(t.timestamp()) * NS + t.microsecond * 1000


def inputs_window(packets: pd.DataFrame, episodes: pd.DataFrame) -> tuple[int, int] | None:
    """The span the node inputs cover: their first to last packet event (else the episodes' windows)."""
    if not packets.empty:
        t = packets["time"].to_numpy(dtype="datetime64[ns]").astype("int64")
        return int(t.min()), int(t.max())
    if not episodes.empty:
        return int(episodes["window_start_ns"].min()), int(episodes["window_end_ns"].max())
    return None


def episode_spans(episodes: pd.DataFrame, timelines: pd.DataFrame) -> pd.DataFrame:
    """Per episode, when a client could see its failures: (episode, pod, start_ns, end_ns)."""
    if episodes.empty:
        return pd.DataFrame(
            {
                "episode": pd.Series(dtype="int64"),
                "pod": pd.Series(dtype=object),
                "start_ns": pd.Series(dtype="int64"),
                "end_ns": pd.Series(dtype="int64"),
            }
        )
    end = episodes["exited_ns"].to_numpy(dtype="int64").copy()
    deleted = episodes["deleted_ns"].to_numpy(dtype="int64")
    grace = np.nan_to_num(episodes["grace_s"].to_numpy(dtype=float), nan=30.0)
    end = np.where(end == MISSING_NS, deleted + (grace * NS).astype("int64"), end)
    if not timelines.empty:
        rule = (
            timelines.loc[timelines["rule_removed_ns"] != MISSING_NS]
            .groupby("episode")["rule_removed_ns"]
            .max()
        )
        r = rule.reindex(episodes["episode"].to_numpy()).fillna(MISSING_NS).to_numpy(dtype="int64")
        end = np.maximum(end, r)
    return pd.DataFrame({
        "episode": episodes["episode"].to_numpy(dtype="int64"),
        "pod": episodes["pod"].astype(str).to_numpy(dtype=object),
        "start_ns": deleted - NS,
        "end_ns": end + WINDOW_TAIL_NS,
    })  # fmt: skip


PLACED_COLUMNS = (
    "time",
    "error_class",
    "status",
    "episode",
    "pod",
    "cause",
    "consumer",
    "placement",
    "node_failure",
)


def place_requests(client: ClientResult, failures: pd.DataFrame, spans: pd.DataFrame) -> pd.DataFrame:
    """The client's failed requests with ``episode`` and ``pod`` (-1, "": none), ``cause`` and ``consumer``
    (the matched node failure's, else ""), ``placement`` (matched | unexplained | outside) and
    ``node_failure`` (row of ``failures``, -1)."""
    table = client.requests_table
    if table is None or table.empty or not client.time_known:
        return pd.DataFrame(columns=list(PLACED_COLUMNS))
    failed = table.loc[table["error_class"].astype(str) != ErrorClass.NONE].reset_index(drop=True)
    t = failed["time"].to_numpy(dtype="datetime64[ns]").astype("int64")
    cls = failed["error_class"].astype(str).to_numpy(dtype=object)
    episode = np.full(len(failed), -1, dtype="int64")
    pod = np.full(len(failed), "", dtype=object)
    cause = np.full(len(failed), "", dtype=object)
    consumer = np.full(len(failed), "", dtype=object)
    node_row = np.full(len(failed), -1, dtype="int64")
    if not failures.empty:
        ft = failures["time"].to_numpy(dtype="datetime64[ns]").astype("int64")
        fkind = failures["failure"].astype(str)
        free = (failures["cause"].astype(str) != Cause.UNRELATED).to_numpy(dtype=bool, copy=True)
        proxy = (
            failures["consumer_kind"].astype(str).isin([k.value for k in _PROXIES]).to_numpy(dtype=bool)
            if "consumer_kind" in failures
            else np.zeros(len(failures), dtype=bool)
        )
        for client_class, node_kinds, proxies_only in _NODE_KINDS:
            candidates = free & fkind.isin([k.value for k in node_kinds]).to_numpy(dtype=bool)
            if proxies_only:
                candidates &= proxy
            mine, theirs = np.flatnonzero(cls == client_class), np.flatnonzero(candidates)
            for i, j in _match_in_order(t[mine], ft[theirs], MATCH_TOLERANCE_NS):
                node_row[mine[i]] = theirs[j]
                free[theirs[j]] = False  # one client failure per node failure, across classes too
        hit = node_row >= 0
        rows = node_row[hit]
        episode[hit] = failures["episode"].to_numpy(dtype="int64")[rows]
        cause[hit] = failures["cause"].astype(str).to_numpy(dtype=object)[rows]
        if "pod" in failures:
            pod[hit] = failures["pod"].astype(str).to_numpy(dtype=object)[rows]
        if "consumer" in failures:
            consumer[hit] = failures["consumer"].astype(str).to_numpy(dtype=object)[rows]
    placement = np.where(node_row >= 0, "matched", "outside").astype(object)
    if not spans.empty:
        # the latest deletion whose window holds the failure: spans in deletion order, later ones overwrite
        names = spans["pod"].astype(str).to_numpy(dtype=object) if "pod" in spans else None
        unmatched = node_row < 0
        order = np.argsort(spans["start_ns"].to_numpy(dtype="int64"), kind="stable")
        for k, (ep, lo, hi) in enumerate(
            spans[["episode", "start_ns", "end_ns"]].to_numpy(dtype="int64")[order]
        ):
            inside = unmatched & (t >= lo) & (t <= hi)
            episode[inside] = ep
            pod[inside] = names[order[k]] if names is not None else ""
            placement[inside] = "unexplained"
    return pd.DataFrame({
        "time": failed["time"], "error_class": cls, "status": failed["status"].to_numpy(), "episode": episode,
        "pod": pod, "cause": cause, "consumer": consumer, "placement": placement, "node_failure": node_row,
    })  # fmt: skip


def _match_in_order(a: np.ndarray, b: np.ndarray, tolerance: int) -> list[tuple[int, int]]:
    """One-to-one pairs (i, j) of two time lists, in time order, |a[i] - b[j]| <= tolerance: walk both
    sorted; a pair is taken when close, else the earlier of the two is left unmatched."""
    ia, ib = np.argsort(a, kind="stable"), np.argsort(b, kind="stable")
    pairs: list[tuple[int, int]] = []
    i = j = 0
    while i < len(ia) and j < len(ib):
        ta, tb = int(a[ia[i]]), int(b[ib[j]])
        if abs(ta - tb) <= tolerance:
            pairs.append((int(ia[i]), int(ib[j])))
            i += 1
            j += 1
        elif ta < tb:
            i += 1
        else:
            j += 1
    return pairs


def reconcile(
    client: ClientResult,
    failures: pd.DataFrame,
    placed: pd.DataFrame,
    window: tuple[int, int] | None,
) -> dict[str, Any]:
    """Compare what the client saw with what the nodes saw and explained (see the module doc)."""
    related = failures["cause"] != Cause.UNRELATED
    refused = (failures["failure"] == FailureKind.REFUSED) & related
    node_refused = int(refused.sum())
    # a refused upstream connection of a proxy (a pod or an address dialing the pod IP) is a 502 for its client
    direct = (
        failures["consumer_kind"].isin([ConsumerKind.POD, ConsumerKind.EXTERNAL])
        if "consumer_kind" in failures
        else False
    )
    proxy_refused = int((refused & direct).sum())
    service_refused = node_refused - proxy_refused
    reset = (failures["failure"] == FailureKind.RESET) & related
    node_reset = int(reset.sum())
    proxy_reset = int((reset & direct).sum())  # accepted, then reset by the pod: a 502 for the proxy's client
    unrelated = int((~related).sum())
    explained = int(
        failures["cause"].isin([Cause.PROPAGATION_GAP, Cause.INFLIGHT_RESET, Cause.AFTER_REMOVAL]).sum()
    )
    by_error = client.by_error
    client_refused = int(by_error.get("connection_refused", 0))
    client_reset = int(by_error.get("connection_reset", 0)) + int(by_error.get("eof", 0))
    ran = client_window(client)
    overlaps = ran is None or window is None or (ran[0] <= window[1] and ran[1] >= window[0])
    notes: list[str] = []
    if ran is not None and not overlaps:
        assert window is not None
        notes.append(
            f"the client ran {format_time_ns(ran[0])[:19]}Z .. {format_time_ns(ran[1])[:19]}Z, not in the "
            f"inputs' window {format_time_ns(window[0])[:19]}Z .. {format_time_ns(window[1])[:19]}Z: not reconciled"
        )
    elif proxy_refused:
        client_502 = int(client.by_class.get("http_502", 0))
        if client_refused != service_refused:
            notes.append(
                f"client saw {client_refused} refused, kube-proxy's connections met {service_refused}"
            )
        if client_502 != proxy_refused + proxy_reset:
            notes.append(
                f"client saw {client_502} HTTP 502, the proxies' upstream connections were refused {proxy_refused} "
                f"and reset {proxy_reset} time(s): "
                + ("a proxy that retries another upstream turns a refusal into a success"
                   if client_502 < proxy_refused + proxy_reset else
                   "the other 502s came from upstream connections that timed out, or from other proxies")
            )  # fmt: skip
    elif client_refused != node_refused:
        notes.append(
            f"client saw {client_refused} refused, the captured nodes attributed {node_refused}: "
            + (
                "the rest happened on nodes without a capture, or before/after the captured window"
                if client_refused > node_refused
                else "the extra refusals came from other clients (or were retried by the client)"
            )
        )
    out: dict[str, Any] = {
        "client_tool": client.tool,
        "client_format": client.format,
        "client_requests": client.requests,
        "client_failed": client.failed,
        "client_refused": client_refused,
        "client_reset": client_reset,
        "client_by_class": {c: int(client.by_class.get(c, 0)) for c in ERROR_CLASSES},
        # None: the tool gives no time for its run (hey's text): reconciled as if it ran during the inputs
        "client_window": [format_time_ns(ran[0]), format_time_ns(ran[1])] if ran else None,
        "inputs_window": [format_time_ns(window[0]), format_time_ns(window[1])] if window else None,
        "reconciled": overlaps,
        "node_refused": node_refused,
        "node_refused_by_proxies": proxy_refused,
        "node_reset_by_proxies": proxy_reset,
        "client_502": int(client.by_class.get("http_502", 0)),
        "node_reset": node_reset,
        "node_unrelated": unrelated,
        "node_explained": explained,
        "explained_fraction": (min(explained, client.failed) / client.failed)
        if client.failed and overlaps
        else None,
        "notes": notes,
    }
    if not placed.empty:
        out["placed"] = _placed_summary(placed)
    return out


def _placed_summary(placed: pd.DataFrame) -> dict[str, Any]:
    """Client failures by placement and class, and per episode (its pod) by class, cause, the consumer whose
    failure each matched, and how many matched or stayed unexplained."""
    by_placement = {
        p: {
            str(c): int(n)
            for c, n in placed.loc[placed["placement"] == p, "error_class"].value_counts().items()
        }
        for p in PLACEMENTS
    }
    per_episode: dict[str, dict[str, Any]] = {}
    for ep, g in placed.loc[placed["episode"] >= 0].groupby("episode"):
        matched = g.loc[g["placement"] == "matched"]
        per_episode[str(ep)] = {
            "pod": str(g["pod"].iloc[0]) if "pod" in g else "",
            "by_class": {str(c): int(n) for c, n in g["error_class"].value_counts().items()},
            "by_cause": {str(c): int(n) for c, n in matched["cause"].value_counts().items()},
            "by_consumer": {str(c): int(n) for c, n in matched["consumer"].value_counts().items()}
            if "consumer" in g
            else {},
            "matched": len(matched),
            "unexplained": int((g["placement"] == "unexplained").sum()),
        }
    return {
        "requests_failed": len(placed),
        "matched": int((placed["placement"] == "matched").sum()),
        "unexplained": int((placed["placement"] == "unexplained").sum()),
        "outside_terminations": int((placed["placement"] == "outside").sum()),
        "by_placement": by_placement,
        "episodes": per_episode,
    }
