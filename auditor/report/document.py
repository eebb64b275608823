"""The audit as one JSON document with stable keys (``auditor analyze --json``).

Top-level keys: ``verdict`` (GAP, SAFE or INCONCLUSIVE), ``verdict_line``, ``verdict_reasons`` (what an
INCONCLUSIVE verdict lacks), ``exit_code`` (of ``--fail-on-gap``), ``recommendation``, ``causes``,
``nodes`` (per-node gaps), ``rollouts`` (with ``consumers`` and the ``slowest_consumer``), ``episodes``
(each with its verdict and reasons, its per-node timeline, ``evidence``: per node what was recorded and
seen, and ``consumers``: kube-proxy of a node, a pod dialing pod IPs, an external address, each with its
last new connection, refusals and propagation delay), ``client``, ``reconciliation``,
``inputs`` (what was read, and counts of anything unparsed or unmatched) and ``precision`` (which times
are precise; with delays measured from one-second object timestamps, by how much the recommendation may
be inflated and a ``statement`` that says so: :func:`precision_statement`).
Times are RFC 3339 UTC strings with nanoseconds; durations are seconds (float).
"""

from __future__ import annotations

import math
from dataclasses import asdict, is_dataclass
from datetime import datetime
from typing import Any

import pandas as pd

from auditor.correlate.audit import AuditResult
from auditor.correlate.causes import CAUSES
from auditor.correlate.episodes import COARSE_SLACK_NS, MISSING_NS
from auditor.correlate.recommend import recommend
from auditor.model.audit import EXIT_CODES
from auditor.model.kube import format_time_ns

SCHEMA_VERSION = 1


def iso(ns: Any) -> str | None:
    """RFC 3339 UTC with nanoseconds; None for a missing time."""
    if ns is None or int(ns) == MISSING_NS:
        return None
    return format_time_ns(int(ns))


def _num(v: Any) -> float | None:
    if v is None:
        return None
    f = float(v)
    return None if math.isnan(f) else round(f, 6)


def _plain(v: Any) -> Any:
    if isinstance(v, pd.DataFrame):  # a table inside a record (the client's requests): not inlined
        return {"rows": len(v)}
    if is_dataclass(v) and not isinstance(v, type):
        return _plain(asdict(v))
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_plain(x) for x in v]
    if isinstance(v, float):
        return _num(v)
    if isinstance(v, pd.Timestamp):
        return iso(int(v.value))
    if hasattr(v, "item") and not isinstance(v, str):
        return _plain(v.item())
    if isinstance(v, datetime):
        return v.isoformat()
    return v


def _evidence(res: AuditResult) -> dict[int, list[dict[str, Any]]]:
    """Per episode, what each node's inputs can say about it (see auditor.correlate.evidence)."""
    out: dict[int, list[dict[str, Any]]] = {}
    for r in res.evidence_records():
        out.setdefault(r.episode, []).append({
            "node": r.node, "covered": r.covered,
            "recorded_from": iso(r.covered_start_ns), "recorded_to": iso(r.covered_end_ns),
            "needed_from": iso(r.needed_start_ns), "needed_to": iso(r.needed_end_ns),
            "connections": r.connections, "rule_records": r.rule_records, "lost_events": r.lost,
            "truncated": r.truncated, "delay_measured": r.delay_measured,
        })  # fmt: skip
    return out


def _consumers(res: AuditResult) -> dict[int, list[dict[str, Any]]]:
    """Per episode, who opened connections to the pod and when each stopped (correlate.consumers)."""
    out: dict[int, list[dict[str, Any]]] = {}
    if res.consumers.empty:
        return out
    for r in res.consumer_records():
        out.setdefault(r.episode, []).append({
            "kind": r.consumer_kind, "consumer": r.consumer, "node": r.node,
            "new_connections": r.new_connections, "last_new_connection": iso(r.last_new_ns),
            "first_refused": iso(r.first_refused_ns), "refused": r.refused, "resets": r.resets,
            "propagation_delay_s": _num(r.propagation_delay_s),
            "propagation_delay_precise": r.propagation_delay_precise, "gap_s": _num(r.gap_s),
        })  # fmt: skip
    return out


PRECISE_RECORDER = "auditor record --kube-only --out DIR"


def precision_statement(doc: dict[str, Any]) -> dict[str, Any]:
    """What the one-second resolution of object timestamps may do to the recommendation.

    A delay measured from a deletion known only by its object timestamp (``propagation_delay_precise``
    false: no ``observedAt``) can be up to one second too long (the timestamp is truncated to the
    second, so the deletion looks earlier than it was). When such a delay is the largest one, the
    recommended preStop may be inflated: ``prestop_seconds_at_least`` is what the engine's own rule
    gives with those delays one second shorter (but not below a precise delay). ``statement`` (None when
    every delay is precise) says it in one sentence and names the precise recorder."""
    slack = COARSE_SLACK_NS / 1e9
    coarse: list[float] = []  # every measured delay (per node, per consumer), by precision
    precise: list[float] = []
    coarse_eps = measured_eps = 0  # terminations with a measured delay, and those with a coarse one
    for e in doc["episodes"]:
        flags = []
        for row in [*e["nodes"], *e["consumers"]]:
            d = row.get("propagation_delay_s")
            if d is not None:
                flags.append(bool(row.get("propagation_delay_precise")))
                (precise if flags[-1] else coarse).append(float(d))
        measured_eps += bool(flags)
        coarse_eps += not all(flags)
    out: dict[str, Any] = {"coarse_delays": len(coarse), "precise_delays": len(precise),
                           "resolution_s": slack, "inflation_s": 0.0, "prestop_seconds_at_least": None,
                           "statement": None}  # fmt: skip
    if not coarse:
        return out
    rec = doc.get("recommendation") or {}
    prestop, worst = rec.get("prestop_seconds"), rec.get("max_propagation_delay_s")
    what = (f"the propagation delays of {coarse_eps} of {measured_eps} terminations are measured from Kubernetes "
            f"object timestamps ({slack:g} s resolution, no receipt times), so each may be up to {slack:g} s too long")  # fmt: skip
    if prestop and worst is not None and max(coarse) >= max(precise, default=-1.0):
        lower = max(max(coarse) - slack, max(precise, default=0.0), 0.0)
        at_least = recommend(lower, rec.get("max_drain_s"), float(rec.get("margin_seconds") or 0.0)).prestop_seconds
        out["prestop_seconds_at_least"] = at_least
        out["inflation_s"] = float(prestop - (at_least or 0))
        if at_least is not None and at_least < prestop:
            what += (f": the largest ({worst:.3f} s) may really be {lower:.3f} s, so the recommended preStop of "
                     f"{prestop} s may be {prestop - at_least} s more than needed ({at_least} s would do then)")  # fmt: skip
        else:
            what += f"; the recommended preStop of {prestop} s stays the same either way"
    out["statement"] = (f"precision: {what}. For exact times record with `{PRECISE_RECORDER}` (receipt times, "
                        "no root) or the agent while you roll out.")  # fmt: skip
    return out


def build_document(res: AuditResult) -> dict[str, Any]:
    episodes = []
    evidence = _evidence(res)
    consumers = _consumers(res)
    tl = res.timelines
    fl = res.failures
    for ep in res.episodes.itertuples(index=False):
        causes = fl.loc[fl["episode"] == ep.episode, "cause"].value_counts()
        nodes = []
        for row in tl.loc[tl["episode"] == ep.episode].itertuples(index=False):
            nfl = fl.loc[(fl["episode"] == ep.episode) & (fl["node"] == row.node), "cause"].value_counts()
            nodes.append(
                {
                    "node": row.node,
                    "rule_removed": iso(row.rule_removed_ns),
                    "rule_removed_source": row.rule_removed_source or None,
                    "listener_closed": iso(row.listener_closed_ns),
                    "listener_closed_source": row.listener_closed_source or None,
                    "listener_closed_pm_s": _num(row.listener_closed_pm_s),
                    "propagation_delay_s": _num(row.propagation_delay_s),
                    "propagation_delay_precise": bool(row.propagation_delay_precise),
                    "gap_s": _num(row.gap_s),
                    "causes": {c: int(nfl.get(c, 0)) for c in CAUSES},
                }
            )
        episodes.append(
            {
                "episode": int(str(ep.episode)),
                "pod": ep.pod,
                "namespace": ep.namespace,
                "pod_uid": ep.pod_uid,
                "ip": ep.ip,
                "pod_node": ep.pod_node or None,
                "rollout": ep.rollout,
                "replicaset": ep.replicaset or None,
                "deleted": iso(ep.deleted_ns),
                "deleted_precise": bool(ep.deleted_precise),
                "endpoint_terminating": iso(ep.endpoint_terminating_ns),
                "endpoint_terminating_precise": bool(ep.endpoint_terminating_precise),
                "endpoint_removed": iso(ep.endpoint_removed_ns),
                "exited": iso(ep.exited_ns),
                "exited_precise": bool(ep.exited_precise),
                "prestop_s": _num(ep.prestop_s),
                "prestop_kind": ep.prestop_kind or None,
                "termination_grace_s": _num(ep.grace_s),
                "causes": {c: int(causes.get(c, 0)) for c in CAUSES},
                "verdict": res.episode_verdicts.get(int(str(ep.episode)), ("", []))[0] or None,
                "reasons": res.episode_verdicts.get(int(str(ep.episode)), ("", []))[1],
                "nodes": nodes,
                "evidence": evidence.get(int(str(ep.episode)), []),
                "consumers": consumers.get(int(str(ep.episode)), []),
            }
        )
    nodes_summary = []
    if not tl.empty:
        for node, g in tl.groupby("node", sort=True):
            d = pd.to_numeric(g["propagation_delay_s"], errors="coerce")
            nfl = fl.loc[fl["node"] == node, "cause"].value_counts()
            nodes_summary.append(
                {
                    "node": node,
                    "episodes_measured": int(d.notna().sum()),
                    "max_propagation_delay_s": _num(d.max()) if d.notna().any() else None,
                    "median_propagation_delay_s": _num(d.median()) if d.notna().any() else None,
                    "max_gap_s": _num(g["gap_s"].max()),
                    "causes": {c: int(nfl.get(c, 0)) for c in CAUSES},
                }
            )
    doc = {
        "schema_version": SCHEMA_VERSION,
        "verdict": res.verdict,
        "verdict_line": res.verdict_line,
        "verdict_reasons": [reason for r in res.rollouts for reason in r.reasons],
        "exit_code": EXIT_CODES.get(res.verdict, 3),
        "recommendation": _plain(res.recommendation),
        "causes": dict(res.causes),
        "nodes": nodes_summary,
        "rollouts": [_plain(r.as_dict()) for r in res.rollouts],
        "episodes": episodes,
        "client": _plain(res.client) if res.client is not None else None,
        "reconciliation": _plain(res.reconciliation),
        "inputs": _plain(res.inputs),
        "precision": {
            "precise": "packet times, watch receipt times (observedAt), dataplane records, live probe events",
            "coarse": "Kubernetes object timestamps (deletionTimestamp, finishedAt, ...): one-second resolution",
        },
    }
    doc["precision"].update(precision_statement(doc))
    return doc
