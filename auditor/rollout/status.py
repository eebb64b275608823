"""Is the rollout done? The workload's status read the way ``kubectl rollout status`` reads it (pure).

* Deployment: the controller has seen the change (``status.observedGeneration`` >= the generation the
  restart or the patch produced), every replica is updated (``updatedReplicas`` = ``spec.replicas``), no
  old replica is left (``replicas`` = ``updatedReplicas``) and all are available; the ``Progressing``
  condition with reason ``ProgressDeadlineExceeded`` means stalled.
* StatefulSet: observed, ``updatedReplicas`` >= replicas - partition, ``readyReplicas`` = replicas and,
  without a partition, ``currentRevision`` = ``updateRevision``.
* DaemonSet: observed, ``updatedNumberScheduled`` and ``numberAvailable`` = ``desiredNumberScheduled``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"


@dataclass(frozen=True)
class RolloutState:
    done: bool
    stalled: str | None  # the controller's own word that it gave up (ProgressDeadlineExceeded), else None
    summary: str  # "2 of 3 updated, 2 available, 4 total"
    updated: int
    available: int
    total: int
    desired: int | None


def restart_patch(stamp: str) -> dict[str, Any]:
    """What ``kubectl rollout restart`` changes: an annotation of the pod template."""
    return {"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: stamp}}}}}


def generation(obj: dict[str, Any]) -> int:
    g = (obj.get("metadata") or {}).get("generation")
    return int(g) if isinstance(g, int) else 0


def _int(status: dict[str, Any], key: str) -> int:
    v = status.get(key)
    return int(v) if isinstance(v, int) else 0


def rollout_state(kind: str, obj: dict[str, Any], min_generation: int = 0) -> RolloutState:
    """Where the rollout of ``obj`` (a ``kind`` of deployment, statefulset, daemonset) stands, once the
    controller has observed at least ``min_generation``."""
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    observed = _int(status, "observedGeneration")
    want = max(generation(obj), min_generation)
    seen = observed >= want
    if not seen:
        waiting = f"waiting for the controller to observe generation {want} (it has seen {observed})"
        return RolloutState(False, None, waiting, 0, 0, 0, None)
    if kind == "daemonset":
        desired: int | None = _int(status, "desiredNumberScheduled")
        updated, available = _int(status, "updatedNumberScheduled"), _int(status, "numberAvailable")
        total = _int(status, "currentNumberScheduled")
        done = seen and updated >= (desired or 0) and available >= (desired or 0)
        summary = f"{updated} of {desired} updated, {available} available"
        return RolloutState(done, None, summary, updated, available, total, desired)
    desired = int(spec["replicas"]) if isinstance(spec.get("replicas"), int) else 1
    updated, total = _int(status, "updatedReplicas"), _int(status, "replicas")
    if kind == "statefulset":
        available = _int(status, "readyReplicas")
        partition = int(((spec.get("updateStrategy") or {}).get("rollingUpdate") or {}).get("partition") or 0)
        revisions = partition > 0 or status.get("currentRevision") == status.get("updateRevision")
        done = seen and updated >= desired - partition and available >= desired and bool(revisions)
        summary = f"{updated} of {desired} updated, {available} ready"
        return RolloutState(done, None, summary, updated, available, total, desired)
    available = _int(status, "availableReplicas")
    stalled = None
    for cond in status.get("conditions") or []:
        if isinstance(cond, dict) and cond.get("type") == "Progressing" and cond.get("reason") == "ProgressDeadlineExceeded":
            stalled = f"ProgressDeadlineExceeded: {cond.get('message') or 'the Deployment stopped progressing'}"
    done = seen and updated >= desired and total == updated and available >= updated
    summary = f"{updated} of {desired} updated, {available} available, {total} total"
    return RolloutState(done, stalled, summary, updated, available, total, desired)


__all__ = ["RESTARTED_AT", "RolloutState", "generation", "restart_patch", "rollout_state"]
