"""Real model records with defaults, for tests and benchmarks that build inputs by hand.

:func:`pod` builds a :class:`PodInfo` the way the stream reader does (``PodState.freeze``): the IPs'
first-seen times, ``deleted`` and ``first_seen_precise`` follow from the times given, and the record is
validated by the model (``PodInfo.__post_init__``), so a test cannot feed the engine a pod the reader
never produces.
"""

from __future__ import annotations

from typing import Any

from auditor.model.audit import AuditInputs
from auditor.model.kube import KubeInput, PodInfo

NS = 1_000_000_000

_DEFAULTS: dict[str, Any] = {
    "node": "node-a",
    "replicaset": "web-6d5f",
    "deployment": "web",
    "host_network": False,
    "created_ns": None,
    "first_seen_ns": None,
    "ready_ns": None,
    "ready_precise": False,
    "deletion_ns": None,
    "deletion_observed_ns": None,
    "deleted_observed_ns": None,
    "deleted_bound_ns": None,
    "deletion_grace_s": 30,
    "termination_grace_s": 30,
    "prestop_sleep_s": None,
    "prestop_kind": "none",
    "has_readiness_probe": True,
    "container_finished_ns": None,
    "exit_code": None,
    "exit_reason": None,
    "phase": "Running",
    "restarts": 0,
}
_DERIVED = ("deleted", "first_seen_precise")


def pod(
    uid: str,
    namespace: str,
    name: str,
    ips: tuple[str, ...],
    ips_first_seen_ns: tuple[int, ...] | None = None,
    **fields: Any,
) -> PodInfo:
    """A ``PodInfo`` as the stream reader would build it; unspecified fields take neutral defaults.

    ``first_seen_ns`` is a watch receipt (precise), as when the watcher saw the pod's first version;
    without it the pod is known from ``created_ns`` only (coarse). ``deleted`` follows from
    ``deleted_observed_ns`` / ``deleted_bound_ns``; with ``deletion_observed_ns`` and no
    ``deletion_ns`` the deletionTimestamp is derived as the API server sets it (request + grace,
    truncated to the second). IPs held since the first version seen take that version's time.
    """
    unknown = set(fields) - set(_DEFAULTS)
    if unknown & set(_DERIVED):
        raise TypeError(f"{sorted(unknown & set(_DERIVED))} follow from the times given; do not pass them")
    if unknown:
        raise TypeError(f"unknown PodInfo fields {sorted(unknown)}")
    v = {**_DEFAULTS, **fields}
    if v["deletion_observed_ns"] is not None and v["deletion_ns"] is None:
        v["deletion_ns"] = (v["deletion_observed_ns"] // NS + (v["deletion_grace_s"] or 0)) * NS
    first_seen = v["first_seen_ns"] if v["first_seen_ns"] is not None else v["created_ns"]
    if ips_first_seen_ns is None:
        fallback = v["created_ns"] if v["created_ns"] is not None else (first_seen or 0)
        ips_first_seen_ns = tuple(fallback for _ in ips)
    return PodInfo(
        uid=uid, namespace=namespace, name=name, ips=ips, ips_first_seen_ns=ips_first_seen_ns,
        first_seen_precise=v.pop("first_seen_ns") is not None, first_seen_ns=first_seen,
        deleted=v["deleted_observed_ns"] is not None or v["deleted_bound_ns"] is not None, **v,
    )  # fmt: skip


def inputs(packets: Any, pods: list[PodInfo], **kw: Any) -> AuditInputs:
    """Engine inputs from a packet table and pods (endpoints: ``kw['endpoints']``, else none)."""
    from auditor.model.kube import endpoint_frame, event_frame

    endpoints = kw.pop("endpoints", None)
    kube = KubeInput(
        pods={p.uid: p for p in pods},
        endpoints=endpoints if endpoints is not None else endpoint_frame([]),
        events=event_frame([]),
    )
    return AuditInputs(packets=packets, kube=kube, **kw)
