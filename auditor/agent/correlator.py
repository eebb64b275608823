"""Live correlation: when a pod termination episode is over, explain it with the offline engine.

A pod's episode is over ``settle_s`` seconds after its DELETED watch event: late refusals and the last
dataplane rewrites have arrived by then. The correlator then runs :func:`auditor.correlate.audit.audit`
on the window restricted to that pod, straight from the live window's
:class:`~auditor.sources.kube_timeline.KubeTimeline` (the pod's facts, the endpoint changes of its
addresses, every pod that ever held them for the IP -> pod lookup, packets and rule changes touching
its addresses) and returns one :class:`EpisodeReport`.
Pods on other nodes are audited too (kube-proxy on this node routes to them), but only when this node
saw something about them (a packet event or a rule change); the others are counted as ``skipped``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

from auditor.agent.window import Window
from auditor.correlate.audit import AuditOptions, audit, pod_index
from auditor.enrich.pods import PodIndex
from auditor.model.audit import AuditInputs, Coverage
from auditor.model.dataplane import DataplaneRecord, dataplane_frame
from auditor.model.kube import KubeInput, WatchEvent
from auditor.model.packet import PacketEvent

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

LOOKBACK_NS = 120 * 10**9  # packets this long before the deletion belong to the episode


@dataclass
class EpisodeReport:
    """One finished termination episode as this node saw it."""

    namespace: str
    pod: str
    uid: str
    pod_node: str  # where the pod ran
    node: str  # the agent's node (where the traffic was seen)
    verdict: str  # SAFE | GAP | INCONCLUSIVE (a Verdict)
    causes: dict[str, int]
    failures: Counter[tuple[str, str]] = field(default_factory=Counter)  # (failure, cause) -> n
    max_propagation_delay_s: float | None = None
    max_gap_s: float = 0.0
    node_delays: dict[str, float] = field(default_factory=dict)
    node_gaps: dict[str, float] = field(default_factory=dict)
    # per consumer (kube-proxy of a node, a pod dialing pod IPs, an external address): (kind, name, delay s)
    consumer_delays: list[tuple[str, str, float]] = field(default_factory=list)
    packets: int = 0
    line: str = ""
    reasons: list[str] = field(default_factory=list)  # INCONCLUSIVE: what the evidence lacks

    def as_dict(self) -> dict[str, Any]:
        return {
            "namespace": self.namespace, "pod": self.pod, "uid": self.uid, "pod_node": self.pod_node,
            "node": self.node, "verdict": self.verdict, "causes": self.causes,
            "failures": [{"failure": f, "cause": c, "count": n} for (f, c), n in sorted(self.failures.items())],
            "max_propagation_delay_s": self.max_propagation_delay_s, "max_gap_s": self.max_gap_s,
            "node_delays": self.node_delays, "packets": self.packets, "line": self.line,
            "consumers": [{"kind": k, "consumer": c, "propagation_delay_s": d} for k, c, d in self.consumer_delays],
            "reasons": self.reasons,
        }  # fmt: skip


def format_episode_line(r: EpisodeReport) -> str:
    """``episode ns/pod node=... pod-node=... verdict=GAP failed=3 (propagation_gap 2, ...) delay=... gap=...``."""
    causes = ", ".join(f"{c} {n}" for c, n in r.causes.items() if n) or "none"
    delay = f"{r.max_propagation_delay_s:.3f}s" if r.max_propagation_delay_s is not None else "unmeasured"
    failed = sum(r.failures.values())
    return (
        f"episode {r.namespace}/{r.pod} node={r.node} pod-node={r.pod_node or '-'} verdict={r.verdict} "
        f"failed={failed} causes=({causes}) propagation-delay={delay} gap={r.max_gap_s:.3f}s packets={r.packets}"
        + (f" why=({'; '.join(r.reasons)})" if r.reasons else "")
    )


class LiveCorrelator:
    """Thread-safe: sources add inputs from their threads, the agent's main loop calls :meth:`run_due`."""

    def __init__(
        self,
        node: str,
        settle_s: float = 10.0,
        window_s: float = 600.0,
        max_packets: int = 500_000,
        max_kube: int = 200_000,
        margin_s: float = 0.5,
    ) -> None:
        self.node = node
        self.settle_ns = int(settle_s * 1e9)
        self.margin_s = margin_s
        self.window = Window(window_s, max_packets, max_kube)
        self._lock = threading.Lock()
        self._due: dict[str, tuple[int, int, int]] = {}  # uid -> (due_ns, deleted_observed_ns, lost then)
        # the evidence of this node's recording: it ran since started_ns; lost_total() counts what its
        # sources lost so far (the agent sets it), so an episode knows what was lost while it lasted
        self.started_ns = time.time_ns()
        self.lost_total: Callable[[], int] = lambda: 0
        self.finished = 0
        self.skipped = 0
        self.errors = 0

    # -- inputs (any thread) -----------------------------------------------------------------------
    def add_packets(self, events: pd.DataFrame | list[PacketEvent]) -> None:
        """A batch of packet events: a packet table, or a list of events."""
        with self._lock:
            self.window.add_packets(events)

    def shed_packets(self, fraction: float) -> int:
        """Forget the oldest ``fraction`` of the window's packet events (memory pressure); counted in
        ``window.evicted_packets``. Returns how many went."""
        with self._lock:
            dropped = self.window.drop_oldest(int(self.window.packet_rows * fraction))
            self.window.evicted_packets += dropped
        return dropped

    def add_kube(
        self, kind: str, type_: str, obj: dict[str, Any], observed_ns: int, relisted: bool = False
    ) -> None:
        event = WatchEvent(
            type_, obj, None if relisted else observed_ns, observed_ns if relisted else None, kind
        )
        uid = str((obj.get("metadata") or {}).get("uid") or "") if kind == "Pod" else ""
        lost = self._lost_now() if type_ == "DELETED" and uid else 0  # outside the lock: it asks the agent
        with self._lock:
            self.window.add_kube(event)
            if type_ == "DELETED" and uid:
                self._due[uid] = (observed_ns + self.settle_ns, observed_ns, lost)

    def add_dataplane(self, record: DataplaneRecord) -> None:
        with self._lock:
            self.window.add_dataplane(record)

    @property
    def pending(self) -> int:
        with self._lock:
            return len(self._due)

    # -- episodes (main loop) ----------------------------------------------------------------------
    def run_due(self, now_ns: int | None = None, force: bool = False) -> list[EpisodeReport]:
        """Audit every episode whose settle time has passed (all of them with ``force``)."""
        now_ns = time.time_ns() if now_ns is None else now_ns
        with self._lock:
            ready = [(uid, d, lost) for uid, (due, d, lost) in self._due.items() if force or due <= now_ns]
            for uid, _, _ in ready:
                del self._due[uid]
        reports = []
        for uid, deleted_ns, lost_before in sorted(ready, key=lambda x: x[1]):
            try:
                report = self._audit(uid, deleted_ns, now_ns, lost_before)
            except Exception as exc:  # a bad episode must not stop the agent; count and say why
                self.errors += 1
                log.warning("episode %s: correlation failed: %s: %s", uid, type(exc).__name__, exc)
                continue
            finally:
                with self._lock:
                    self.window.forget_pod(uid)
            if report is None:
                self.skipped += 1
            else:
                self.finished += 1
                reports.append(report)
        with self._lock:
            self.window.trim(now_ns)
        return reports

    def _lost_now(self) -> int:
        try:
            return int(self.lost_total())
        except Exception:  # a counter that cannot be read is no reason to lose the episode
            return 0

    def _audit(self, uid: str, deleted_ns: int, now_ns: int, lost_before: int) -> EpisodeReport | None:
        with self._lock:
            pod = self.window.kube.pod(uid)
            if pod is None:
                return None
            ips = set(pod.ips)
            since = deleted_ns - LOOKBACK_NS
            packets = self.window.packets_for(ips, since)
            records = self.window.dataplane_for(ips, since)
            endpoints = self.window.kube.endpoints(ips)
            # the pod, any that held its IPs before/after, and the pods its peers are (an ingress dialing it)
            peers = set(packets["src"].astype(str)) | set(packets["dst"].astype(str)) if not packets.empty else set()
            holders = self.window.kube.pods_with_ips(ips | peers)
        pod_node = pod.node or ""
        if not ips or (pod_node != self.node and packets.empty and not records):
            return None
        kube = KubeInput(pods={p.uid: p for p in holders}, endpoints=endpoints, events=_no_events())
        recording = Coverage(self.node, "agent", min(self.started_ns, now_ns), now_ns,
                             lost=max(0, self._lost_now() - lost_before))  # fmt: skip
        inputs = AuditInputs(
            packets=packets, kube=kube, dataplane=dataplane_frame(records) if records else None,
            coverage=[recording],
        )  # fmt: skip
        index: PodIndex = pod_index(holders)
        res = audit(inputs, AuditOptions(margin_s=self.margin_s), terminations=[pod], pods=index)
        report = EpisodeReport(
            pod.namespace, pod.name, uid, pod_node, self.node, res.verdict, dict(res.causes)
        )
        report.packets = len(packets)
        fl = res.failures
        if not fl.empty:
            mine = fl.loc[fl["episode"] >= 0]
            for key, n in mine.groupby(["failure", "cause"], sort=True).size().items():
                failure, cause = cast(tuple[str, str], key)
                report.failures[(str(failure), str(cause))] += int(n)
        if res.rollouts:
            r = res.rollouts[0]
            report.max_propagation_delay_s = r.max_propagation_delay_s
            report.max_gap_s = r.max_gap_s
            for node, row in r.nodes.items():
                if row.get("max_propagation_delay_s") is not None:
                    report.node_delays[node] = float(row["max_propagation_delay_s"])
                report.node_gaps[node] = float(row.get("max_gap_s") or 0.0)
        report.reasons = [r for _, why in res.episode_verdicts.values() for r in why]
        for r in res.rollouts:
            for c in r.consumers.values():
                if c["max_propagation_delay_s"] is not None:
                    report.consumer_delays.append((c["kind"], c["consumer"], float(c["max_propagation_delay_s"])))
        report.line = format_episode_line(report)
        return report


def _no_events() -> pd.DataFrame:
    from auditor.model.kube import event_frame

    return event_frame([])
