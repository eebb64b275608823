"""Evidence and verdict of one test run.

With node agents, their log directories are fetched through the API server's pod proxy exactly as
``auditor collect`` does (:mod:`auditor.collect.fetch`), and analyzed offline with the load's records
(:func:`auditor.sources.inputs.load_inputs`, :func:`auditor.correlate.audit.audit`), restricted to the
terminations of the workload's pods after the restart. Without agents, the client's records alone:

* they tell how many requests failed, when, and how (refused, reset, timeout, 502/503/504);
* they cannot tell which node or consumer still routed new connections to a terminating pod, nor its
  propagation delay, so no preStop value is measured, and no failure-free run can be shown SAFE (a gap
  shorter than the client's request spacing, or on a path its traffic did not take, goes unseen).

The client's failures after the restart are ground truth either way: a run whose client saw failures is
a GAP even when the nodes' records explain none of them (the line says so).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from auditor.collect.fetch import (
    AgentFiles,
    AgentPod,
    NodeResult,
    collect_agent,
    list_agent_pods,
    write_manifest,
)
from auditor.collect.layout import find_log_dirs
from auditor.correlate.audit import AuditOptions, audit
from auditor.correlate.recommend import Recommendation
from auditor.errors import AuditorError
from auditor.kubeapi.proxy import ApiCallError, error_line
from auditor.model.audit import Verdict
from auditor.model.client import ERROR_CLASSES, ClientResult
from auditor.model.kube import KubeInput, PodInfo, endpoint_frame, event_frame
from auditor.model.logfiles import classify_log_file
from auditor.report.document import build_document
from auditor.rollout.workload import WorkloadRef
from auditor.sources.inputs import load_inputs

EVIDENCE_MODES = ("auto", "agents", "client")
DELETION_SLACK_NS = 2_000_000_000  # Kubernetes timestamps have one-second resolution
CLIENT_CAN = "the client's records tell how many requests failed, when and how (refused, reset, timeout, 5xx)"
CLIENT_CANNOT = (
    "they cannot tell which node or consumer still routed to a terminating pod, its propagation delay, or "
    "which preStop closes the gap: deploy the node agents (kubectl apply -k daemonset/) to measure them"
)


@dataclass
class ClientSummary:
    """The load's records, counted: over the whole run, and after the restart."""

    requests: int
    failed: int
    by_class: dict[str, int]
    http_502: int
    failed_after_restart: int
    by_class_after_restart: dict[str, int]
    start: str | None = None
    end: str | None = None

    @property
    def failed_pct(self) -> float:
        return 100.0 * self.failed / self.requests if self.requests else 0.0

    def classes(self, after_restart: bool = False) -> str:
        counts = self.by_class_after_restart if after_restart else self.by_class
        parts = [f"{c} {counts[c]:,}" for c in ERROR_CLASSES if counts.get(c)]
        return ", ".join(parts) or "-"

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests, "failed": self.failed, "failed_pct": round(self.failed_pct, 4),
            "by_class": self.by_class, "http_502": self.http_502,
            "failed_after_restart": self.failed_after_restart, "by_class_after_restart": self.by_class_after_restart,
            "start": self.start, "end": self.end,
        }  # fmt: skip


def summarize_client(client: ClientResult, restart_ns: int) -> ClientSummary:
    by_class = {c: int(client.by_class.get(c, 0)) for c in ERROR_CLASSES}
    after = dict.fromkeys(ERROR_CLASSES, 0)
    table = client.requests_table
    if table is not None and not table.empty:
        t = table["time"].to_numpy(dtype="datetime64[ns]").astype("int64")
        failing = table.loc[(t >= restart_ns) & (table["error_class"].astype(str) != "")]
        for cls, n in failing["error_class"].astype(str).value_counts().items():
            after[str(cls)] = int(n)
    else:  # an aggregate result: every failure counts
        after = dict(by_class)
    return ClientSummary(
        requests=client.requests, failed=client.failed, by_class=by_class,
        http_502=int(client.status_codes.get(502, 0)), failed_after_restart=sum(after.values()),
        by_class_after_restart=after,
        start=client.start.isoformat() if client.start else None, end=client.end.isoformat() if client.end else None,
    )  # fmt: skip


@dataclass
class Analysis:
    """One test's verdict: ``mode`` ``agents`` or ``client``; ``recommendation`` only when measured."""

    mode: str
    verdict: str
    line: str
    recommendation: Recommendation | None
    client: ClientSummary
    document: dict[str, Any]
    terminations: int
    notes: list[str] = field(default_factory=list)


def find_agents(api_client: Any, namespace: str, selector: str, mode: str) -> tuple[list[AgentPod], str]:
    """The agent pods to collect from, and one line that says what the evidence will be. ``mode``
    ``agents``: no agents is an error; ``auto``: the client's records alone, said so."""
    if mode == "client":
        return [], "evidence: the client's records alone (--evidence client)"
    try:
        pods = list_agent_pods(api_client, namespace, selector)
    except AuditorError as exc:
        if mode == "agents":
            raise
        return [], f"evidence: the client's records alone (no node agents: {exc.line()})"
    if not pods:
        if mode == "agents":
            raise AuditorError(
                f"no agent pods match {selector!r}", f"namespace {namespace}",
                "deploy them (kubectl apply -k daemonset/), or use --evidence client",
            )  # fmt: skip
        return [], f"evidence: the client's records alone (no agent pods match {selector!r} in {namespace})"
    nodes = ", ".join(p.node or "?" for p in pods)
    return pods, f"evidence: {len(pods)} node agent(s) ({nodes}) and the client's records"


def collect_agents(
    api_client: Any, namespace: str, selector: str, pods: list[AgentPod], port: int, out: Path,
    since_s: float, timeout_s: float, token: str | None,
) -> list[NodeResult]:  # fmt: skip
    """Every agent's log files of the last ``since_s`` seconds into ``out/<node>/`` (``collect.json``
    beside them, as ``auditor collect`` writes it)."""
    out.mkdir(parents=True, exist_ok=True)
    results = [collect_agent(api_client, namespace, p, port, out, since_s, timeout_s, token=token) for p in pods]
    write_manifest(out, results, namespace, selector)
    return results


SUMMARY_PERIOD_S = 10.0  # the agent rewrites its summary (agent-<node>.json: what it recorded, until when) this often


def wait_summaries(
    api_client: Any, namespace: str, pods: list[AgentPod], port: int, after_wall: float, timeout_s: float,
    token: str | None, sleep: Callable[[float], None], clock: Callable[[], float],
) -> list[str]:  # fmt: skip
    """Until every agent's summary was rewritten after ``after_wall`` (the end of the test, wall clock): the
    analysis takes an agent's coverage from it, and a summary older than the last termination makes a quiet
    test INCONCLUSIVE ("the recording ends before the deletion"). Bounded by ``timeout_s`` (the agent
    rewrites it every 10 s); a note for each agent whose summary stayed older (or unreadable)."""
    notes: list[str] = []
    deadline = clock() + timeout_s
    for pod in pods:
        files = AgentFiles(api_client, namespace, pod.name, port, min(timeout_s, 30.0), token)
        while True:
            try:
                listing = files.listing()
            except (ApiCallError, OSError, ValueError) as exc:
                notes.append(f"{pod.node}: its summary could not be listed ({error_line(exc)})")
                break
            stamps = [float(e.get("mtime") or 0) for e in listing
                      if (classify_log_file(str(e["name"])) or ("", ""))[0] == "agent"]  # fmt: skip
            latest = max(stamps, default=None)
            if latest is None:  # an agent that writes none: nothing to wait for
                notes.append(f"{pod.node}: the agent lists no summary (agent-{pod.node}.json): the analysis cannot "
                             "see what it recorded")  # fmt: skip
                break
            if latest >= after_wall:
                break
            if clock() >= deadline:
                notes.append(f"{pod.node}: its summary was last written {after_wall - latest:.1f} s before the test "
                             "ended: the analysis may not see that it recorded the last terminations")  # fmt: skip
                break
            sleep(0.5)
    return notes


def owned(pod: PodInfo, ref: WorkloadRef) -> bool:
    """The pod belongs to the workload: its ReplicaSet's Deployment, ``<name>-<ordinal>`` of a StatefulSet,
    ``<name>-<5 characters>`` of a DaemonSet."""
    if pod.namespace != ref.namespace:
        return False
    if ref.kind == "deployment":
        return pod.deployment == ref.name
    if ref.kind == "statefulset":
        return re.fullmatch(re.escape(ref.name) + r"-\d+", pod.name) is not None
    return re.fullmatch(re.escape(ref.name) + r"-[a-z0-9]{5}", pod.name) is not None


def deletion_request_ns(pod: PodInfo) -> int | None:
    """When the pod's deletion was asked: the receipt of its first deletionTimestamp (precise), else that
    timestamp minus the grace period (it is request + grace), else the receipt of DELETED."""
    if pod.deletion_observed_ns is not None:
        return pod.deletion_observed_ns
    if pod.deletion_ns is not None:
        return pod.deletion_ns - int((pod.deletion_grace_s or 0) * 1e9)
    return pod.deleted_observed_ns


def select_terminations(pods: Iterable[PodInfo], ref: WorkloadRef, since_ns: int) -> list[PodInfo]:
    """The workload's pods deleted after ``since_ns`` (the restart): the terminations this test caused."""
    out = []
    for pod in pods:
        t = deletion_request_ns(pod)
        if owned(pod, ref) and t is not None and t >= since_ns - DELETION_SLACK_NS:
            out.append(pod)
    return out


def _log_files(root: Path) -> tuple[list[str], list[str], list[str], list[str]]:
    events: list[str] = []
    kube: list[str] = []
    dataplane: list[str] = []
    agents: list[str] = []
    for d in find_log_dirs(root):
        for node, segments in sorted(d.events.items()):
            events += [f"{node}={p}" for p in segments]
        kube += [str(p) for p in d.kube]
        dataplane += [str(p) for p in d.dataplane]
        agents += [str(p) for p in d.agents]
    return events, kube, dataplane, agents


def analyze(
    ref: WorkloadRef, client_file: Path, logs: Path | None, restart_ns: int, margin_s: float
) -> Analysis:
    """The offline analysis of one test: the agents' logs under ``logs`` (None: none) and the load's
    records in ``client_file`` (vegeta JSON lines)."""
    events: list[str] = []
    kube: list[str] = []
    dataplane: list[str] = []
    agents: list[str] = []
    notes: list[str] = []
    if logs is not None and logs.is_dir() and any(logs.iterdir()):
        events, kube, dataplane, agents = _log_files(logs)
        if not kube:
            notes.append("the agents' logs hold no Kubernetes stream for the test's window: client's records alone")
    mode = "agents" if kube else "client"
    if mode == "agents":
        inputs = load_inputs(events, kube, dataplane, client_file, agents=agents, client_format="vegeta-json")
    else:
        empty = KubeInput({}, endpoint_frame([]), event_frame([]))
        inputs = load_inputs((), empty, (), client_file, client_format="vegeta-json")
        notes += [CLIENT_CAN, CLIENT_CANNOT]
    assert inputs.client is not None
    client = summarize_client(inputs.client, restart_ns)
    terminations = select_terminations(inputs.kube.pods.values(), ref, restart_ns)
    res = audit(inputs, AuditOptions(margin_s=margin_s), terminations=terminations)
    rec = res.recommendation if res.recommendation and res.recommendation.prestop_seconds else None
    where = f"{ref.namespace}/{ref.name}"
    failed = client.failed_after_restart
    classes = client.classes(after_restart=True)
    if mode == "agents":
        verdict, line = str(res.verdict), res.verdict_line
        if not terminations:
            notes.append(f"the agents' Kubernetes streams show no deletion of a pod of {ref} after the restart")
        if failed and verdict != Verdict.GAP:
            line = (f"GAP {where}: the client saw {failed:,} failed request(s) after the restart ({classes}) that "
                    f"the nodes' records do not attribute; the nodes' analysis: {res.verdict_line}")  # fmt: skip
            verdict = Verdict.GAP
    elif failed:
        verdict = Verdict.GAP
        line = (f"GAP {where} (client's records only): {failed:,} of {client.requests:,} requests failed after "
                f"the restart ({classes}); without node agents the failing node or consumer and its propagation "
                "delay are unknown, so the preStop of the fix is a default, not a measurement.")  # fmt: skip
    else:
        verdict = Verdict.INCONCLUSIVE
        line = (f"INCONCLUSIVE {where} (client's records only): none of {client.requests:,} requests failed, but "
                "without node agents the propagation delay was not measured: a gap shorter than the client's "
                "request spacing, or on a node or consumer its traffic did not cross, goes unseen "
                "(deploy the agents: kubectl apply -k daemonset/).")  # fmt: skip
    return Analysis(mode, verdict, line, rec, client, build_document(res), len(terminations), notes)


__all__ = [
    "CLIENT_CAN",
    "CLIENT_CANNOT",
    "EVIDENCE_MODES",
    "Analysis",
    "ClientSummary",
    "analyze",
    "collect_agents",
    "deletion_request_ns",
    "find_agents",
    "owned",
    "select_terminations",
    "summarize_client",
    "wait_summaries",
]
