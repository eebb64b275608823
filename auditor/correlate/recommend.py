"""Per rollout: counts by cause, the propagation delay per node, the preStop / grace period that would
have closed the gap, and a one-line verdict."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, cast

import numpy as np
import pandas as pd

from auditor.model.audit import CAUSES, MISSING_NS, ROLLOUT_FAILURE_CAUSES


@dataclass
class Recommendation:
    prestop_seconds: int | None  # preStop sleep at least this (whole seconds)
    termination_grace_period_seconds: int | None
    margin_seconds: float
    max_propagation_delay_s: float | None
    max_drain_s: float | None
    basis: str


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
    verdict: str = "SAFE"
    verdict_line: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _opt(v: Any) -> float | None:
    return None if v is None or pd.isna(v) else float(v)


def summarize_rollouts(
    episodes: pd.DataFrame, timelines: pd.DataFrame, failures: pd.DataFrame, margin_s: float
) -> list[RolloutSummary]:
    """Aggregate per rollout with grouped (vectorized) operations, then one small record per rollout."""
    if episodes.empty:
        return []
    roll_of = episodes.set_index("episode")["rollout"]
    tl = timelines.assign(
        rollout=roll_of.reindex(timelines["episode"]).to_numpy(),
        delay=pd.to_numeric(timelines["propagation_delay_s"], errors="coerce"),
    )
    fl = failures.loc[failures["episode"] >= 0, ["episode", "node", "cause"]]
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
    for key, row in by_node.iterrows():
        rollout, node = cast(tuple[str, str], key)
        node_rows.setdefault(str(rollout), {})[str(node)] = {
            "max_propagation_delay_s": _opt(row["max_delay"]),
            "mean_propagation_delay_s": _opt(row["mean_delay"]),
            "max_gap_s": float(row["max_gap"]),
            "failed": int(failed_by_node.get((rollout, node), 0)),
        }
    roll_delay, roll_gap = by_roll["max_delay"].to_dict(), by_roll["max_gap"].to_dict()
    out: list[RolloutSummary] = []
    for rkey, row in by_ep.iterrows():
        rollout = str(rkey)
        causes = {c: int(causes_by.get((rollout, c), 0)) for c in CAUSES}
        max_delay = _opt(roll_delay.get(rollout))
        max_gap = float(roll_gap.get(rollout, 0.0))
        prestop = _opt(row["prestop"])
        if prestop is None and bool(row["prestop_none"]):
            prestop = 0.0
        s = RolloutSummary(
            rollout=str(rollout),
            episodes=int(row["episodes"]),
            causes=causes,
            failed=sum(causes[c] for c in ROLLOUT_FAILURE_CAUSES),
            configured_prestop_s=prestop,
            configured_grace_s=_opt(row["grace"]),
            max_propagation_delay_s=max_delay,
            max_gap_s=0.0 if pd.isna(max_gap) else max_gap,
            nodes=node_rows.get(str(rollout), {}),
            recommendation=recommend(max_delay, _opt(row["drain"]), margin_s),
        )
        s.verdict, s.verdict_line = verdict(s)
        out.append(s)
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


def verdict(s: RolloutSummary) -> tuple[str, str]:
    rec = s.recommendation
    delay = s.max_propagation_delay_s
    delay_txt = (
        f"max propagation delay {delay:.3f} s" if delay is not None else "propagation delay not measured"
    )
    worst = max(s.nodes.items(), key=lambda kv: kv[1]["max_propagation_delay_s"] or -1.0, default=None)
    if worst is not None and delay is not None:
        delay_txt += f" (node {worst[0] or '-'})"
    exposed = delay is not None and (s.configured_prestop_s or 0.0) < delay
    if s.failed == 0 and not exposed:
        covered = (
            f"covered by preStop {s.configured_prestop_s:g} s"
            if s.configured_prestop_s is not None
            else "covered"
        )
        rec_txt = f" (recommended >= {rec.prestop_seconds} s)" if rec and rec.prestop_seconds else ""
        return "SAFE", (
            f"SAFE {s.rollout}: no failed connection over {s.episodes} termination(s); {delay_txt} {covered}{rec_txt}"
        )
    parts = ", ".join(f"{c} {s.causes[c]}" for c in ROLLOUT_FAILURE_CAUSES if s.causes[c])
    what = (
        f"{s.failed} connection(s) failed ({parts})"
        if s.failed
        else "no failure seen but preStop is too short"
    )
    fix = (
        f"set preStop sleep >= {rec.prestop_seconds} s and terminationGracePeriodSeconds >= "
        f"{rec.termination_grace_period_seconds} s"
        if rec and rec.prestop_seconds
        else "measure the propagation delay (capture SYNs to the pod IPs or record the dataplane)"
    )
    return "GAP", (
        f"GAP {s.rollout}: {what} over {s.episodes} termination(s); gap up to {s.max_gap_s:.3f} s, {delay_txt}; {fix}"
    )
