"""The offline audit: packets + Kubernetes timeline (+ dataplane, + client truth) -> explained rollout."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from auditor.correlate.attach import attach_episodes
from auditor.correlate.causes import CAUSES, classify
from auditor.correlate.episodes import build_episodes
from auditor.correlate.failures import drop_nat_copies, find_failures
from auditor.correlate.recommend import Recommendation, RolloutSummary, summarize_rollouts
from auditor.correlate.timeline import build_timelines


@dataclass
class AuditOptions:
    margin_s: float = 0.5  # added to the largest propagation delay for the preStop recommendation


@dataclass
class AuditResult:
    episodes: pd.DataFrame
    timelines: pd.DataFrame
    failures: pd.DataFrame
    rollouts: list[RolloutSummary]
    causes: dict[str, int]
    verdict: str
    verdict_line: str
    recommendation: Recommendation | None
    inputs: dict[str, Any] = field(default_factory=dict)
    client: Any = None
    reconciliation: dict[str, Any] | None = None


def audit(
    packets: pd.DataFrame,
    pods: list[Any],
    endpoints: pd.DataFrame | None = None,
    dataplane: pd.DataFrame | None = None,
    client: Any = None,
    options: AuditOptions | None = None,
    inputs: dict[str, Any] | None = None,
) -> AuditResult:
    """Correlate. ``pods`` are PodInfo-like records (see auditor.model.kube), ``packets`` the event table."""
    options = options or AuditOptions()
    episodes = build_episodes(pods, endpoints)
    pod_ips = {ip for p in pods for ip in (getattr(p, "ips", ()) or ())}

    failures = find_failures(packets)
    failures = drop_nat_copies(failures, failures["server_ip"].isin(pod_ips))
    failures["server_is_pod"] = failures["server_ip"].isin(pod_ips).to_numpy(dtype=bool)
    t = failures["time"].to_numpy(dtype="datetime64[ns]").astype("int64")
    failures["episode"] = attach_episodes(t, failures["server_ip"], episodes)

    nodes = sorted(
        {str(n) for n in (packets["node"].unique() if not packets.empty else [])}
        | ({str(n) for n in dataplane["node"].astype(str).unique()} if dataplane is not None else set())
    )
    timelines = build_timelines(episodes, nodes, packets, failures, dataplane)
    failures["cause"] = classify(failures, episodes, timelines)
    if not failures.empty and not episodes.empty:
        names = episodes.set_index("episode")[["pod", "namespace", "rollout"]]
        j = names.reindex(failures["episode"].to_numpy())
        failures["pod"] = j["pod"].fillna("").to_numpy()
        failures["rollout"] = j["rollout"].fillna("").to_numpy()
    else:
        failures["pod"] = ""
        failures["rollout"] = ""

    rollouts = summarize_rollouts(episodes, timelines, failures, options.margin_s)
    counts = failures["cause"].value_counts()
    causes = {c: int(counts.get(c, 0)) for c in CAUSES}
    verdict, line, rec = _overall(rollouts, causes)
    info = dict(inputs or {})
    info["packet_events"] = len(packets)
    info["failures"] = len(failures)
    info["failures_unmatched"] = int((failures["episode"] < 0).sum())
    info["episodes"] = len(episodes)
    info["nodes"] = nodes
    recon = reconcile(client, failures) if client is not None else None
    return AuditResult(
        episodes, timelines, failures, rollouts, causes, verdict, line, rec, info, client, recon
    )


def _overall(
    rollouts: list[RolloutSummary], causes: dict[str, int]
) -> tuple[str, str, Recommendation | None]:
    if not rollouts:
        extra = f"; {causes['no_endpoints']} rejected for no endpoints" if causes["no_endpoints"] else ""
        return "UNKNOWN", f"UNKNOWN: no pod termination found in the Kubernetes input{extra}", None
    gap = [r for r in rollouts if r.verdict == "GAP"]
    worst = max(
        rollouts,
        key=lambda r: (r.recommendation.prestop_seconds or 0) if r.recommendation else 0,
    )
    if gap:
        line = (
            gap[0].verdict_line
            if len(gap) == 1
            else f"GAP in {len(gap)} of {len(rollouts)} rollouts; " + "; ".join(r.verdict_line for r in gap)
        )
        return "GAP", line, worst.recommendation
    line = rollouts[0].verdict_line if len(rollouts) == 1 else f"SAFE: all {len(rollouts)} rollouts"
    return "SAFE", line, worst.recommendation


def reconcile(client: Any, failures: pd.DataFrame) -> dict[str, Any]:
    """Compare what the client saw with what the nodes saw and explained."""
    by_error = dict(getattr(client, "by_error", {}) or {})
    client_refused = int(by_error.get("connection_refused", 0))
    client_reset = int(by_error.get("connection_reset", 0)) + int(by_error.get("eof", 0))
    client_failed = int(getattr(client, "failed", 0) or 0)
    related = failures["cause"] != "unrelated"
    node_refused = int(((failures["failure"] == "refused") & related).sum())
    node_reset = int(((failures["failure"] == "reset") & related).sum())
    unrelated = int((~related).sum())
    explained = int(failures["cause"].isin(["propagation_gap", "inflight_reset", "after_removal"]).sum())
    notes = []
    if client_refused != node_refused:
        notes.append(
            f"client saw {client_refused} refused, the captured nodes attributed {node_refused}: "
            + (
                "the rest happened on nodes without a capture, or before/after the captured window"
                if client_refused > node_refused
                else "the extra refusals came from other clients (or were retried by the client)"
            )
        )
    return {
        "client_tool": getattr(client, "tool", None),
        "client_requests": int(getattr(client, "requests", 0) or 0),
        "client_failed": client_failed,
        "client_refused": client_refused,
        "client_reset": client_reset,
        "node_refused": node_refused,
        "node_reset": node_reset,
        "node_unrelated": unrelated,
        "node_explained": explained,
        "explained_fraction": (min(explained, client_failed) / client_failed) if client_failed else None,
        "notes": notes,
    }
