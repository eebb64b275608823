"""Termination episodes: one per pod that was deleted, with what the Kubernetes API said about it.

Kubernetes object times have one-second resolution; watch receipt times (``observedAt``) are precise.
Every time here carries a ``*_precise`` flag so reports can say which is which.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd

NS = 1_000_000_000
COARSE_SLACK_NS = NS  # an object timestamp is truncated to the second
# a watch receipt time (observedAt) is the latest the deletion can have happened: the kubelet and
# kube-proxy watch too, and may act on it first (SIGTERM, the listener closing, refusals, the rule
# rewrite can precede our receipt by the watch latency; in the lab by up to ~10 ms, more under load)
OBSERVED_SLACK_NS = NS

EPISODE_COLUMNS = [
    "episode",
    "pod_uid",
    "namespace",
    "pod",
    "pod_node",
    "ip",
    "replicaset",
    "deployment",
    "rollout",
    "deleted_ns",
    "deleted_precise",
    "prestop_s",
    "prestop_kind",
    "grace_s",
    "endpoint_terminating_ns",
    "endpoint_terminating_precise",
    "endpoint_removed_ns",
    "endpoint_removed_precise",
    "exited_ns",
    "exited_precise",
    "window_start_ns",
    "window_end_ns",
]

_MISSING = np.iinfo(np.int64).min
# the columns build_episodes fills per pod IP (the endpoint_* ones come from the EndpointSlices)
_ROW_COLUMNS = [
    "pod_uid", "namespace", "pod", "pod_node", "ip", "replicaset", "deployment", "rollout", "deleted_ns",
    "deleted_precise", "prestop_s", "prestop_kind", "grace_s", "exited_ns", "exited_precise",
    "window_start_ns", "window_end_ns",
]  # fmt: skip


def _stamp(pod: Any, *names: str) -> tuple[int | None, bool]:
    """First present time among ``names`` (ordered best first); ``*_observed_ns`` fields are precise
    (watch receipt times), the others coarse (object timestamps)."""
    for name in names:
        value = getattr(pod, name, None)
        if value is not None:
            return int(value), name.endswith("observed_ns")
    return None, False


def _deletion(pod: Any) -> tuple[int | None, bool]:
    """When the pod's deletion was requested: the watch receipt of the first version carrying a
    deletionTimestamp (precise), else that timestamp minus deletionGracePeriodSeconds (the API server
    sets it to request time + grace; coarse), else the receipt of the DELETED event (precise), else the
    receipt of a relist that found the pod gone (an upper bound; coarse)."""
    observed = getattr(pod, "deletion_observed_ns", None)
    if observed is not None:
        return int(observed), True
    stamp = getattr(pod, "deletion_ns", None)
    if stamp is not None:
        grace = getattr(pod, "deletion_grace_s", None) or 0
        return int(stamp) - int(grace) * NS, False
    return _stamp(pod, "deleted_observed_ns", "deleted_bound_ns")


def build_episodes(pods: Iterable[Any], endpoints: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per terminated pod IP (a pod with two IPs, v4 and v6, has two rows)."""
    pods = list(pods)
    cols: dict[str, list[Any]] = {c: [] for c in _ROW_COLUMNS}
    # when does each IP get reused by a later pod? (caps the window of the earlier one)
    starts: dict[str, list[int]] = {}
    for p in pods:
        first, _ = _stamp(p, "first_seen_ns", "created_ns")
        ips = tuple(getattr(p, "ips", ()) or ())
        per_ip = tuple(getattr(p, "ips_first_seen_ns", ()) or ())
        for k, ip in enumerate(ips):
            seen = per_ip[k] if k < len(per_ip) and per_ip[k] is not None else first
            if seen is not None:
                starts.setdefault(ip, []).append(int(seen))
    for p in pods:
        deleted, deleted_precise = _deletion(p)
        if deleted is None:
            continue
        exited, exited_precise = _stamp(p, "deleted_observed_ns", "container_finished_ns", "deleted_bound_ns")
        grace = getattr(p, "deletion_grace_s", None)
        if grace is None:
            grace = getattr(p, "termination_grace_s", None)
        lower = deleted if deleted_precise else deleted - COARSE_SLACK_NS
        end = max(x for x in (exited, deleted + int((grace or 30) * NS)) if x is not None) + 5 * NS
        deployment = getattr(p, "deployment", None) or None
        replicaset = getattr(p, "replicaset", None) or None
        rollout = f"{p.namespace}/{deployment or replicaset or p.name}"
        for ip in getattr(p, "ips", ()) or ():
            later = [s for s in starts.get(ip, []) if s > lower + COARSE_SLACK_NS]
            win_end = min([end, *later])
            for name, value in zip(
                _ROW_COLUMNS,
                (
                    p.uid, p.namespace, p.name, getattr(p, "node", None) or "", ip, replicaset or "",
                    deployment or "", rollout, deleted, deleted_precise,
                    _float(getattr(p, "prestop_sleep_s", None)), getattr(p, "prestop_kind", None) or "",
                    _float(grace), exited if exited is not None else _MISSING, exited_precise,
                    lower - COARSE_SLACK_NS, win_end,
                ),
                strict=True,
            ):  # fmt: skip
                cols[name].append(value)
    if not cols["pod_uid"]:
        return pd.DataFrame({c: pd.Series(dtype="object") for c in EPISODE_COLUMNS})
    ep = pd.DataFrame(cols).sort_values(["deleted_ns", "pod"], kind="stable").reset_index(drop=True)
    ep.insert(0, "episode", np.arange(len(ep), dtype="int64"))
    _attach_endpoint_changes(ep, endpoints)
    return ep[EPISODE_COLUMNS]


def _float(v: Any) -> float:
    return float(v) if v is not None else float("nan")


def _attach_endpoint_changes(ep: pd.DataFrame, endpoints: pd.DataFrame | None) -> None:
    """When did the EndpointSlice mark each terminating endpoint (not ready / terminating), and drop it?"""
    term_ns = np.full(len(ep), _MISSING, dtype="int64")
    term_precise = np.zeros(len(ep), dtype=bool)
    rem_ns = np.full(len(ep), _MISSING, dtype="int64")
    rem_precise = np.zeros(len(ep), dtype=bool)
    if endpoints is not None and not endpoints.empty:
        e = endpoints.copy()
        e["t"] = pd.to_datetime(e["time"], utc=True).astype("int64")
        e["address"] = e["address"].astype(str)
        by_addr = {a: g.sort_values("t", kind="stable") for a, g in e.groupby("address", sort=False)}
        for i, row in enumerate(ep.itertuples(index=False)):
            g = by_addr.get(str(row.ip))
            if g is None:
                continue
            g = g[(g["t"] >= row.window_start_ns) & (g["t"] <= row.window_end_ns)]
            not_ready = (g["terminating"].fillna(False).astype(bool)) | (
                ~g["ready"].fillna(True).astype(bool)
            )
            gone = ~g["present"].astype(bool)
            hit = g[(not_ready | gone)]
            if not hit.empty:
                term_ns[i] = int(hit["t"].iloc[0])
                term_precise[i] = bool(hit["precise"].iloc[0])
            hit = g[gone]
            if not hit.empty:
                rem_ns[i] = int(hit["t"].iloc[0])
                rem_precise[i] = bool(hit["precise"].iloc[0])
    ep["endpoint_terminating_ns"] = term_ns
    ep["endpoint_terminating_precise"] = term_precise
    ep["endpoint_removed_ns"] = rem_ns
    ep["endpoint_removed_precise"] = rem_precise


def started_ns(episodes: pd.DataFrame) -> pd.Series:
    """Per episode id: the earliest time the deletion can have been acted on (the deletion minus the
    slack of its time source), the lower bound of "after the deletion" for what the pod and the nodes did."""
    e = episodes.set_index("episode")
    slack = np.where(e["deleted_precise"].to_numpy(dtype=bool), OBSERVED_SLACK_NS, COARSE_SLACK_NS)
    return pd.Series(e["deleted_ns"].to_numpy(dtype="int64") - slack, index=e.index)


def missing(value: int) -> bool:
    return int(value) == _MISSING


MISSING_NS = _MISSING
