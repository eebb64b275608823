"""IP -> pod over time, with tombstones and IP reuse.

Each pod IP is assigned to a pod for ``[start, end]`` (both inclusive, ns UTC):

* ``start``: when the IP appeared on the pod (observedAt of the event that first showed it), or the pod's
  creationTimestamp when the first version seen already had it (see ``PodInfo.ips_first_seen_ns``);
* ``end``: the observedAt of the pod's DELETED event + ``grace_ns``; without observedAt, its last
  container's finishedAt (else its deletionTimestamp) + ``grace_ns``; open while the pod was not seen
  deleted.

Where assignments of one IP overlap, the *newest live* one wins (latest start among those covering the
time). Host-network pods are never indexed (their IP is the node's). The assignments of each IP are
flattened once into disjoint segments, so a lookup is one binary search, and
:func:`resolve_pods` resolves a million rows with one ``numpy.searchsorted`` per distinct IP.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import numpy as np

from auditor.model.kube import KubeInput, PodInfo, PodRef

if TYPE_CHECKING:
    import pandas as pd

DEFAULT_GRACE_NS = 1_000_000_000
_OPEN = np.iinfo(np.int64).max
RESOLVED_COLUMNS: tuple[str, ...] = ("pod_uid", "pod", "namespace", "node", "replicaset", "deployment")


class PodIndex:
    """Implements :class:`auditor.enrich.protocols.PodGetter`; build it with :meth:`from_kube`."""

    def __init__(self, refs: list[PodRef], assignments: Iterable[tuple[str, int, int, int]]) -> None:
        """``assignments``: ``(ip, start_ns, end_ns inclusive, index into refs)``."""
        self.refs = refs
        by_ip: dict[str, list[tuple[int, int, int]]] = {}
        for ip, start, end, idx in assignments:
            if end >= start:
                by_ip.setdefault(ip, []).append((start, end, idx))
        self.assignments = {ip: sorted(v) for ip, v in by_ip.items()}
        self._segments = {ip: _segments(v) for ip, v in self.assignments.items()}

    @classmethod
    def from_kube(cls, kube: KubeInput, grace_ns: int = DEFAULT_GRACE_NS) -> PodIndex:
        return cls.from_pods(kube.pods.values(), grace_ns)

    @classmethod
    def from_pods(cls, pods: Iterable[PodInfo], grace_ns: int = DEFAULT_GRACE_NS) -> PodIndex:
        refs: list[PodRef] = []
        assignments: list[tuple[str, int, int, int]] = []
        for pod in pods:
            if pod.host_network or not pod.ips:
                continue
            refs.append(pod.ref())
            end = _end_ns(pod, grace_ns)
            for ip, start in zip(pod.ips, pod.ips_first_seen_ns, strict=True):
                assignments.append((ip, start, end, len(refs) - 1))
        return cls(refs, assignments)

    def pod_by_ip(self, ip: str, time_ns: int) -> PodRef | None:
        seg = self._segments.get(ip)
        if seg is None:
            return None
        bounds, winners = seg
        i = int(np.searchsorted(bounds, time_ns, side="right")) - 1
        if i < 0 or i >= len(winners) or winners[i] < 0:
            return None
        return self.refs[int(winners[i])]

    def resolve_pods(self, ips: Any, times_ns: Any) -> pd.DataFrame:
        return resolve_pods(self, ips, times_ns)


def _end_ns(pod: PodInfo, grace_ns: int) -> int:
    if not pod.deleted:
        return int(_OPEN)
    gone = pod.deleted_observed_ns
    if gone is None:
        gone = pod.container_finished_ns if pod.container_finished_ns is not None else pod.deletion_ns
    return int(_OPEN) if gone is None else gone + grace_ns


def _segments(intervals: list[tuple[int, int, int]]) -> tuple[np.ndarray, np.ndarray]:
    """Disjoint segments ``[bounds[i], bounds[i+1])`` and the winning ref index of each (-1: none)."""
    points = sorted({s for s, _, _ in intervals} | {min(e, int(_OPEN) - 1) + 1 for _, e, _ in intervals})
    winners: list[int] = []
    for b in points[:-1]:
        best: tuple[int, int] | None = None
        for order, (s, e, idx) in enumerate(intervals):
            if s <= b <= e and (best is None or (s, order) >= (intervals[best[1]][0], best[1])):
                best = (idx, order)
        winners.append(-1 if best is None else best[0])
    return np.asarray(points, dtype=np.int64), np.asarray(winners, dtype=np.int64)


def _times_ns(times: Any) -> np.ndarray:
    import pandas as pd

    if isinstance(times, pd.Series | pd.Index) and times.dtype.kind == "M":
        return np.asarray(pd.DatetimeIndex(times).as_unit("ns").asi8, dtype=np.int64)
    arr = np.asarray(times)
    if arr.dtype.kind == "M":
        return arr.astype("datetime64[ns]").view(np.int64)
    return arr.astype(np.int64, copy=False)


def resolve_pods(index: PodIndex, ips: pd.Series, times_ns: Any) -> pd.DataFrame:
    """Vectorized :meth:`PodIndex.pod_by_ip`: one output row per input row, columns RESOLVED_COLUMNS.

    ``ips`` is a text or categorical Series; ``times_ns`` int64 ns (or datetime64) of the same length.
    Unknown values are NA (categorical columns).
    """
    import pandas as pd

    times = _times_ns(times_ns)
    if len(times) != len(ips):
        raise ValueError(f"resolve_pods: {len(ips)} addresses but {len(times)} times")
    if isinstance(ips.dtype, pd.CategoricalDtype):
        codes = np.asarray(ips.cat.codes, dtype=np.int64)
        uniques = list(ips.cat.categories)
    else:
        codes_, uniques_ = pd.factorize(ips, use_na_sentinel=True)
        codes, uniques = np.asarray(codes_, dtype=np.int64), list(uniques_)
    winner = np.full(len(times), -1, dtype=np.int64)
    order = np.argsort(codes, kind="stable")
    sorted_codes = codes[order]
    targets = np.arange(len(uniques))
    lo = np.searchsorted(sorted_codes, targets, side="left")
    hi = np.searchsorted(sorted_codes, targets, side="right")
    for k, ip in enumerate(uniques):
        seg = index._segments.get(str(ip))
        if seg is None or lo[k] == hi[k]:
            continue
        bounds, winners = seg
        rows = order[lo[k] : hi[k]]
        i = np.searchsorted(bounds, times[rows], side="right") - 1
        ok = (i >= 0) & (i < len(winners))
        winner[rows[ok]] = winners[i[ok]]
    out: dict[str, Any] = {}
    attrs = ("uid", "name", "namespace", "node", "replicaset", "deployment")
    for column, attr in zip(RESOLVED_COLUMNS, attrs, strict=True):
        values = [getattr(ref, attr) for ref in index.refs]
        ref_codes, cats = pd.factorize(pd.Series(values, dtype=object), use_na_sentinel=True)
        ref_codes = np.append(np.asarray(ref_codes, dtype=np.int64), -1)  # winner -1 -> NA
        out[column] = pd.Categorical.from_codes(ref_codes[winner], categories=pd.Index(cats, dtype=object))
    return pd.DataFrame(out, index=ips.index)
