"""IP -> pod over time, with tombstones and IP reuse.

Each pod IP is assigned to a pod for ``[start, end]`` (both inclusive, ns UTC):

* ``start``: when the IP appeared on the pod (observedAt of the event that first showed it), or the pod's
  creationTimestamp when the first version seen already had it (see ``PodInfo.ips_first_seen_ns``);
* ``end``: the observedAt of the pod's DELETED event + ``grace_ns``; without observedAt, its last
  container's finishedAt (else its deletionTimestamp) + ``grace_ns``; open while the pod was not seen
  deleted.

Where assignments of one IP overlap, the *newest live* one wins (latest start among those covering the
time). Host-network pods are never indexed (their IP is the node's). The assignments of each IP are
flattened once into disjoint segments, so a lookup is one binary search, and :meth:`PodIndex.resolve_refs`
resolves a million rows with one as-of join (``pandas.merge_asof`` by IP code) against every segment.

The tombstone's length is a policy of whoever builds the index: ``end_ns`` (a function of the pod)
replaces the rule above; the correlation engine keeps a deleted pod's IP for its whole termination
episode (:func:`auditor.correlate.episodes.episode_end_ns`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import numpy as np

from auditor.model.kube import KubeInput, PodInfo, PodRef

if TYPE_CHECKING:
    import pandas as pd

DEFAULT_GRACE_NS = 1_000_000_000
_OPEN = np.iinfo(np.int64).max
_REUSED = -2  # an IP with several assignments (resolved through its segments)
RESOLVED_COLUMNS: tuple[str, ...] = ("pod_uid", "pod", "namespace", "node", "replicaset", "deployment")


class PodIndex:
    """Implements :class:`auditor.enrich.protocols.PodGetter`; build it with :meth:`from_kube`."""

    def __init__(self, refs: list[PodRef], assignments: Iterable[tuple[str, int, int, int]]) -> None:
        """``assignments``: ``(ip, start_ns, end_ns inclusive, index into refs)``."""
        by_ip: dict[str, list[tuple[int, int, int]]] = {}
        for ip, start, end, idx in assignments:
            if end >= start:
                by_ip.setdefault(ip, []).append((start, end, idx))
        self._init(refs, by_ip)

    def _init(self, refs: list[PodRef], by_ip: dict[str, list[tuple[int, int, int]]]) -> None:
        self.refs = refs
        for v in by_ip.values():
            if len(v) > 1:
                v.sort()
        self.assignments = by_ip
        self._segment_cache: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self._ips = pd_index(list(self.assignments))
        self._flat: pd.DataFrame | None = None
        self._single_arrays: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        self._uids: pd.Index | None = None
        self._uid_codes: np.ndarray | None = None

    @classmethod
    def from_kube(cls, kube: KubeInput, grace_ns: int = DEFAULT_GRACE_NS) -> PodIndex:
        return cls.from_pods(kube.pods.values(), grace_ns)

    @classmethod
    def from_pods(
        cls,
        pods: Iterable[PodInfo],
        grace_ns: int = DEFAULT_GRACE_NS,
        end_ns: Callable[[PodInfo], int | None] | None = None,
    ) -> PodIndex:
        """``end_ns``: when a pod stops holding its IPs (None: open); default: gone + ``grace_ns``."""
        refs: list[PodRef] = []
        by_ip: dict[str, list[tuple[int, int, int]]] = {}
        for pod in pods:
            if pod.host_network or not pod.ips:
                continue
            idx = len(refs)
            refs.append(pod.ref())
            if end_ns is None:
                end = _end_ns(pod, grace_ns)
            else:
                custom = end_ns(pod)
                end = int(_OPEN) if custom is None else custom
            for ip, start in zip(pod.ips, pod.ips_first_seen_ns, strict=True):
                if end >= start:
                    held = by_ip.get(ip)
                    if held is None:
                        by_ip[ip] = [(start, end, idx)]
                    else:
                        held.append((start, end, idx))
        index = cls.__new__(cls)
        index._init(refs, by_ip)
        return index

    def _segments(self, ip: str) -> tuple[np.ndarray, np.ndarray] | None:
        seg = self._segment_cache.get(ip)
        if seg is None:
            intervals = self.assignments.get(ip)
            if intervals is None:
                return None
            seg = self._segment_cache[ip] = _segments(intervals)
        return seg

    def pod_by_ip(self, ip: str, time_ns: int) -> PodRef | None:
        seg = self._segments(ip)
        if seg is None:
            return None
        bounds, winners = seg
        i = int(np.searchsorted(bounds, time_ns, side="right")) - 1
        if i < 0 or i >= len(winners) or winners[i] < 0:
            return None
        return self.refs[int(winners[i])]

    def resolve_pods(self, ips: Any, times_ns: Any) -> pd.DataFrame:
        return resolve_pods(self, ips, times_ns)

    def is_pod_ip(self, ips: pd.Series) -> np.ndarray:
        """Per row: was the address ever held by an indexed pod (at any time)?"""
        return np.asarray(_codes(ips, self._ips) >= 0, dtype=bool)

    def resolve_refs(self, ips: pd.Series, times_ns: Any) -> np.ndarray:
        """Vectorized :meth:`pod_by_ip`: per row the index into ``refs`` of the pod that held the address
        at that time, or -1.

        An address held by one pod only (the common case) is one interval check per row; addresses
        reused by several pods go through one as-of join against their segments."""
        import pandas as pd

        times = _times_ns(times_ns)
        if len(times) != len(ips):
            raise ValueError(f"resolve: {len(ips)} addresses but {len(times)} times")
        out = np.full(len(times), -1, dtype=np.int64)
        codes = _codes(ips, self._ips)
        known = codes >= 0
        if not known.any():
            return out
        start, end, ref = self._single()
        c = np.where(known, codes, 0)
        single = known & (ref[c] != _REUSED)
        inside = single & (times >= start[c]) & (times <= end[c])
        out[inside] = ref[c[inside]]
        multi = known & ~single
        if multi.any():
            rows = np.flatnonzero(multi)
            left = pd.DataFrame({"t": times[rows], "ipc": codes[rows], "row": rows}).sort_values("t", kind="stable")
            m = pd.merge_asof(left, self._flat_segments(), on="t", by="ipc", direction="backward")
            w = m["winner"].to_numpy(dtype="float64")
            ok = ~np.isnan(w)
            out[m["row"].to_numpy()[ok]] = w[ok].astype(np.int64)
        return out

    def _single(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per IP code: (start, end, ref) of its only assignment; ref :data:`_REUSED` when it has several."""
        if self._single_arrays is None:
            n = len(self.assignments)
            start = np.zeros(n, dtype=np.int64)
            end = np.full(n, -1, dtype=np.int64)
            ref = np.full(n, _REUSED, dtype=np.int64)
            for code, v in enumerate(self.assignments.values()):
                if len(v) == 1:
                    start[code], end[code], ref[code] = v[0]
            self._single_arrays = (start, end, ref)
        return self._single_arrays

    def resolve_uids(self, ips: pd.Series, times_ns: Any) -> pd.Categorical:
        """Vectorized :meth:`pod_by_ip`, uids only: a Categorical of pod uids (NaN where no pod)."""
        import pandas as pd

        refs = self.resolve_refs(ips, times_ns)
        if self._uids is None or self._uid_codes is None:
            codes, uniques = pd.factorize(pd.Series([r.uid for r in self.refs], dtype=object))
            self._uids = pd.Index(uniques, dtype=object)
            self._uid_codes = np.append(np.asarray(codes, dtype=np.int64), -1)  # ref -1 -> NaN
        return pd.Categorical.from_codes(self._uid_codes[refs], categories=self._uids)

    def _flat_segments(self) -> pd.DataFrame:
        """The segments of every reused IP in one table sorted by start: (t, ipc, winner); NaN: nobody."""
        if self._flat is None:
            import pandas as pd

            parts_t: list[np.ndarray] = [np.array([], dtype=np.int64)]
            parts_ip: list[np.ndarray] = [np.array([], dtype=np.int64)]
            parts_w: list[np.ndarray] = [np.array([], dtype=np.float64)]
            for code, (ip, v) in enumerate(self.assignments.items()):
                if len(v) > 1:
                    seg = self._segments(ip)
                    assert seg is not None
                    bounds, winners = seg
                    parts_t.append(bounds)  # the last bound ends the last segment: nobody after it
                    parts_ip.append(np.full(len(bounds), code, dtype=np.int64))
                    parts_w.append(np.append(np.where(winners >= 0, winners, np.nan), np.nan))
            self._flat = pd.DataFrame(
                {"t": np.concatenate(parts_t), "ipc": np.concatenate(parts_ip), "winner": np.concatenate(parts_w)}
            ).sort_values("t", kind="stable")
        return self._flat


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


def pd_index(values: list[str]) -> pd.Index:
    import pandas as pd

    return pd.Index(values, dtype=object)


def _codes(ips: pd.Series, index: pd.Index) -> np.ndarray:
    """Position of each address in ``index`` (-1: absent), converting categories, not rows."""
    import pandas as pd

    if isinstance(ips.dtype, pd.CategoricalDtype):
        cat_pos = np.asarray(index.get_indexer(pd.Index(ips.cat.categories.astype(str), dtype=object)), dtype=np.int64)
        # one take: code -1 (missing) picks the appended -1
        return np.append(cat_pos, -1)[ips.cat.codes.to_numpy()]
    return np.asarray(index.get_indexer(pd.Index(ips.astype(str).to_numpy(dtype=object))), dtype=np.int64)


def resolve_pods(index: PodIndex, ips: pd.Series, times_ns: Any) -> pd.DataFrame:
    """Vectorized :meth:`PodIndex.pod_by_ip`: one output row per input row, columns RESOLVED_COLUMNS.

    ``ips`` is a text or categorical Series; ``times_ns`` int64 ns (or datetime64) of the same length.
    Unknown values are NA (categorical columns).
    """
    import pandas as pd

    winner = index.resolve_refs(ips, times_ns)
    out: dict[str, Any] = {}
    attrs = ("uid", "name", "namespace", "node", "replicaset", "deployment")
    for column, attr in zip(RESOLVED_COLUMNS, attrs, strict=True):
        values = [getattr(ref, attr) for ref in index.refs]
        ref_codes, cats = pd.factorize(pd.Series(values, dtype=object), use_na_sentinel=True)
        ref_codes = np.append(np.asarray(ref_codes, dtype=np.int64), -1)  # winner -1 -> NA
        out[column] = pd.Categorical.from_codes(ref_codes[winner], categories=pd.Index(cats, dtype=object))
    return pd.DataFrame(out, index=ips.index)
