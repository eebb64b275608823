"""Fold the successive versions of one Pod object (watch events) into a :class:`PodInfo`.

Used by :mod:`auditor.sources.kube_stream`; plain dicts in, no Kubernetes client.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

from auditor.model.kube import PodInfo, parse_time_ns
from auditor.model.shell import is_sleep, script_commands

_SHELLS = {"sh", "bash", "ash", "dash", "zsh", "busybox"}


def coarse_ns(value: Any) -> int | None:
    """An object timestamp (one-second resolution) in ns, or None when absent or unreadable."""
    if not isinstance(value, str) or not value:
        return None
    try:
        return parse_time_ns(value)[0]
    except ValueError:
        return None


@dataclass(slots=True)
class PodState:
    """Mutable accumulator for one pod uid."""

    uid: str
    namespace: str
    name: str
    node: str | None = None
    ips: dict[str, int | None] = field(default_factory=dict)  # ip -> observedAt it appeared (None: creation)
    replicaset: str | None = None
    deployment: str | None = None
    host_network: bool = False
    created_ns: int | None = None
    first_observed_ns: int | None = None
    ready_ns: int | None = None
    ready_precise: bool = False
    seen_not_ready: bool = False
    deletion_ns: int | None = None
    deletion_observed_ns: int | None = None
    deleted: bool = False
    deleted_observed_ns: int | None = None
    deletion_grace_s: int | None = None
    termination_grace_s: int | None = None
    prestop_sleep_s: float | None = None
    prestop_kind: str = "none"
    has_readiness_probe: bool = False
    container_finished_ns: int | None = None
    exit_code: int | None = None
    exit_reason: str | None = None
    phase: str | None = None
    restarts: int = 0
    deleted_bound_ns: int | None = None

    def freeze(self) -> PodInfo:
        first_seen = self.first_observed_ns if self.first_observed_ns is not None else self.created_ns
        fallback = self.created_ns if self.created_ns is not None else (first_seen or 0)
        return PodInfo(
            uid=self.uid, namespace=self.namespace, name=self.name, node=self.node,
            ips=tuple(self.ips),
            ips_first_seen_ns=tuple(fallback if t is None else t for t in self.ips.values()),
            replicaset=self.replicaset, deployment=self.deployment, host_network=self.host_network,
            created_ns=self.created_ns, first_seen_ns=first_seen,
            first_seen_precise=self.first_observed_ns is not None,
            ready_ns=self.ready_ns, ready_precise=self.ready_precise,
            deletion_ns=self.deletion_ns, deletion_observed_ns=self.deletion_observed_ns,
            deleted=self.deleted, deleted_observed_ns=self.deleted_observed_ns,
            deletion_grace_s=self.deletion_grace_s, termination_grace_s=self.termination_grace_s,
            prestop_sleep_s=self.prestop_sleep_s, prestop_kind=self.prestop_kind,
            has_readiness_probe=self.has_readiness_probe,
            container_finished_ns=self.container_finished_ns, exit_code=self.exit_code,
            exit_reason=self.exit_reason, phase=self.phase, restarts=self.restarts,
            deleted_bound_ns=self.deleted_bound_ns,
        )  # fmt: skip


def update_pod(
    pods: dict[str, PodState], etype: str, obj: dict[str, Any], observed: int | None, bound: int | None = None
) -> None:
    """Apply one ADDED/MODIFIED/DELETED version of a Pod to its accumulator. ``observed``: when the watcher
    received it (precise); ``bound``: a relisted change's receipt, only an upper bound of when it happened."""
    meta = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    namespace, name = str(meta.get("namespace") or ""), str(meta.get("name") or "")
    uid = str(meta.get("uid") or f"{namespace}/{name}")
    st = pods.get(uid)
    first_version = st is None
    if st is None:
        st = pods[uid] = PodState(uid, namespace, name)
    if observed is not None and (st.first_observed_ns is None or observed < st.first_observed_ns):
        st.first_observed_ns = observed
    st.created_ns = st.created_ns or coarse_ns(meta.get("creationTimestamp"))
    st.node = spec.get("nodeName") or st.node
    st.host_network = bool(spec.get("hostNetwork", st.host_network))
    _owner(st, meta)
    for ip in _pod_ips(status):
        if ip not in st.ips:  # already there in the first version seen: held since creation, as far as known
            st.ips[ip] = None if first_version else observed
    deletion = coarse_ns(meta.get("deletionTimestamp"))
    if deletion is not None and st.deletion_ns is None:  # the first one: request time + grace period
        st.deletion_ns = deletion
        grace = meta.get("deletionGracePeriodSeconds")
        st.deletion_grace_s = grace if isinstance(grace, int) else None
    if deletion is not None and st.deletion_observed_ns is None and observed is not None:
        st.deletion_observed_ns = observed
    term = spec.get("terminationGracePeriodSeconds")
    if isinstance(term, int):
        st.termination_grace_s = term
    containers = [c for c in spec.get("containers") or [] if isinstance(c, dict)]
    if containers:
        st.prestop_kind, st.prestop_sleep_s = prestop_of(containers)
        st.has_readiness_probe = any(c.get("readinessProbe") for c in containers)
    _ready(st, status, observed)
    _containers(st, status)
    st.phase = status.get("phase") or st.phase
    if etype == "DELETED":
        st.deleted = True
        if observed is not None:
            st.deleted_observed_ns = observed
        elif bound is not None and st.deleted_bound_ns is None:
            st.deleted_bound_ns = bound


def _owner(st: PodState, meta: dict[str, Any]) -> None:
    for ref in meta.get("ownerReferences") or []:
        if isinstance(ref, dict) and ref.get("kind") == "ReplicaSet" and ref.get("name"):
            st.replicaset = str(ref["name"])
            pth = (meta.get("labels") or {}).get("pod-template-hash")
            if pth and st.replicaset.endswith("-" + pth):
                st.deployment = st.replicaset[: -len(pth) - 1]
            return


def _pod_ips(status: dict[str, Any]) -> list[str]:
    ips = [str(p["ip"]) for p in status.get("podIPs") or [] if isinstance(p, dict) and p.get("ip")]
    if status.get("podIP") and status["podIP"] not in ips:
        ips.insert(0, str(status["podIP"]))
    return ips


def _ready(st: PodState, status: dict[str, Any], observed: int | None) -> None:
    for cond in status.get("conditions") or []:
        if not isinstance(cond, dict) or cond.get("type") != "Ready":
            continue
        if cond.get("status") != "True":
            st.seen_not_ready = True
        elif st.ready_ns is None:
            if observed is not None and st.seen_not_ready:
                st.ready_ns, st.ready_precise = observed, True
            else:
                st.ready_ns, st.ready_precise = coarse_ns(cond.get("lastTransitionTime")), False


def _containers(st: PodState, status: dict[str, Any]) -> None:
    for cs in status.get("containerStatuses") or []:
        if not isinstance(cs, dict):
            continue
        if isinstance(cs.get("restartCount"), int):
            st.restarts = max(st.restarts, cs["restartCount"])
        term = (cs.get("state") or {}).get("terminated")
        if not isinstance(term, dict):
            continue
        finished = coarse_ns(term.get("finishedAt"))
        last = st.container_finished_ns
        if finished is not None and (last is None or finished >= last):
            st.container_finished_ns = finished
            st.exit_code = term.get("exitCode") if isinstance(term.get("exitCode"), int) else None
            st.exit_reason = term.get("reason")


def prestop_of(containers: list[dict[str, Any]]) -> tuple[str, float | None]:
    """The pod's preStop: the hook with the longest known sleep, else the first hook's kind."""
    best: tuple[str, float | None] = ("none", None)
    for container in containers:
        hook = (container.get("lifecycle") or {}).get("preStop")
        if not isinstance(hook, dict):
            continue
        kind, seconds = hook_duration(hook)
        if best[0] == "none" or (seconds is not None and (best[1] is None or seconds > best[1])):
            best = (kind, seconds)
    return best


def hook_duration(hook: dict[str, Any]) -> tuple[str, float | None]:
    """``(kind, seconds)`` of one lifecycle handler."""
    if isinstance(hook.get("sleep"), dict):
        seconds = hook["sleep"].get("seconds")
        return "sleep", float(seconds) if isinstance(seconds, int | float) else None
    if isinstance(hook.get("exec"), dict):
        command = [str(a) for a in hook["exec"].get("command") or []]
        return exec_sleep(command)
    if hook.get("httpGet") is not None:
        return "http", None
    if hook.get("tcpSocket") is not None:
        return "tcp", None
    return "unknown", None


def exec_sleep(command: list[str]) -> tuple[str, float | None]:
    """Classify an exec hook: ``("sleep", N)`` if it only sleeps, else ``("exec", sleeps found or None)``."""
    if not command:
        return "exec", None
    program = command[0].rsplit("/", 1)[-1]
    if program == "sleep":
        seconds = _sleep_args(command[1:])
        return ("sleep", seconds) if seconds is not None else ("exec", None)
    if program in _SHELLS and "-c" in command:
        i = command.index("-c")
        if i + 1 < len(command):
            return _script_sleep(command[i + 1])
    return "exec", None


def _script_sleep(script: str) -> tuple[str, float | None]:
    total, only_sleep = 0.0, True
    found = False
    for _, words in script_commands(script):
        seconds = _sleep_args(words[1:]) if is_sleep(words) else None
        if seconds is None:
            only_sleep = False
        else:
            total += seconds
            found = True
    if found and only_sleep:
        return "sleep", total
    return "exec", total if found else None


def _sleep_args(args: list[str]) -> float | None:
    if not args:
        return None
    total = 0.0
    for arg in args:
        seconds = parse_sleep_seconds(arg)
        if seconds is None:
            return None
        total += seconds
    return total


def parse_sleep_seconds(text: str) -> float | None:
    """``sleep`` argument -> seconds (``5``, ``0.5``, ``5s``, ``2m``, ``1h``, ``1d``); None if not one."""
    m = re.fullmatch(r"(\d+(?:\.\d+)?|\.\d+)([smhd]?)", text.strip())
    if m is None:
        return None
    value = float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]
    return value if math.isfinite(value) else None
