"""Per rollout: counts by cause, the propagation delay per node, the preStop / grace period that would
have closed the gap, and a one-line verdict."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from auditor.correlate.causes import CAUSES
from auditor.correlate.episodes import MISSING_NS

ROLLOUT_FAILURE_CAUSES = ("propagation_gap", "inflight_reset", "after_removal")


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


def _nan_max(values: pd.Series) -> float | None:
    v = pd.to_numeric(values, errors="coerce").dropna()
    return float(v.max()) if not v.empty else None


def summarize_rollouts(
    episodes: pd.DataFrame, timelines: pd.DataFrame, failures: pd.DataFrame, margin_s: float
) -> list[RolloutSummary]:
    out: list[RolloutSummary] = []
    if episodes.empty:
        return out
    tl = timelines.merge(episodes[["episode", "rollout"]], on="episode", how="left")
    fl = failures.loc[failures["episode"] >= 0].drop(columns=["rollout"], errors="ignore")
    fl = fl.merge(episodes[["episode", "rollout"]], on="episode")
    for rollout, eps in episodes.groupby("rollout", sort=True):
        rtl = tl.loc[tl["rollout"] == rollout]
        rfl = fl.loc[fl["rollout"] == rollout]
        counts = rfl["cause"].value_counts()
        causes = {c: int(counts.get(c, 0)) for c in CAUSES}
        failed = sum(causes[c] for c in ROLLOUT_FAILURE_CAUSES)
        max_delay = _nan_max(rtl["propagation_delay_s"])
        max_gap = float(rtl["gap_s"].max()) if not rtl.empty else 0.0
        nodes: dict[str, dict[str, Any]] = {}
        for node, g in rtl.groupby("node", sort=True):
            nfl = rfl.loc[rfl["node"] == node]
            nodes[str(node)] = {
                "max_propagation_delay_s": _nan_max(g["propagation_delay_s"]),
                "mean_propagation_delay_s": (
                    float(pd.to_numeric(g["propagation_delay_s"], errors="coerce").mean())
                    if g["propagation_delay_s"].notna().any()
                    else None
                ),
                "max_gap_s": float(g["gap_s"].max()),
                "failed": int(nfl["cause"].isin(ROLLOUT_FAILURE_CAUSES).sum()),
            }
        prestop = _nan_max(eps["prestop_s"])
        if prestop is None and (eps["prestop_kind"].isin(["", "none"])).all():
            prestop = 0.0
        grace = _nan_max(eps["grace_s"])
        rec = recommend(eps, rtl, max_delay, margin_s)
        s = RolloutSummary(
            rollout=str(rollout),
            episodes=int(eps["pod_uid"].nunique()),
            causes=causes,
            failed=failed,
            configured_prestop_s=prestop,
            configured_grace_s=grace,
            max_propagation_delay_s=max_delay,
            max_gap_s=max_gap,
            nodes=nodes,
            recommendation=rec,
        )
        s.verdict, s.verdict_line = verdict(s)
        out.append(s)
    return out


def recommend(
    eps: pd.DataFrame, timelines: pd.DataFrame, max_delay: float | None, margin_s: float
) -> Recommendation:
    drain = _drain_seconds(eps, timelines)
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


def _drain_seconds(eps: pd.DataFrame, timelines: pd.DataFrame) -> float | None:
    """Time from SIGTERM (listener closed, or deletion + preStop) to the container's exit."""
    exited = eps["exited_ns"].to_numpy(dtype="int64")
    ok = exited != MISSING_NS
    if not ok.any():
        return None
    start = eps["deleted_ns"].to_numpy(dtype="int64") + (
        np.nan_to_num(eps["prestop_s"].to_numpy(dtype=float)) * 1e9
    )
    drains = (exited[ok] - start[ok]) / 1e9
    return float(max(0.0, np.max(drains)))


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
