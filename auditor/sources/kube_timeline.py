"""The one incremental Kubernetes timeline: watch events in, the facts the audit needs out.

:class:`KubeTimeline` folds :class:`~auditor.model.kube.WatchEvent` values, in the order they were
received, into what the correlation engine reads:

* per pod uid (tombstones kept until :meth:`KubeTimeline.forget_pod`): IPs over time, deletion request
  and receipt, grace periods, preStop, readiness, container exit (:class:`~auditor.model.kube.PodInfo`);
* per EndpointSlice endpoint: each change of its conditions (ready, serving, terminating) and its
  removal, with the receipt time (the ``ENDPOINT_COLUMNS`` table);
* Events (the ``EVENT_COLUMNS`` table).

Three inputs feed it: the stream reader (:func:`auditor.sources.kube_stream.read_kube_streams`, files
read and merged in receipt order), and the agent's live window (each watch event as it arrives; the agent
audits an episode straight from it). Plain dicts in, no Kubernetes client.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from auditor.model.kube import (
    InputProblem,
    KubeInput,
    PodInfo,
    WatchEvent,
    WatchType,
    endpoint_frame,
    event_frame,
    parse_time_ns,
)
from auditor.sources.kube_pod import PodState, coarse_ns, update_pod

if TYPE_CHECKING:
    import pandas as pd

_OBJECT_TYPES = frozenset(t.value for t in WatchType)
# an endpoint's state in one slice: ready, serving, terminating, pod name, pod uid, node, ports
_EndpointState = tuple[bool | None, bool | None, bool | None, Any, Any, Any, str]


@dataclass(slots=True)
class KubeTimeline:
    """Incremental; not thread-safe (the agent's correlator locks around it)."""

    pods_state: dict[str, PodState] = field(default_factory=dict)
    slices: dict[str, dict[str, _EndpointState]] = field(default_factory=dict)  # ns/name -> address -> state
    endpoint_rows: list[dict[str, object]] = field(default_factory=list)
    # v1 Endpoints (clusters before EndpointSlices, or streams without them): used only when the input
    # has no EndpointSlice at all (a cluster with both has the same endpoints twice)
    endpoints_v1: dict[str, dict[str, _EndpointState]] = field(default_factory=dict)
    endpoint_rows_v1: list[dict[str, object]] = field(default_factory=list)
    slices_seen: int = 0
    event_rows: list[dict[str, object]] = field(default_factory=list)
    event_keys: set[tuple[str, str]] = field(default_factory=set)
    used: int = 0
    skipped_kinds: Counter[str] = field(default_factory=Counter)  # kind -> events not used
    skipped_types: Counter[str] = field(default_factory=Counter)  # BOOKMARK, ERROR, ... -> count

    @property
    def skipped(self) -> int:
        return sum(self.skipped_kinds.values()) + sum(self.skipped_types.values())

    # -- input -------------------------------------------------------------------------------------
    def apply(self, event: WatchEvent) -> bool:
        """Fold one object change in; False (and counted) for kinds the audit does not use and for
        events that are no object change (BOOKMARK, ERROR)."""
        if event.type not in _OBJECT_TYPES:
            self.skipped_types[event.type] += 1
            return False
        kind = event.kind
        if kind == "Pod":
            update_pod(self.pods_state, event.type, event.obj, event.observed_ns, event.bound_ns)
        elif kind == "EndpointSlice":
            self.slices_seen += 1
            self._slice(event)
        elif kind == "Endpoints":
            self._endpoints_v1(event)
        elif kind == "Event":
            self._event(event)
        else:
            self.skipped_kinds[kind or "(no kind)"] += 1
            return False
        self.used += 1
        return True

    # -- output ------------------------------------------------------------------------------------
    def pod(self, uid: str) -> PodInfo | None:
        state = self.pods_state.get(uid)
        return None if state is None else state.freeze()

    def pods(self) -> dict[str, PodInfo]:
        return {uid: state.freeze() for uid, state in self.pods_state.items()}

    def pods_with_ips(self, ips: set[str]) -> list[PodInfo]:
        """Every pod (tombstones included) that ever held one of ``ips``."""
        return [s.freeze() for s in self.pods_state.values() if ips.intersection(s.ips)]

    @property
    def uses_v1_endpoints(self) -> bool:
        """No EndpointSlice seen, but v1 Endpoints: the endpoint changes come from them."""
        return self.slices_seen == 0 and bool(self.endpoint_rows_v1)

    def endpoints(self, addresses: set[str] | None = None) -> pd.DataFrame:
        """The endpoint-change table (of ``addresses`` only, when given), sorted by time."""
        rows = self.endpoint_rows_v1 if self.uses_v1_endpoints else self.endpoint_rows
        if addresses is not None:
            rows = [r for r in rows if r["address"] in addresses]
        df = endpoint_frame(rows)
        return df.sort_values("time", kind="stable", na_position="last").reset_index(drop=True)

    def events(self) -> pd.DataFrame:
        df = event_frame(self.event_rows)
        return df.sort_values("time", kind="stable", na_position="last").reset_index(drop=True)

    def kube_input(self, problems: list[InputProblem] | None = None, skipped: int = 0) -> KubeInput:
        """Everything folded so far, as the engine's Kubernetes input."""
        problems = list(problems or [])
        if self.uses_v1_endpoints:
            problems.append(InputProblem("kube", 0, "no EndpointSlice in the input: endpoint changes taken from "
                                         "v1 Endpoints (no serving/terminating conditions: a terminating "
                                         "endpoint shows as not ready, then removed)"))  # fmt: skip
        elif self.endpoint_rows_v1:
            problems.append(InputProblem("kube", 0, "v1 Endpoints ignored: the EndpointSlices of the input "
                                         "carry the same endpoints with their conditions"))  # fmt: skip
        return KubeInput(
            pods=self.pods(),
            endpoints=self.endpoints(),
            events=self.events(),
            problems=problems,
            events_read=self.used,
            events_skipped=skipped + self.skipped,
            skipped_kinds=dict(self.skipped_kinds),
        )

    # -- bounds (long-running agent) ---------------------------------------------------------------
    def forget_pod(self, uid: str) -> None:
        """Drop a pod whose episode is over (the agent audited it)."""
        self.pods_state.pop(uid, None)

    def trim(self, before_ns: int) -> None:
        """Forget endpoint changes and Events older than ``before_ns`` (the current slice states stay:
        a later change is still compared with them)."""
        self.endpoint_rows = [r for r in self.endpoint_rows if _recent(r, before_ns)]
        self.endpoint_rows_v1 = [r for r in self.endpoint_rows_v1 if _recent(r, before_ns)]
        kept = [r for r in self.event_rows if _recent(r, before_ns)]
        if len(kept) != len(self.event_rows):
            self.event_rows = kept
            self.event_keys = {k for r in kept if isinstance(k := r.get("_key"), tuple)}

    # -- EndpointSlices ----------------------------------------------------------------------------
    def _slice(self, event: WatchEvent) -> None:
        obj, obs = event.obj, event.observed_ns
        meta = obj.get("metadata") or {}
        namespace, name = str(meta.get("namespace") or ""), str(meta.get("name") or "")
        labels = meta.get("labels") or {}
        annotations = meta.get("annotations") or {}
        service = labels.get("kubernetes.io/service-name")
        trigger = coarse_ns(annotations.get("endpoints.kubernetes.io/last-change-trigger-time"))
        ports = ",".join(
            f"{p.get('name') or ''}:{p.get('port')}/{p.get('protocol') or 'TCP'}"
            for p in (obj.get("ports") or [])
            if isinstance(p, dict)
        )
        time: int | None = obs
        precise = obs is not None
        if time is None:
            time = trigger
            if time is None and event.type == "ADDED":
                time = coarse_ns(meta.get("creationTimestamp"))
        new: dict[str, _EndpointState] = {}
        if event.type != "DELETED":
            for ep in obj.get("endpoints") or []:
                if not isinstance(ep, dict):
                    continue
                cond = ep.get("conditions") or {}
                ref = ep.get("targetRef") or {}
                state: _EndpointState = (
                    _opt_bool(cond.get("ready")), _opt_bool(cond.get("serving")),
                    _opt_bool(cond.get("terminating")), ref.get("name"), ref.get("uid"),
                    ep.get("nodeName"), ports,
                )  # fmt: skip
                for address in ep.get("addresses") or []:
                    new[str(address)] = state
        key = f"{namespace}/{name}"
        old = self.slices.get(key, {})
        for address, state in new.items():
            if old.get(address) != state:
                self._endpoint_row(time, precise, namespace, service, name, address, state, True, trigger)
        for address, state in old.items():
            if address not in new:
                self._endpoint_row(time, precise, namespace, service, name, address, state, False, trigger)
        if new:
            self.slices[key] = new
        else:
            self.slices.pop(key, None)

    def _endpoints_v1(self, event: WatchEvent) -> None:
        """A v1 Endpoints object: ``subsets[].addresses`` are ready, ``notReadyAddresses`` not."""
        obj, obs = event.obj, event.observed_ns
        meta = obj.get("metadata") or {}
        namespace, name = str(meta.get("namespace") or ""), str(meta.get("name") or "")
        trigger = coarse_ns((meta.get("annotations") or {}).get("endpoints.kubernetes.io/last-change-trigger-time"))
        time: int | None = obs
        if time is None:
            time = trigger if trigger is not None else coarse_ns(meta.get("creationTimestamp"))
        new: dict[str, _EndpointState] = {}
        if event.type != "DELETED":
            for subset in obj.get("subsets") or []:
                if not isinstance(subset, dict):
                    continue
                ports = ",".join(
                    f"{p.get('name') or ''}:{p.get('port')}/{p.get('protocol') or 'TCP'}"
                    for p in subset.get("ports") or [] if isinstance(p, dict)
                )  # fmt: skip
                for key, ready in (("addresses", True), ("notReadyAddresses", False)):
                    for a in subset.get(key) or []:
                        if isinstance(a, dict) and a.get("ip"):
                            ref = a.get("targetRef") or {}
                            new[str(a["ip"])] = (ready, None, None, ref.get("name"), ref.get("uid"),
                                                 a.get("nodeName"), ports)  # fmt: skip
        key = f"{namespace}/{name}"
        old = self.endpoints_v1.get(key, {})
        rows = self.endpoint_rows_v1
        for address, state in new.items():
            if old.get(address) != state:
                self._endpoint_row(time, obs is not None, namespace, name, f"endpoints/{name}", address, state,
                                   True, trigger, rows)  # fmt: skip
        for address, state in old.items():
            if address not in new:
                self._endpoint_row(time, obs is not None, namespace, name, f"endpoints/{name}", address, state,
                                   False, trigger, rows)  # fmt: skip
        if new:
            self.endpoints_v1[key] = new
        else:
            self.endpoints_v1.pop(key, None)

    def _endpoint_row(
        self, time: int | None, precise: bool, namespace: str, service: Any, slice_name: str,
        address: str, state: _EndpointState, present: bool, trigger: int | None,
        rows: list[dict[str, object]] | None = None,
    ) -> None:  # fmt: skip
        ready, serving, terminating, pod, pod_uid, node, ports = state
        (self.endpoint_rows if rows is None else rows).append({
            "time": time, "precise": precise, "namespace": namespace, "service": service,
            "slice": slice_name, "address": address, "pod": pod, "pod_uid": pod_uid, "node": node,
            "ready": ready, "serving": serving, "terminating": terminating, "present": present,
            "ports": ports, "trigger_time": trigger,
        })  # fmt: skip

    # -- Events ------------------------------------------------------------------------------------
    def _event(self, event: WatchEvent) -> None:
        obj = event.obj
        meta = obj.get("metadata") or {}
        key = (str(meta.get("uid") or id(obj)), str(meta.get("resourceVersion") or id(obj)))
        if key in self.event_keys:
            return
        self.event_keys.add(key)
        regarding = obj.get("involvedObject") or obj.get("regarding") or {}
        time: int | None = None
        precise = False
        event_time = obj.get("eventTime")
        if isinstance(event_time, str) and event_time:
            try:
                time, precise = parse_time_ns(event_time)
            except ValueError:
                time = None
        if not precise and event.observed_ns is not None:
            time, precise = event.observed_ns, True
        if time is None:
            series = obj.get("series") or {}
            for raw in (series.get("lastObservedTime"), obj.get("lastTimestamp"),
                        obj.get("deprecatedLastTimestamp"), obj.get("firstTimestamp"),
                        meta.get("creationTimestamp")):  # fmt: skip
                time = coarse_ns(raw)
                if time is not None:
                    break
        count = obj.get("count") or obj.get("deprecatedCount") or (obj.get("series") or {}).get("count") or 1
        self.event_rows.append({
            "time": time, "precise": precise,
            "namespace": regarding.get("namespace") or meta.get("namespace"),
            "kind": regarding.get("kind"), "name": regarding.get("name"), "uid": regarding.get("uid"),
            "reason": obj.get("reason"), "message": obj.get("message") or obj.get("note"),
            "count": int(count) if isinstance(count, int | float) else 1, "_key": key,
        })  # fmt: skip


def _recent(row: dict[str, object], before_ns: int) -> bool:
    """Not older than ``before_ns`` (rows without a time are kept)."""
    t = row.get("time")
    return not isinstance(t, int) or t >= before_ns


def _opt_bool(value: Any) -> bool | None:
    return value if isinstance(value, bool) else None
