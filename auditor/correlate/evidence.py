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

from collections.abc import Sequence

import numpy as np
import pandas as pd

from auditor.correlate.attach import attach_episodes
from auditor.correlate.columns import KindView, as_category, codes_in
from auditor.correlate.consumers import SynTraffic
from auditor.enrich.protocols import PodGetter
from auditor.model.audit import EVIDENCE_COLUMNS, MISSING_NS, Coverage, FailureKind, NodeEvidence, records
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
    syns: SynTraffic,
) -> pd.DataFrame:
    """One row per episode and node (every node with input), columns :data:`EVIDENCE_COLUMNS` (the
    fields of :class:`NodeEvidence`), ordered by episode (as in ``episodes``) then node.

    Vectorized over (episode, node) pairs; the recorded spans per node are few (files, agent runs)."""
    spans = derived_coverage(packets, coverage)
    all_nodes = sorted(set(nodes) | {c.node for c in spans})
    if episodes.empty or not all_nodes:
        return empty_evidence()
    n_nodes = len(all_nodes)
    ep_ids = episodes["episode"].to_numpy(dtype="int64")
    ep_pos = pd.Index(ep_ids)
    node_index = pd.Index(all_nodes, dtype=object)
    n = len(ep_ids) * n_nodes
    row_ep = np.repeat(np.arange(len(ep_ids)), n_nodes)
    row_node = np.tile(np.arange(n_nodes), len(ep_ids))

    def pair_key(episode_ids: np.ndarray, node_codes: np.ndarray) -> np.ndarray:
        """Row position of (episode id, node position) pairs; -1 where either is unknown."""
        e = np.asarray(ep_pos.get_indexer(np.asarray(episode_ids, dtype="int64")), dtype="int64")
        ok = (e >= 0) & (node_codes >= 0)
        return np.where(ok, e * n_nodes + node_codes, -1)

    def counts(key: np.ndarray) -> np.ndarray:
        key = key[key >= 0]
        return np.bincount(key, minlength=n)[:n].astype("int64")

    rule = np.full(n, MISSING_NS, dtype="int64")
    inferred = np.zeros(n, dtype=bool)
    measured = np.zeros(n, dtype=bool)
    if not timelines.empty:
        key = pair_key(timelines["episode"].to_numpy(dtype="int64"), codes_in(timelines["node"], node_index))
        ok = key >= 0
        rule[key[ok]] = timelines["rule_removed_ns"].to_numpy(dtype="int64")[ok]
        source = KindView(timelines["rule_removed_source"])
        inferred[key[ok]] = source.startswith("inferred")[ok]
        measured[key[ok]] = ~np.isnan(timelines["propagation_delay_s"].to_numpy(dtype=float))[ok]

    deleted = episodes["deleted_ns"].to_numpy(dtype="int64")[row_ep]
    grace = episodes["grace_s"].to_numpy(dtype=float)[row_ep]
    exited = episodes["exited_ns"].to_numpy(dtype="int64")[row_ep]
    w_start = episodes["window_start_ns"].to_numpy(dtype="int64")[row_ep]
    w_end = episodes["window_end_ns"].to_numpy(dtype="int64")[row_ep]
    grace_ns = (np.where(np.isnan(grace), 30.0, grace) * NS).astype("int64")
    end = np.where(
        rule != MISSING_NS,
        rule + np.where(inferred, INFERRED_TAIL_NS, 0),
        np.where(exited != MISSING_NS, exited, deleted + grace_ns),
    )
    start = deleted - LEAD_NS

    covered_start = np.full(n, MISSING_NS, dtype="int64")
    covered_end = np.full(n, MISSING_NS, dtype="int64")
    lost = np.zeros(n, dtype="int64")
    truncated = np.zeros(n, dtype=bool)
    by_node: dict[str, list[Coverage]] = {}
    for c in spans:
        by_node.setdefault(c.node, []).append(c)
    for code, node in enumerate(all_nodes):
        rows = row_node == code
        cs = by_node.get(node, [])
        merged = _merge(cs)
        if merged:
            covered_start[rows], covered_end[rows] = _best_spans(merged, start[rows], end[rows])
        for c in cs:  # the recorders' losses in spans overlapping the episode window
            over = rows & (c.start_ns <= w_end) & (c.end_ns >= w_start)
            lost[over] += c.lost
            if c.truncated:
                truncated |= over & (w_start <= c.end_ns) & (c.end_ns <= w_end)

    connections = np.zeros(n, dtype="int64")
    if not syns.empty:
        key = pair_key(syns.groups["episode"].to_numpy(dtype="int64"), codes_in(syns.groups["node"], node_index))
        ok = key >= 0
        connections += np.bincount(
            key[ok], weights=syns.groups["new_connections"].to_numpy(dtype="int64")[ok], minlength=n
        )[:n].astype("int64")
    if not failures.empty:
        ref = failures.loc[(failures["failure"] == FailureKind.REFUSED) & (failures["episode"] >= 0)]
        connections += counts(pair_key(ref["episode"].to_numpy(dtype="int64"), codes_in(ref["node"], node_index)))
    rule_records = np.zeros(n, dtype="int64")
    if dataplane is not None and not dataplane.empty:
        t = pd.to_datetime(dataplane["time"], utc=True).to_numpy(dtype="datetime64[ns]").astype("int64")
        ep = attach_episodes(t, dataplane["ip"], episodes, pods)
        hit = ep >= 0
        rule_records += counts(pair_key(ep[hit], codes_in(dataplane["node"], node_index)[hit]))

    covered = (covered_start != MISSING_NS) & (covered_start <= start) & (covered_end >= end)
    columns: dict[str, np.ndarray] = {
        "episode": ep_ids[row_ep], "node": np.asarray(node_index, dtype=object)[row_node],
        "needed_start_ns": start, "needed_end_ns": end, "covered_start_ns": covered_start,
        "covered_end_ns": covered_end, "covered": covered, "connections": connections,
        "rule_records": rule_records, "lost": lost, "truncated": truncated, "delay_measured": measured,
    }  # fmt: skip
    assert tuple(columns) == EVIDENCE_COLUMNS, "evidence columns are NodeEvidence's fields, in order"
    return pd.DataFrame(columns)


def empty_evidence() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype="object") for c in EVIDENCE_COLUMNS})


def evidence_by_episode(evidence: pd.DataFrame, episode_ids: Sequence[int]) -> dict[int, list[NodeEvidence]]:
    """The evidence rows of some episodes as typed records, per episode id."""
    out: dict[int, list[NodeEvidence]] = {}
    if evidence.empty or not len(episode_ids):
        return out
    rows = evidence.loc[evidence["episode"].isin(list(episode_ids))]
    for r in records(rows, NodeEvidence):
        out.setdefault(r.episode, []).append(r)
    return out


def _merge(spans: list[Coverage]) -> list[tuple[int, int]]:
    merged: list[list[int]] = []
    for c in sorted(spans, key=lambda c: c.start_ns):
        if merged and c.start_ns <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], c.end_ns)
        else:
            merged.append([c.start_ns, c.end_ns])
    return [(s, e) for s, e in merged]


def _best_spans(merged: list[tuple[int, int]], start: np.ndarray, end: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the recorded span (of ``merged``, sorted, disjoint) that overlaps [start, end] the most
    (the first on ties); when none does, the nearest one before it, else the first one."""
    s = np.array([m[0] for m in merged], dtype="int64")[:, None]
    e = np.array([m[1] for m in merged], dtype="int64")[:, None]
    overlap = np.minimum(e, end[None, :]) - np.maximum(s, start[None, :])
    touching = (s <= end[None, :]) & (e >= start[None, :])
    score = np.where(touching, overlap, -1)
    best = np.argmax(score, axis=0)
    none = score.max(axis=0) < 0
    if none.any():
        before = (e[:, 0][:, None] < start[None, :]).sum(axis=0) - 1  # the last span ending before start
        best = np.where(none, np.where(before >= 0, before, 0), best)
    return s[best, 0], e[best, 0]


def evidently_safe(evidence: pd.DataFrame) -> set[int]:
    """Episodes whose evidence holds, on the whole table at once (the rule of
    :func:`episode_reasons` for its empty answer): some node saw traffic to
    the pod, some such node measured the delay, and every such node covered the episode without losses."""
    if evidence.empty:
        return set()
    seen = (evidence["connections"].to_numpy(dtype="int64") > 0) | (evidence["rule_records"].to_numpy(dtype="int64") > 0)
    sound = (
        evidence["covered"].to_numpy(dtype=bool)
        & (evidence["lost"].to_numpy(dtype="int64") == 0)
        & ~evidence["truncated"].to_numpy(dtype=bool)
    )
    per = pd.DataFrame({
        "episode": evidence["episode"].to_numpy(dtype="int64"), "seen": seen, "bad": seen & ~sound,
        "measured": seen & evidence["delay_measured"].to_numpy(dtype=bool),
    }).groupby("episode", sort=False)[["seen", "bad", "measured"]].any()  # fmt: skip
    ok = per["seen"].to_numpy() & ~per["bad"].to_numpy() & per["measured"].to_numpy()
    return set(per.index.to_numpy(dtype="int64")[ok].tolist())


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
