"""The Python API for notebooks: loaders returning pandas DataFrames, the audit, what-if and plots.

    import auditor
    ev = auditor.load_events("node.pcap")                    # packet event table
    a = auditor.analyze(pcaps="node.pcap", kube="kube.json", client="hey.txt")
    a.verdict, a.recommendation, a.gaps, a.failures, a.causes, a.rollouts
    auditor.what_if(a, [0, 1, 2, 3])                          # failures avoided by other preStop values
    auditor.plot_rollout_timeline(a)                          # the HTML report's figures

Times in the human-friendly tables are pandas UTC datetimes (``NaT`` when unknown); the raw tables
with nanosecond ints stay available as ``Audit.result`` (an :class:`AuditResult`).
Bad input raises :class:`~auditor.errors.AuditorError` with a one-line message.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from auditor.correlate.audit import AuditOptions, AuditResult, audit
from auditor.correlate.recommend import Recommendation
from auditor.errors import AuditorError
from auditor.model.audit import CAUSES, MISSING_NS, ROLLOUT_FAILURE_CAUSES
from auditor.model.kube import KubeInput

if TYPE_CHECKING:
    from matplotlib.figure import Figure

PathLike = str | os.PathLike[str]
Paths = PathLike | Sequence[PathLike] | None

__all__ = [
    "CAUSE_MEANINGS",
    "Audit",
    "analyze",
    "load_events",
    "load_kube",
    "plot_causes",
    "plot_delay_distribution",
    "plot_rollout_timeline",
    "plot_what_if",
    "what_if",
]

CAUSE_MEANINGS = {
    "propagation_gap": "new connection refused: the pod stopped listening while this node still routed to it",
    "inflight_reset": "established connection reset by the terminating pod",
    "after_removal": "refused/unreachable after this node's rule was gone (stale conntrack, direct pod-IP client)",
    "no_endpoints": "rejected by kube-proxy: the Service had no endpoints",
    "unrelated": "failure outside any pod termination",
}


def _as_list(value: Paths) -> list[PathLike]:
    if value is None:
        return []
    if isinstance(value, str | os.PathLike):
        return [value]
    return list(value)


def _read_events(paths: Iterable[PathLike], node: str | None) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Captures (pcap/pcapng) and event files (parquet/jsonl/csv by suffix) -> one table + counts."""
    from auditor.sources.packet_inputs import read_packet_inputs

    return read_packet_inputs(paths, node)


def load_events(*paths: PathLike, node: str | None = None) -> pd.DataFrame:
    """The packet event table (``auditor.model.packet`` columns) of pcap/pcapng captures and event files.

    A path may be ``NODE=FILE``; otherwise the node is ``node`` or the file's stem.
    """
    if not paths:
        raise AuditorError("no capture or event file given", "load_events", "pass at least one path")
    return _read_events(paths, node)[0]


def load_kube(*paths: PathLike) -> KubeInput:
    """Pods (with tombstones), EndpointSlice changes and Events from ``kubectl --watch -o json`` streams."""
    from auditor.sources.kube_stream import read_kube_streams

    return read_kube_streams([os.fspath(p) for p in paths])


def _ns_times(df: pd.DataFrame, columns: Iterable[str]) -> pd.DataFrame:
    """``*_ns`` int columns -> UTC datetimes named without the suffix (MISSING -> NaT)."""
    out = df.copy()
    for col in columns:
        # MISSING_NS is numpy's NaT: exact ns, no float round trip
        v = out.pop(col).to_numpy(dtype="int64").view("datetime64[ns]")
        out[col.removesuffix("_ns")] = pd.Series(v, index=out.index).dt.tz_localize("UTC")
    return out


class Audit:
    """One analysed rollout capture: friendly DataFrames over an :class:`AuditResult` (``.result``)."""

    def __init__(self, result: AuditResult, events: pd.DataFrame, kube: KubeInput | None = None) -> None:
        self.result = result
        self._events = events
        self.kube = kube

    def __repr__(self) -> str:
        return f"<Audit {self.result.verdict_line}>"

    @property
    def events(self) -> pd.DataFrame:
        """The packet event table the audit read."""
        return self._events

    @property
    def verdict(self) -> str:
        """``GAP``, ``SAFE`` or ``INCONCLUSIVE`` (see :attr:`verdict_reasons`)."""
        return self.result.verdict

    @property
    def verdict_line(self) -> str:
        return self.result.verdict_line

    @property
    def verdict_reasons(self) -> list[str]:
        """What an INCONCLUSIVE verdict lacks (empty for GAP and SAFE)."""
        return [reason for r in self.result.rollouts for reason in r.reasons]

    @property
    def evidence(self) -> pd.DataFrame:
        """Per episode and node: what was recorded (from/to), what was needed, connections and rule
        records seen, events lost, and whether the node's propagation delay was measured."""
        ev = self.result.evidence
        if ev.empty:
            return ev
        cols = ["needed_start_ns", "needed_end_ns", "covered_start_ns", "covered_end_ns"]
        return _ns_times(ev, cols)

    @property
    def recommendation(self) -> Recommendation | None:
        return self.result.recommendation

    @property
    def reconciliation(self) -> dict[str, Any] | None:
        """What the client saw versus what the nodes saw (when a client result was given)."""
        return self.result.reconciliation

    @property
    def inputs(self) -> dict[str, Any]:
        """What was read, with counts of anything skipped or unmatched."""
        return self.result.inputs

    @property
    def episodes(self) -> pd.DataFrame:
        """One row per terminated pod IP, times as datetimes, with its failed connections by cause."""
        ep = self.result.episodes
        cols = ["deleted_ns", "endpoint_terminating_ns", "endpoint_removed_ns", "exited_ns"]
        out = _ns_times(ep.drop(columns=["window_start_ns", "window_end_ns"]), cols)
        out = out.rename(columns={"grace_s": "termination_grace_s"})
        fl = self.result.failures
        for cause in CAUSES:
            counts = fl.loc[fl["cause"] == cause].groupby("episode").size()
            out[cause] = counts.reindex(out["episode"]).fillna(0).to_numpy(dtype="int64")
        verdicts = self.result.episode_verdicts
        out["verdict"] = [str(verdicts.get(int(e), ("", []))[0]) for e in out["episode"]]
        out["reasons"] = ["; ".join(verdicts.get(int(e), ("", []))[1]) for e in out["episode"]]
        first = ["episode", "rollout", "namespace", "pod", "ip", "pod_node", "verdict", "deleted", "exited"]
        return out[first + [c for c in out.columns if c not in first]]

    @property
    def gaps(self) -> pd.DataFrame:
        """Per episode and node: deletion, listener closed, rule removed, propagation delay, gap, failures."""
        tl = self.result.timelines
        ep = self.result.episodes[["episode", "rollout", "pod", "ip", "deleted_ns"]]
        out = _ns_times(
            tl.merge(ep, on="episode", how="left"),
            ["deleted_ns", "listener_closed_ns", "rule_removed_ns", "last_syn_ns", "first_refused_ns"],
        )
        fl = self.result.failures
        counts = fl.loc[fl["cause"] == "propagation_gap"].groupby(["episode", "node"]).size()
        keys = pd.MultiIndex.from_arrays([out["episode"].to_numpy(), out["node"].astype(str).to_numpy()])
        out["refused_in_gap"] = counts.reindex(keys).fillna(0).to_numpy(dtype="int64")
        cols = [
            "episode", "rollout", "pod", "ip", "node", "deleted", "listener_closed", "listener_closed_source",
            "rule_removed", "rule_removed_source", "propagation_delay_s", "propagation_delay_precise",
            "gap_s", "refused_in_gap",
        ]  # fmt: skip
        return out[cols]

    @property
    def consumers(self) -> pd.DataFrame:
        """Per episode and consumer (kube-proxy of a node, a pod dialing pod IPs, an external address):
        its new connections, its last one after the deletion, refusals, resets, propagation delay, gap."""
        c = self.result.consumers
        if c.empty:
            return c
        ep = self.result.episodes[["episode", "rollout", "pod", "ip"]]
        return _ns_times(c.merge(ep, on="episode", how="left"), ["last_new_ns", "first_refused_ns"])

    @property
    def failures(self) -> pd.DataFrame:
        """Every failed connection with its ``cause``, ``pod`` and ``rollout``."""
        fl = self.result.failures
        first = [
            "time",
            "node",
            "rollout",
            "pod",
            "cause",
            "failure",
            "server_ip",
            "server_port",
            "client_ip",
        ]
        return fl[first + [c for c in fl.columns if c not in first]]

    @property
    def causes(self) -> pd.DataFrame:
        """Failed connections by cause (all causes, zero counts included) with what each means."""
        return pd.DataFrame(
            {
                "cause": list(CAUSES),
                "count": [int(self.result.causes.get(c, 0)) for c in CAUSES],
                "meaning": [CAUSE_MEANINGS[c] for c in CAUSES],
            }
        ).set_index("cause")

    @property
    def rollouts(self) -> pd.DataFrame:
        """One row per rollout: counts, configured and recommended preStop / grace, verdict."""
        rows = []
        for r in self.result.rollouts:
            rec = r.recommendation
            rows.append(
                {
                    "rollout": r.rollout,
                    "verdict": r.verdict,
                    "terminations": r.episodes,
                    "failed": r.failed,
                    **{c: r.causes.get(c, 0) for c in ROLLOUT_FAILURE_CAUSES},
                    "max_propagation_delay_s": r.max_propagation_delay_s,
                    "max_gap_s": r.max_gap_s,
                    "configured_prestop_s": r.configured_prestop_s,
                    "configured_grace_s": r.configured_grace_s,
                    "recommended_prestop_s": rec.prestop_seconds if rec else None,
                    "recommended_grace_s": rec.termination_grace_period_seconds if rec else None,
                    "verdict_line": r.verdict_line,
                }
            )
        return pd.DataFrame(rows)

    def document(self) -> dict[str, Any]:
        """The JSON document of ``auditor analyze --json``."""
        from auditor.report.document import build_document

        return build_document(self.result)


def analyze(
    pcaps: Paths = None,
    kube: Paths | KubeInput = None,
    dataplane: Paths = None,
    client: PathLike | None = None,
    events: Paths | pd.DataFrame = None,
    margin_s: float = 0.5,
    node: str | None = None,
    client_format: str | None = None,
    client_start: datetime | str | None = None,
) -> Audit:
    """Run the offline audit, like ``auditor analyze``.

    ``pcaps``/``events``: paths (``NODE=FILE`` allowed) or, for ``events``, a table from
    :func:`load_events`; ``kube``: watch-stream paths or a :class:`KubeInput` from :func:`load_kube`;
    ``dataplane``: rule-change JSONL files; ``client``: the load client's result (fortio JSON or access log,
    vegeta, k6, hey; ``client_format`` forces one of ``auditor.sources.client_result.CLIENT_FORMATS``;
    ``client_start``: when the client run started, for hey's outputs, as ``--client-start``).
    """
    if not math.isfinite(margin_s) or margin_s < 0:
        raise AuditorError(f"margin_s must be a number >= 0, not {margin_s!r}", "analyze")
    paths = _as_list(pcaps) + ([] if isinstance(events, pd.DataFrame) else _as_list(events))
    if not paths and not isinstance(events, pd.DataFrame):
        raise AuditorError("nothing to analyze", "analyze", "give pcaps= or events=")
    if kube is None:
        raise AuditorError("no Kubernetes input", "analyze", "give kube= (kubectl --watch output)")
    from auditor.sources.client_result import parse_client_start
    from auditor.sources.inputs import load_inputs

    inputs = load_inputs(
        paths,
        kube if isinstance(kube, KubeInput) else _as_list(kube),
        _as_list(dataplane),
        client,
        node,
        events=events if isinstance(events, pd.DataFrame) else None,
        client_format=client_format,
        client_start=parse_client_start(client_start) if isinstance(client_start, str) else client_start,
    )
    res = audit(inputs, AuditOptions(margin_s=margin_s))
    return Audit(res, inputs.packets, inputs.kube)


def _prestops(prestop_s: float | Sequence[float]) -> list[float]:
    values = [prestop_s] if isinstance(prestop_s, int | float) else list(prestop_s)
    out = []
    for v in values:
        try:
            f = float(v)
        except (TypeError, ValueError):
            raise AuditorError(f"preStop value {v!r} is not a number", "what_if") from None
        if not math.isfinite(f) or f < 0:
            raise AuditorError(f"preStop value {v!r} must be a number of seconds >= 0", "what_if")
        out.append(f)
    if not out:
        raise AuditorError("no preStop value given", "what_if", "pass a number or a list of seconds")
    return out


def what_if(audit: Audit | AuditResult, prestop_s: float | Sequence[float]) -> pd.DataFrame:
    """For each hypothetical preStop sleep (seconds), per rollout: which observed failures it avoids.

    A connection refused in the propagation gap is avoided when the listener would still have been
    open until this node removed its rule: ``deleted + prestop >= rule_removed`` on that node (the
    app's own shutdown time after preStop is ignored, so this is conservative). Connections with
    no measured rule removal are not counted as avoided.

    In-flight resets (established connections reset by the pod) are *not* avoided by preStop alone:
    a longer preStop only moves them later; the application must drain (finish in-flight requests,
    close idle keep-alive connections gracefully) within terminationGracePeriodSeconds.
    ``after_removal`` refusals (stale conntrack, clients dialling pod IPs) are not avoided either.

    The verdict is ``SAFE`` when no failure remains and the preStop covers the largest measured
    propagation delay, else ``GAP`` (the same rule as the audit's verdict).
    """
    res = audit.result if isinstance(audit, Audit) else audit
    values = _prestops(prestop_s)
    fl = res.failures.loc[
        (res.failures["episode"] >= 0) & res.failures["cause"].isin(ROLLOUT_FAILURE_CAUSES),
        ["episode", "node", "cause"],
    ]
    ep = res.episodes.set_index("episode") if not res.episodes.empty else None
    gap = fl.loc[fl["cause"] == "propagation_gap"]
    if ep is not None and not gap.empty:
        tl = res.timelines.set_index(["episode", "node"])["rule_removed_ns"]
        keys = pd.MultiIndex.from_arrays([gap["episode"].to_numpy(), gap["node"].astype(str).to_numpy()])
        rule = tl.reindex(keys).fillna(MISSING_NS).to_numpy(dtype="int64")
        deleted = ep["deleted_ns"].reindex(gap["episode"].to_numpy()).to_numpy(dtype="int64")
        # preStop needed on that node to keep listening until the rule was gone (inf: never known)
        needed = np.where(rule != MISSING_NS, (rule - deleted) / 1e9, np.inf)
    else:
        needed = np.array([], dtype=float)
    rows = []
    for r in res.rollouts:
        in_roll = (
            ep["rollout"].reindex(fl["episode"].to_numpy()).to_numpy() == r.rollout
            if ep is not None
            else np.zeros(len(fl), dtype=bool)
        )
        gap_roll = in_roll[(fl["cause"] == "propagation_gap").to_numpy()]
        counts = {c: int(((fl["cause"] == c).to_numpy() & in_roll).sum()) for c in ROLLOUT_FAILURE_CAUSES}
        failed = sum(counts.values())
        delay = r.max_propagation_delay_s
        for p in values:
            avoided = int((gap_roll & (needed <= p)).sum())
            remaining = failed - avoided
            exposed = delay is not None and p < delay
            rows.append(
                {
                    "rollout": r.rollout,
                    "prestop_s": p,
                    "failed_observed": failed,
                    "avoided": avoided,
                    "remaining": remaining,
                    "remaining_propagation_gap": counts["propagation_gap"] - avoided,
                    "inflight_reset": counts["inflight_reset"],
                    "after_removal": counts["after_removal"],
                    "max_propagation_delay_s": delay,
                    "verdict": "GAP" if remaining or exposed else "SAFE",
                }
            )
    return pd.DataFrame(rows)


def _result(audit: Audit | AuditResult) -> AuditResult:
    return audit.result if isinstance(audit, Audit) else audit


def plot_rollout_timeline(audit: Audit | AuditResult, rollout: str | None = None) -> Figure:
    """The report's timeline per pod and node (first rollout unless named)."""
    from auditor.report import plots

    res = _result(audit)
    if rollout is None:
        if not res.rollouts:
            raise AuditorError("no rollout in this audit", "plot_rollout_timeline", "check the kube input")
        rollout = res.rollouts[0].rollout
    return plots.plot_rollout_timeline(res, rollout)


def plot_delay_distribution(audit: Audit | AuditResult) -> Figure:
    """The report's propagation delay per node."""
    from auditor.report import plots

    return plots.plot_delay_distribution(_result(audit))


def plot_causes(audit: Audit | AuditResult) -> Figure:
    """Failed connections by cause, as bars."""
    from auditor.report import plots

    return plots.plot_failures_by_cause(_result(audit))


def plot_what_if(table: pd.DataFrame) -> Figure:
    """Remaining and avoided failures per hypothetical preStop (a :func:`what_if` table)."""
    from auditor.report import plots

    return plots.plot_prestop_what_if(table)
