"""Per rollout: counts by cause, the propagation delay per node, the preStop / grace period that would
have closed the gap, and a one-line verdict."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any, cast

import numpy as np
import pandas as pd

from auditor.model.audit import CAUSES, MISSING_NS, ROLLOUT_FAILURE_CAUSES, Verdict


@dataclass
class Recommendation:
    prestop_seconds: int | None  # preStop sleep at least this (whole seconds)
    termination_grace_period_seconds: int | None
    margin_seconds: float
    max_propagation_delay_s: float | None
    max_drain_s: float | None
    basis: str
    slowest_consumer: str | None = None  # "<kind> <name>" whose delay the preStop must cover


@dataclass
class RolloutSummary:
    rollout: str
    episodes: int
    causes: dict[str, int]
    failed: int
    configured_prestop_s: float | None
    configured_grace_s: float | None
    max_propagation_delay_s: float | None
    max_gap_s: float
    nodes: dict[str, dict[str, Any]] = field(default_factory=dict)
    recommendation: Recommendation | None = None
    verdict: str = Verdict.SAFE
    verdict_line: str = ""
    reasons: list[str] = field(default_factory=list)  # INCONCLUSIVE: what the evidence lacks
    # per consumer ("<kind> <name>"): its largest propagation delay (s), refusals and resets
    consumers: dict[str, dict[str, Any]] = field(default_factory=dict)
    slowest_consumer: str | None = None
    verdicts: dict[str, int] = field(default_factory=dict)  # episodes (pod IPs) by verdict

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _opt(v: Any) -> float | None:
    return None if v is None or pd.isna(v) else float(v)


def summarize_rollouts(
    episodes: pd.DataFrame,
    timelines: pd.DataFrame,
    failures: pd.DataFrame,
    margin_s: float,
    episode_verdicts: dict[int, tuple[str, list[str]]] | None = None,
    consumers: pd.DataFrame | None = None,
) -> list[RolloutSummary]:
    """Aggregate per rollout with grouped (vectorized) operations, then one small record per rollout.

    ``episode_verdicts``: per episode id its verdict and, when INCONCLUSIVE, the reasons (without it
    every episode counts as covered by evidence)."""
    if episodes.empty:
        return []
    roll_of = episodes.set_index("episode")["rollout"]
    tl = timelines.assign(
        rollout=roll_of.reindex(timelines["episode"]).to_numpy(),
        delay=pd.to_numeric(timelines["propagation_delay_s"], errors="coerce"),
    )
    fl = failures.loc[failures["episode"] >= 0, ["episode", "node", "cause"]]
    if "rollout" in failures:  # the engine names each failure's rollout already
        fl = fl.assign(rollout=failures["rollout"].to_numpy()[(failures["episode"] >= 0).to_numpy()])
    else:
        fl = fl.assign(rollout=roll_of.reindex(fl["episode"]).to_numpy())
    by_roll = tl.groupby("rollout", sort=False).agg(max_delay=("delay", "max"), max_gap=("gap_s", "max"))
    by_node = tl.groupby(["rollout", "node"], sort=True).agg(
        max_delay=("delay", "max"), mean_delay=("delay", "mean"), max_gap=("gap_s", "max")
    )
    # plain dicts: a MultiIndex lookup per (rollout, cause) costs ~50 µs
    causes_by = fl.groupby(["rollout", "cause"], sort=False, observed=True).size().to_dict()
    failing = fl.loc[fl["cause"].isin(ROLLOUT_FAILURE_CAUSES)]
    failed_by_node = failing.groupby(["rollout", "node"], sort=False, observed=True).size().to_dict()
    start = (
        episodes["deleted_ns"].to_numpy(dtype="int64")
        + np.nan_to_num(episodes["prestop_s"].to_numpy(dtype=float)) * 1e9
    )
    exited = episodes["exited_ns"].to_numpy(dtype="int64")
    drain = np.where(exited != MISSING_NS, np.maximum(0.0, (exited - start) / 1e9), np.nan)
    ep = episodes.assign(
        drain=drain, prestop_none=episodes["prestop_kind"].isin(["", "none"]) & episodes["prestop_s"].isna()
    )
    by_ep = ep.groupby("rollout", sort=True).agg(
        episodes=("pod_uid", "nunique"),
        prestop=("prestop_s", "max"),
        prestop_none=("prestop_none", "all"),
        grace=("grace_s", "max"),
        drain=("drain", "max"),
    )
    node_rows: dict[str, dict[str, dict[str, Any]]] = {}
    for key, max_d, mean_d, max_g in zip(
        by_node.index, by_node["max_delay"].tolist(), by_node["mean_delay"].tolist(), by_node["max_gap"].tolist(),
        strict=True,
    ):  # fmt: skip
        rollout, node = cast(tuple[str, str], key)
        node_rows.setdefault(str(rollout), {})[str(node)] = {
            "max_propagation_delay_s": _opt(max_d),
            "mean_propagation_delay_s": _opt(mean_d),
            "max_gap_s": float(max_g),
            "failed": int(failed_by_node.get((rollout, node), 0)),
        }
    roll_delay, roll_gap = by_roll["max_delay"].to_dict(), by_roll["max_gap"].to_dict()
    consumers_by = _consumers_by_rollout(consumers, roll_of)
    reasons_by: dict[str, list[str]] = {}
    verdicts_by: dict[str, dict[str, int]] = {}
    verdict_of = episode_verdicts or {}
    safe: tuple[str, list[str]] = (Verdict.SAFE, [])
    tally: Counter[tuple[str, str]] = Counter()
    for ep_id, rollout in zip(episodes["episode"].tolist(), episodes["rollout"].tolist(), strict=True):
        v, why = verdict_of.get(ep_id, safe)
        tally[(rollout, v)] += 1
        if why:
            seen = reasons_by.setdefault(rollout, [])
            seen.extend(r for r in why if r not in seen)
    for (rollout, v), k in tally.items():
        verdicts_by.setdefault(str(rollout), {})[str(v)] = k
    out: list[RolloutSummary] = []
    for row in by_ep.itertuples():
        rollout = str(row.Index)
        causes = {c: int(causes_by.get((rollout, c), 0)) for c in CAUSES}
        max_delay = _opt(roll_delay.get(rollout))
        by_consumer = consumers_by.get(rollout, {})
        slowest = max(
            by_consumer.items(), key=lambda kv: kv[1]["max_propagation_delay_s"] or -1.0, default=None
        )
        if slowest is not None and slowest[1]["max_propagation_delay_s"] is not None:
            # a consumer that dials pod IPs itself can stop later than any node's rules
            max_delay = max(max_delay or 0.0, slowest[1]["max_propagation_delay_s"])
        max_gap = float(roll_gap.get(rollout, 0.0))
        prestop = _opt(row.prestop)
        if prestop is None and bool(row.prestop_none):
            prestop = 0.0
        s = RolloutSummary(
            rollout=str(rollout),
            episodes=int(cast(int, row.episodes)),
            causes=causes,
            failed=sum(causes[c] for c in ROLLOUT_FAILURE_CAUSES),
            configured_prestop_s=prestop,
            configured_grace_s=_opt(row.grace),
            max_propagation_delay_s=max_delay,
            max_gap_s=0.0 if pd.isna(max_gap) else max_gap,
            nodes=node_rows.get(str(rollout), {}),
            recommendation=recommend(max_delay, _opt(row.drain), margin_s),
            reasons=reasons_by.get(rollout, []),
            verdicts=verdicts_by.get(rollout, {}),
            consumers=by_consumer,
            slowest_consumer=slowest[0]
            if slowest is not None and slowest[1]["max_propagation_delay_s"] is not None
            else None,
        )
        if s.slowest_consumer and s.recommendation and s.recommendation.prestop_seconds:
            d = by_consumer[s.slowest_consumer]["max_propagation_delay_s"]
            s.recommendation.slowest_consumer = s.slowest_consumer
            if not s.slowest_consumer.startswith("kube-proxy "):  # the nodes' own delay says the rest
                s.recommendation.basis += f"; slowest consumer {s.slowest_consumer.split(' ', 1)[1]}, {d:.3f} s"
        s.verdict, s.verdict_line = verdict(s)
        out.append(s)
    return out


def _consumers_by_rollout(
    consumers: pd.DataFrame | None, roll_of: pd.Series
) -> dict[str, dict[str, dict[str, Any]]]:
    """Per rollout, per consumer (``"<kind> <name>"``): largest delay, nodes, refusals, resets."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    if consumers is None or consumers.empty:
        return out
    c = consumers.assign(
        rollout=roll_of.reindex(consumers["episode"]).to_numpy(),
        delay=pd.to_numeric(consumers["propagation_delay_s"], errors="coerce"),
    )
    keys = ["rollout", "consumer_kind", "consumer"]
    agg = c.groupby(keys, sort=True).agg(
        delay=("delay", "max"), gap=("gap_s", "max"), refused=("refused", "sum"), resets=("resets", "sum")
    )  # fmt: skip
    nodes_of: dict[tuple[str, str, str], list[str]] = {}
    pairs = c[[*keys, "node"]].astype(str).drop_duplicates().sort_values("node", kind="stable")
    for r, k, n, node in zip(*(pairs[col].tolist() for col in (*keys, "node")), strict=True):
        nodes_of.setdefault((r, k, n), []).append(node)
    for key, delay, gap, refused, resets in zip(
        agg.index, agg["delay"].tolist(), agg["gap"].tolist(), agg["refused"].tolist(), agg["resets"].tolist(),
        strict=True,
    ):  # fmt: skip
        nodes = nodes_of.get(tuple(map(str, key)), [])  # type: ignore[arg-type]
        rollout, kind, name = cast(tuple[str, str, str], key)
        out.setdefault(str(rollout), {})[f"{kind} {name}"] = {
            "kind": str(kind),
            "consumer": str(name),
            "nodes": list(nodes),
            "max_propagation_delay_s": _opt(delay),
            "max_gap_s": float(gap),
            "refused": int(refused),
            "resets": int(resets),
        }
    return out


def recommend(max_delay: float | None, drain: float | None, margin_s: float) -> Recommendation:
    """preStop >= worst delay + margin (whole seconds); grace >= preStop + observed drain + margin."""
    if max_delay is None:
        return Recommendation(
            None,
            None,
            margin_s,
            None,
            drain,
            "no propagation delay could be measured (no traffic to the terminating pods, no dataplane record)",
        )
    prestop = max(1, math.ceil(max_delay + margin_s))
    grace = math.ceil(prestop + (drain or 0.0) + margin_s)
    basis = (
        f"preStop >= max propagation delay {max_delay:.3f} s + margin {margin_s:g} s; "
        f"terminationGracePeriodSeconds >= preStop + drain "
        + (f"{drain:.1f} s" if drain is not None else "(not observed)")
        + f" + margin {margin_s:g} s"
    )
    return Recommendation(prestop, grace, margin_s, max_delay, drain, basis)


MAX_REASONS = 3  # in the verdict line; the JSON document has them all


def verdict(s: RolloutSummary) -> tuple[str, str]:
    """The rollout's verdict and one sentence that says it: GAP (connections failed, or a preStop
    shorter than a measured delay), INCONCLUSIVE (no failure seen, but the evidence lacks something: the
    sentence says what), SAFE (every termination covered by evidence, none failed)."""
    rec = s.recommendation
    delay = s.max_propagation_delay_s
    worst = max(s.nodes.items(), key=lambda kv: kv[1]["max_propagation_delay_s"] or -1.0, default=None)
    where = f" (node {worst[0] or '-'})" if worst is not None and delay is not None else ""
    if s.slowest_consumer and not s.slowest_consumer.startswith("kube-proxy "):
        slow = s.consumers[s.slowest_consumer]["max_propagation_delay_s"]
        if slow is not None and delay is not None and slow >= delay:
            where = f" (slowest consumer {s.slowest_consumer.split(' ', 1)[1]})"
    terms = f"{s.episodes} termination{'s' if s.episodes != 1 else ''}"
    fix = (
        f"set preStop sleep >= {rec.prestop_seconds} s and terminationGracePeriodSeconds >= "
        f"{rec.termination_grace_period_seconds} s"
        if rec and rec.prestop_seconds
        else "measure the propagation delay (capture SYNs to the pod IPs or record the dataplane)"
    )
    prestop = s.configured_prestop_s or 0.0
    if s.failed:
        parts = ", ".join(f"{c} {s.causes[c]}" for c in ROLLOUT_FAILURE_CAUSES if s.causes[c])
        measured = (
            f"new connections were routed to terminating pods up to {delay:.3f} s after their deletion{where}, "
            f"{s.max_gap_s:.3f} s after they stopped listening"
            if delay is not None
            else "the propagation delay was not measured"
        )
        return Verdict.GAP, (
            f"GAP {s.rollout}: {s.failed} connection(s) failed during {terms} ({parts}); {measured}; {fix}."
        )
    if delay is not None and prestop < delay:
        return Verdict.GAP, (
            f"GAP {s.rollout}: no connection failed during {terms}, but preStop {prestop:g} s is shorter than "
            f"the measured propagation delay {delay:.3f} s{where}; {fix}."
        )
    if s.reasons:
        shown = "; ".join(s.reasons[:MAX_REASONS])
        more = f" (and {len(s.reasons) - MAX_REASONS} more)" if len(s.reasons) > MAX_REASONS else ""
        return Verdict.INCONCLUSIVE, (
            f"INCONCLUSIVE {s.rollout}: no connection failed, but the inputs cannot show that {terms} "
            f"were safe: {shown}{more}."
        )
    covered = f"within preStop {prestop:g} s" if s.configured_prestop_s is not None else "covered"
    rec_txt = f" (recommended >= {rec.prestop_seconds} s)" if rec and rec.prestop_seconds else ""
    return Verdict.SAFE, (
        f"SAFE {s.rollout}: no connection failed during {terms}, and every node stopped routing to the "
        f"old pods {delay:.3f} s after their deletion at most{where}, {covered}{rec_txt}."
        if delay is not None
        else f"SAFE {s.rollout}: no connection failed during {terms}."
    )
