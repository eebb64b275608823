"""Narrow interfaces the enrichers and the correlation engine depend on (never a Kubernetes client)."""

from __future__ import annotations

from typing import Protocol

from auditor.model.kube import PodRef


class PodGetter(Protocol):
    """Which pod held an address at a given time (tombstones included)."""

    def pod_by_ip(self, ip: str, time_ns: int) -> PodRef | None: ...
