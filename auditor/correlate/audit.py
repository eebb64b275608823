"""The offline audit: packets + Kubernetes timeline (+ dataplane, + client truth) -> explained rollout."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from auditor.correlate.attach import attach_episodes
from auditor.correlate.causes import classify
from auditor.correlate.client import episode_spans, inputs_window, place_requests, reconcile
from auditor.correlate.columns import as_str_array, take_categorical
from auditor.correlate.consumers import build_consumers, failure_consumers, syn_consumers
from auditor.correlate.episodes import build_episodes, episode_end_ns, strictly_after_ns
from auditor.correlate.evidence import build_evidence, episode_reasons, evidence_by_episode, evidently_safe
from auditor.correlate.failures import drop_nat_copies, find_failures
from auditor.correlate.recommend import Recommendation, RolloutSummary, summarize_rollouts
from auditor.correlate.recommend import verdict as rollout_verdict
from auditor.correlate.timeline import build_timelines
from auditor.enrich.pods import PodIndex
from auditor.enrich.protocols import PodGetter
from auditor.model.audit import (
    CAUSES,
    FAILURE_COLUMNS,
    ROLLOUT_FAILURE_CAUSES,
    AuditInputs,
    ConsumerTimeline,
    Episode,
    Failure,
    NodeEvidence,
    NodeTimeline,
    Verdict,
    records,
)
from auditor.model.client import ClientResult
from auditor.model.kube import PodInfo


@dataclass
class AuditOptions:
    margin_s: float = 0.5  # added to the largest propagation delay for the preStop recommendation


@dataclass
class AuditResult:
    """What the engine found. The three tables have the columns of their records
    (:data:`~auditor.model.audit.EPISODE_COLUMNS`, ``TIMELINE_COLUMNS``, ``FAILURE_COLUMNS``); the
    ``*_records`` methods give them as typed records."""

    episodes: pd.DataFrame
    timelines: pd.DataFrame
    failures: pd.DataFrame
    rollouts: list[RolloutSummary]
    causes: dict[str, int]
    verdict: str  # a Verdict value
    verdict_line: str
    recommendation: Recommendation | None
    inputs: dict[str, Any] = field(default_factory=dict)
    client: ClientResult | None = None
    reconciliation: dict[str, Any] | None = None
    evidence: pd.DataFrame = field(default_factory=pd.DataFrame)  # EVIDENCE_COLUMNS, per (episode, node)
    episode_verdicts: dict[int, tuple[str, list[str]]] = field(default_factory=dict)  # id -> verdict, reasons
    client_failures: pd.DataFrame = field(default_factory=pd.DataFrame)  # placed (correlate.client)
    consumers: pd.DataFrame = field(default_factory=pd.DataFrame)  # CONSUMER_COLUMNS (correlate.consumers)

    def consumer_records(self) -> Iterator[ConsumerTimeline]:
        return records(self.consumers, ConsumerTimeline)

    def evidence_records(self) -> Iterator[NodeEvidence]:
        return records(self.evidence, NodeEvidence)

    def episode_records(self) -> Iterator[Episode]:
        return records(self.episodes, Episode)

    def timeline_records(self) -> Iterator[NodeTimeline]:
        return records(self.timelines, NodeTimeline)

    def failure_records(self) -> Iterator[Failure]:
        return records(self.failures, Failure)


def pod_index(pods: Iterable[PodInfo]) -> PodIndex:
    """The engine's IP -> pod lookup: a deleted pod keeps its IPs for its whole episode window."""
    return PodIndex.from_pods(pods, end_ns=episode_end_ns)


def audit(
    inputs: AuditInputs,
    options: AuditOptions | None = None,
    *,
    terminations: Iterable[PodInfo] | None = None,
    pods: PodGetter | None = None,
) -> AuditResult:
    """Correlate: failed connections, episodes, per-node timelines, causes, recommendations.

    ``terminations``: the pods whose terminations to explain (default: every pod of the inputs);
    ``pods``: who held an address when (default: :func:`pod_index` over every pod of the inputs).
    """
    options = options or AuditOptions()
    packets, dataplane = inputs.packets, inputs.dataplane
    all_pods = list(inputs.kube.pods.values())
    getter = pods if pods is not None else pod_index(all_pods)
    episodes = build_episodes(all_pods if terminations is None else terminations, inputs.kube.endpoints)

    failures = find_failures(packets)
    failures = drop_nat_copies(failures, pd.Series(getter.is_pod_ip(failures["server_ip"])))
    failures["server_is_pod"] = getter.is_pod_ip(failures["server_ip"])
    t = failures["time"].to_numpy(dtype="datetime64[ns]").astype("int64")
    failures["episode"] = attach_episodes(t, failures["server_ip"], episodes, getter)

    nodes = sorted(
        {str(n) for n in (packets["node"].unique() if not packets.empty else [])}
        | ({str(n) for n in dataplane["node"].astype(str).unique()} if dataplane is not None else set())
    )
    syns = syn_consumers(packets, episodes, getter, failures)
    failures["consumer_kind"], failures["consumer"] = failure_consumers(failures, syns, packets, getter)
    timelines = build_timelines(episodes, nodes, packets, failures, dataplane, getter, syns)
    consumers = (
        build_consumers(episodes, timelines, syns, failures, strictly_after_ns(episodes))
        if not episodes.empty
        else build_consumers(episodes, timelines, syns, failures, pd.Series(dtype="int64"))
    )
    failures["cause"] = classify(failures, episodes, timelines, consumers)
    if not failures.empty and not episodes.empty:
        # per failure, its episode's pod and rollout: categorical, through the episode's position
        pos = np.asarray(pd.Index(episodes["episode"].to_numpy(dtype="int64")).get_indexer(failures["episode"].to_numpy(dtype="int64")), dtype="int64")
        for col in ("pod", "rollout"):
            failures[col] = take_categorical(episodes[col].to_numpy(dtype=object), pos)
    else:
        failures["pod"] = ""
        failures["rollout"] = ""
    failures = failures[list(FAILURE_COLUMNS)]
    for col in ("consumer_kind", "consumer", "cause", "pod", "rollout"):  # the engine's own: plain text for users
        failures[col] = pd.Series(as_str_array(failures[col]), index=failures.index, dtype=object)

    evidence = build_evidence(
        episodes, timelines, nodes, packets, failures, dataplane, inputs.coverage, getter, syns
    )
    verdicts = episode_verdicts(episodes, failures, evidence)
    rollouts = summarize_rollouts(episodes, timelines, failures, options.margin_s, verdicts, consumers)
    counts = failures["cause"].value_counts()
    causes = {c: int(counts.get(c, 0)) for c in CAUSES}
    verdict, line, rec = _overall(rollouts, causes)
    info = inputs.report_inputs()
    info["packet_events"] = len(packets)
    info["failures"] = len(failures)
    info["failures_unmatched"] = int((failures["episode"] < 0).sum())
    info["episodes"] = len(episodes)
    info["nodes"] = nodes
    client = inputs.client
    recon, placed = None, pd.DataFrame()
    if client is not None:
        placed = place_requests(client, failures, episode_spans(episodes, timelines))
        recon = reconcile(client, failures, placed, inputs_window(packets, episodes))
        if not recon["reconciled"]:  # the client's result says nothing about these terminations
            for r in rollouts:
                if r.verdict == Verdict.SAFE:
                    r.reasons.append(recon["notes"][0])
                    r.verdict, r.verdict_line = rollout_verdict(r)
            verdict, line, rec = _overall(rollouts, causes)
    return AuditResult(
        episodes, timelines, failures, rollouts, causes, verdict, line, rec, info, client, recon,
        evidence, verdicts, placed, consumers,
    )  # fmt: skip


def episode_verdicts(
    episodes: pd.DataFrame, failures: pd.DataFrame, evidence: pd.DataFrame
) -> dict[int, tuple[str, list[str]]]:
    """Per episode: GAP when connections failed in it, else SAFE when the evidence (``EVIDENCE_COLUMNS``)
    holds, else INCONCLUSIVE with the reasons."""
    failing = failures.loc[failures["cause"].isin(ROLLOUT_FAILURE_CAUSES) & (failures["episode"] >= 0)]
    failed = set(failing["episode"].unique().tolist())
    ids = episodes["episode"].tolist()
    safe = evidently_safe(evidence)
    quiet = evidence_by_episode(evidence, [i for i in ids if i not in failed and i not in safe])
    out: dict[int, tuple[str, list[str]]] = {}
    columns = ("pod", "ip", "deleted_ns")
    for ep_id, pod, ip, deleted in zip(ids, *(episodes[c].tolist() for c in columns), strict=True):
        if ep_id in failed:
            out[int(ep_id)] = (Verdict.GAP, [])
            continue
        if ep_id in safe:
            out[int(ep_id)] = (Verdict.SAFE, [])
            continue
        reasons = episode_reasons(str(pod), str(ip), int(deleted), quiet.get(int(ep_id), []))
        out[int(ep_id)] = (Verdict.INCONCLUSIVE if reasons else Verdict.SAFE, reasons)
    return out


def _overall(
    rollouts: list[RolloutSummary], causes: dict[str, int]
) -> tuple[str, str, Recommendation | None]:
    if not rollouts:
        extra = f"; {causes['no_endpoints']} rejected for no endpoints" if causes["no_endpoints"] else ""
        return (
            Verdict.INCONCLUSIVE,
            f"INCONCLUSIVE: no pod termination found in the Kubernetes input{extra}.",
            None,
        )
    worst = max(
        rollouts,
        key=lambda r: (r.recommendation.prestop_seconds or 0) if r.recommendation else 0,
    )
    for verdict in (Verdict.GAP, Verdict.INCONCLUSIVE):
        hit = [r for r in rollouts if r.verdict == verdict]
        if hit:
            line = (
                hit[0].verdict_line
                if len(hit) == 1
                else f"{verdict} in {len(hit)} of {len(rollouts)} rollouts. "
                + " ".join(r.verdict_line for r in hit)
            )
            return verdict, line, worst.recommendation
    line = (
        rollouts[0].verdict_line if len(rollouts) == 1 else f"SAFE: all {len(rollouts)} rollouts were safe."
    )
    return Verdict.SAFE, line, worst.recommendation
