"""Narrow interfaces the enrichers and the correlation engine depend on (never a Kubernetes client)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from auditor.model.kube import PodRef

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd


class PodGetter(Protocol):
    """Which pod held an address at a given time (tombstones included)."""

    def pod_by_ip(self, ip: str, time_ns: int) -> PodRef | None: ...

    def resolve_uids(self, ips: pd.Series, times_ns: Any) -> pd.Categorical:
        """:meth:`pod_by_ip` for a whole column: the uid per row (NaN where no pod held the address)."""
        ...

    def is_pod_ip(self, ips: pd.Series) -> np.ndarray:
        """Per row: did any pod ever hold the address?"""
        ...
