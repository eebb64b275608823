"""Real model records with defaults, for tests and benchmarks that build inputs by hand."""

from __future__ import annotations

from typing import Any

from auditor.model.kube import PodInfo

_DEFAULTS: dict[str, Any] = {
    "node": "node-a",
    "replicaset": "web-6d5f",
    "deployment": "web",
    "ips_first_seen_ns": (),
    "host_network": False,
    "created_ns": None,
    "first_seen_ns": None,
    "first_seen_precise": True,
    "ready_ns": None,
    "ready_precise": False,
    "deletion_ns": None,
    "deletion_observed_ns": None,
    "deleted": False,
    "deleted_observed_ns": None,
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


def pod(uid: str, namespace: str, name: str, ips: tuple[str, ...], **fields: Any) -> PodInfo:
    """A ``PodInfo`` as the stream reader would build it; unspecified fields take neutral defaults."""
    values = {**_DEFAULTS, **fields}
    if values["deleted_observed_ns"] is not None:
        values["deleted"] = True
    return PodInfo(uid=uid, namespace=namespace, name=name, ips=ips, **values)
