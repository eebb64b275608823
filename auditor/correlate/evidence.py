"""What the inputs can say about each termination: the evidence a SAFE verdict needs.

"No failed connection" means something only if the inputs watched the right place at the right time. For
every episode and node (:class:`~auditor.model.audit.NodeEvidence`):

* **covered**: the node's recorded span (a capture file's first to last packet, a node agent's run)
  holds the episode from the deletion - 1 s to the node's rule removal (a removal inferred from the
  last SYN needs 1 s of recording after it: the capture must outlive the routing), else the pod's exit,
  else the deletion + grace;
* **traffic**: new connections to the pod's IP seen by the node in the episode window (SYNs,
  refusals), or dataplane records for the IP (the node routed to the pod);
* **losses**: events the node's recorders lost in a span overlapping the window, a capture that ends
  mid-record inside it;
* **delay measured**: the node's propagation delay is known.

An episode without failures is SAFE when at least one node saw traffic to the pod, some node measured
its delay, and every node that saw traffic covered the episode without losses; otherwise it is
INCONCLUSIVE, with one sentence per missing piece (:func:`episode_reasons`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from operator import attrgetter

import numpy as np
import pandas as pd

from auditor.correlate.attach import attach_episodes
from auditor.correlate.columns import as_category
from auditor.enrich.protocols import PodGetter
from auditor.model.audit import EVIDENCE_COLUMNS, MISSING_NS, Coverage, FailureKind, NodeEvidence
from auditor.model.kube import format_time_ns

NS = 1_000_000_000
LEAD_NS = NS  # the recording must start this long before the deletion
INFERRED_TAIL_NS = NS  # ... and outlive a rule removal inferred from the last SYN by this much


def derived_coverage(packets: pd.DataFrame, explicit: Sequence[Coverage]) -> list[Coverage]:
    """The explicit spans, plus, for each node without one, the span of its packet events."""
    out = list(explicit)
    known = {c.node for c in explicit}
    if packets.empty:
        return out
    t = packets["time"].to_numpy(dtype="datetime64[ns]").astype("int64")
    nodes = as_category(packets["node"])
    frame = pd.DataFrame({"code": np.asarray(nodes.codes, dtype="int64"), "t": t})
    span = frame.groupby("code", sort=True)["t"].agg(["min", "max"])
    names = np.asarray(nodes.categories.astype(str), dtype=object)
    for code, lo, hi in zip(span.index.tolist(), span["min"].tolist(), span["max"].tolist(), strict=True):
        if code >= 0 and str(names[code]) not in known:
            out.append(Coverage(str(names[code]), "events", int(lo), int(hi)))
    return out


def build_evidence(
    episodes: pd.DataFrame,
    timelines: pd.DataFrame,
    nodes: list[str],
    packets: pd.DataFrame,
    failures: pd.DataFrame,
    dataplane: pd.DataFrame | None,
    coverage: Sequence[Coverage],
    pods: PodGetter,
    syns: pd.DataFrame,
) -> dict[int, list[NodeEvidence]]:
    """Per episode id, one :class:`NodeEvidence` per node (every node with input)."""
    spans = derived_coverage(packets, coverage)
    all_nodes = sorted(set(nodes) | {c.node for c in spans})
    out: dict[int, list[NodeEvidence]] = {}
    if episodes.empty or not all_nodes:
        return out
    connections = _connections(syns, failures)
    rules = _rule_records(episodes, dataplane, pods)
    timeline: dict[tuple[int, str], tuple[int, str, bool]] = {}
    if not timelines.empty:
        for ep_id, node, rule, source, delay in zip(
            timelines["episode"].to_numpy(dtype="int64").tolist(), timelines["node"].astype(str).tolist(),
            timelines["rule_removed_ns"].to_numpy(dtype="int64").tolist(),
            timelines["rule_removed_source"].astype(str).tolist(),
            timelines["propagation_delay_s"].to_numpy(dtype=float).tolist(), strict=True,
        ):  # fmt: skip
            timeline[(ep_id, node)] = (rule, source, not math.isnan(delay))
    by_node: dict[str, list[Coverage]] = {}
    for c in spans:
        by_node.setdefault(c.node, []).append(c)
    merged = {node: _merge(cs) for node, cs in by_node.items()}
    columns = ("episode", "deleted_ns", "grace_s", "exited_ns", "window_start_ns", "window_end_ns")
    for ep_id, deleted, grace, exited, w_start, w_end in zip(
        *(episodes[c].to_numpy().tolist() for c in columns), strict=True
    ):
        rows = out.setdefault(int(ep_id), [])
        grace_ns = int((30.0 if math.isnan(grace) else grace) * NS)
        for node in all_nodes:
            rule, source, measured = timeline.get((ep_id, node), (MISSING_NS, "", False))
            if rule != MISSING_NS:
                end = rule + (INFERRED_TAIL_NS if source.startswith("inferred") else 0)
            elif exited != MISSING_NS:
                end = exited
            else:
                end = deleted + grace_ns
            start = deleted - LEAD_NS
            span = _best_span(merged.get(node, []), start, end)
            overlapping = [c for c in by_node.get(node, []) if c.start_ns <= w_end and c.end_ns >= w_start]
            rows.append(NodeEvidence(
                episode=int(ep_id), node=node, needed_start_ns=start, needed_end_ns=end,
                covered_start_ns=span[0], covered_end_ns=span[1],
                covered=span[0] != MISSING_NS and span[0] <= start and span[1] >= end,
                connections=connections.get((ep_id, node), 0), rule_records=rules.get((ep_id, node), 0),
                lost=sum(c.lost for c in overlapping),
                truncated=any(c.truncated and w_start <= c.end_ns <= w_end for c in overlapping),
                delay_measured=measured,
            ))  # fmt: skip
    return out


def evidence_frame(evidence: dict[int, list[NodeEvidence]]) -> pd.DataFrame:
    """The evidence as a table, columns :data:`EVIDENCE_COLUMNS`."""
    rows = [r for rs in evidence.values() for r in rs]
    if not rows:
        return pd.DataFrame({c: pd.Series(dtype="object") for c in EVIDENCE_COLUMNS})
    values = attrgetter(*(f.name for f in dataclasses.fields(NodeEvidence)))
    columns = zip(*map(values, rows), strict=True)
    return pd.DataFrame(dict(zip(EVIDENCE_COLUMNS, map(list, columns), strict=True)))


def _merge(spans: list[Coverage]) -> list[tuple[int, int]]:
    merged: list[list[int]] = []
    for c in sorted(spans, key=lambda c: c.start_ns):
        if merged and c.start_ns <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], c.end_ns)
        else:
            merged.append([c.start_ns, c.end_ns])
    return [(s, e) for s, e in merged]


def _best_span(merged: list[tuple[int, int]], start: int, end: int) -> tuple[int, int]:
    """The recorded span that overlaps [start, end] the most; when none does, the nearest one before it
    (else after it); (MISSING_NS, MISSING_NS) when nothing was recorded."""
    best, best_overlap = (MISSING_NS, MISSING_NS), -1
    for s, e in merged:
        overlap = min(e, end) - max(s, start)
        if s <= end and e >= start and overlap > best_overlap:
            best, best_overlap = (s, e), overlap
    if best_overlap < 0 and merged:
        before = [m for m in merged if m[1] < start]
        best = before[-1] if before else merged[0]
    return best


def _connections(syns: pd.DataFrame, failures: pd.DataFrame) -> dict[tuple[int, str], int]:
    """New connections to each episode's pod per node: SYNs to it (captures; ``syns`` from
    :func:`auditor.correlate.consumers.syn_consumers`) and refusals by it (any source)."""
    out: dict[tuple[int, str], int] = {}
    if not syns.empty:
        node = syns["node"]
        _count(out, syns["episode"].to_numpy(dtype="int64"), as_category(node))
    if not failures.empty:
        ref = failures.loc[(failures["failure"] == FailureKind.REFUSED) & (failures["episode"] >= 0)]
        _count(out, ref["episode"].to_numpy(dtype="int64"), as_category(ref["node"]))
    return out


def _count(out: dict[tuple[int, str], int], episodes: np.ndarray, nodes: np.ndarray | pd.Categorical) -> None:
    """Add the number of rows per (episode, node) to ``out`` (grouped on integer codes)."""
    if len(episodes) == 0:
        return
    cat = nodes if isinstance(nodes, pd.Categorical) else pd.Categorical(np.asarray(nodes, dtype=object))
    codes = np.asarray(cat.codes, dtype="int64")
    width = max(1, len(cat.categories))
    keys, counts = np.unique(np.asarray(episodes, dtype="int64") * width + codes, return_counts=True)
    names = np.asarray(cat.categories.astype(str), dtype=object)
    for key, n in zip(keys.tolist(), counts.tolist(), strict=True):
        k = (int(key // width), str(names[key % width]))
        out[k] = out.get(k, 0) + int(n)


def _rule_records(
    episodes: pd.DataFrame, dataplane: pd.DataFrame | None, pods: PodGetter
) -> dict[tuple[int, str], int]:
    if dataplane is None or dataplane.empty:
        return {}
    t = pd.to_datetime(dataplane["time"], utc=True).to_numpy(dtype="datetime64[ns]").astype("int64")
    ep = attach_episodes(t, dataplane["ip"], episodes, pods)
    hit = ep >= 0
    out: dict[tuple[int, str], int] = {}
    _count(out, ep[hit], dataplane["node"].astype(str).to_numpy(dtype=object)[hit])
    return out


def episode_reasons(pod: str, ip: str, deleted_ns: int, rows: list[NodeEvidence]) -> list[str]:
    """Why an episode without failures cannot be called SAFE (empty: it can), one sentence each."""
    seen = [r for r in rows if r.traffic_seen]
    if not seen:
        recorded = [r for r in rows if r.covered_end_ns != MISSING_NS]
        if not recorded:
            return [f"nothing was recorded around the deletion of {pod}"]
        last = max(r.covered_end_ns for r in recorded)
        first = min(r.covered_start_ns for r in recorded)
        if last < deleted_ns:
            return [f"the inputs end before the deletion of {pod} (last event {_t(last)})"]
        if first > deleted_ns:
            return [f"the inputs start after the deletion of {pod} (first event {_t(first)})"]
        return [f"no connection to {ip} ({pod}) seen on any node"]
    reasons: list[str] = []
    for r in seen:
        if not r.covered:
            if r.covered_start_ns > r.needed_start_ns:
                reasons.append(f"{r.node}: the recording starts after the deletion of {pod} "
                               f"({_t(r.covered_start_ns)})")  # fmt: skip
            else:
                what = "the deletion of" if r.covered_end_ns < deleted_ns else "the end of the episode of"
                reasons.append(f"{r.node}: the recording ends before {what} {pod} ({_t(r.covered_end_ns)})")
        if r.lost:
            reasons.append(f"{r.node}: the recorder lost {r.lost:,} event(s) in a span that holds the "
                           f"episode of {pod}")  # fmt: skip
        if r.truncated:
            reasons.append(f"{r.node}: a capture ends mid-record during the episode of {pod}")
    if not any(r.delay_measured for r in seen):
        reasons.append(f"propagation delay to {pod} not measured on any node (no new connection to {ip} "
                       "after its deletion and no dataplane record)")  # fmt: skip
    return reasons


def _t(ns: int) -> str:
    return format_time_ns(ns)[:23] + "Z"
