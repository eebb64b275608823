"""Termination episodes: one per pod that was deleted, with what the Kubernetes API said about it.

Kubernetes object times have one-second resolution; watch receipt times (``observedAt``) are precise.
Every time here carries a ``*_precise`` flag so reports can say which is which.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd

from auditor.model.audit import EPISODE_COLUMNS, MISSING_NS, Episode
from auditor.model.kube import PodInfo

NS = 1_000_000_000
COARSE_SLACK_NS = NS  # an object timestamp is truncated to the second
# a watch receipt time (observedAt) is the latest the deletion can have happened: the kubelet and
# kube-proxy watch too, and may act on it first (SIGTERM, the listener closing, refusals, the rule
# rewrite can precede our receipt by the watch latency; in the lab by up to ~10 ms, more under load)
OBSERVED_SLACK_NS = NS
TAIL_NS = 5 * NS  # late traffic to a deleted pod's IP still belongs to its episode



def _deletion(pod: PodInfo) -> tuple[int | None, bool]:
    """When the pod's deletion was requested: the watch receipt of the first version carrying a
    deletionTimestamp (precise), else that timestamp minus deletionGracePeriodSeconds (the API server
    sets it to request time + grace; coarse), else the receipt of the DELETED event (precise), else the
    receipt of a relist that found the pod gone (an upper bound; coarse)."""
    if pod.deletion_observed_ns is not None:
        return pod.deletion_observed_ns, True
    if pod.deletion_ns is not None:
        return pod.deletion_ns - (pod.deletion_grace_s or 0) * NS, False
    if pod.deleted_observed_ns is not None:
        return pod.deleted_observed_ns, True
    if pod.deleted_bound_ns is not None:
        return pod.deleted_bound_ns, False
    return None, False


def _exit(pod: PodInfo) -> tuple[int | None, bool]:
    """When the pod was gone: the DELETED receipt (precise), else its last container's finishedAt, else
    the relist that found it gone (both coarse)."""
    if pod.deleted_observed_ns is not None:
        return pod.deleted_observed_ns, True
    if pod.container_finished_ns is not None:
        return pod.container_finished_ns, False
    return pod.deleted_bound_ns, False


def _grace_s(pod: PodInfo) -> int | None:
    return pod.deletion_grace_s if pod.deletion_grace_s is not None else pod.termination_grace_s


def episode_end_ns(pod: PodInfo) -> int | None:
    """The end of a deleted pod's episode window (the pod's exit or its grace period, whichever is later,
    plus :data:`TAIL_NS` for late traffic); None for a pod not being deleted. The engine's
    :class:`~auditor.enrich.pods.PodIndex` keeps the pod's IPs until then."""
    deleted, _ = _deletion(pod)
    if deleted is None:
        return None
    return _end_ns(deleted, _exit(pod)[0], _grace_s(pod))


def _end_ns(deleted: int, exited: int | None, grace_s: float | None) -> int:
    end = deleted + int((grace_s or 30) * NS)
    return max(end, exited if exited is not None else end) + TAIL_NS


# Episode fields the loop below leaves at their default
DEFAULTS: dict[str, Any] = {
    f.name: f.default for f in dataclasses.fields(Episode) if f.name.startswith("endpoint_")
}


def build_episodes(pods: Iterable[PodInfo], endpoints: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per terminated pod IP (a pod with two IPs, v4 and v6, has two rows); columns
    :data:`EPISODE_COLUMNS` (the fields of :class:`~auditor.model.audit.Episode`)."""
    pods = list(pods)
    # when does each IP get reused by a later pod? (caps the window of the earlier one)
    starts: dict[str, list[int]] = {}
    for p in pods:
        for ip, seen in zip(p.ips, p.ips_first_seen_ns, strict=True):
            starts.setdefault(ip, []).append(seen)
    missing = set(EPISODE_COLUMNS) ^ {f.name for f in dataclasses.fields(Episode)}
    assert not missing, f"episode columns are Episode's fields: {missing}"
    # column-wise, by field name (no per-row record, no positional tuple): pandas builds a column per list
    cols: dict[str, list[Any]] = {c: [] for c in EPISODE_COLUMNS}
    add = {c: cols[c].append for c in EPISODE_COLUMNS}
    for p in pods:
        deleted, deleted_precise = _deletion(p)
        if deleted is None or p.host_network:  # a host-network pod's IP is the node's
            continue
        exited, exited_precise = _exit(p)
        grace = _grace_s(p)
        end = _end_ns(deleted, exited, grace)
        lower = deleted if deleted_precise else deleted - COARSE_SLACK_NS
        rollout = f"{p.namespace}/{p.deployment or p.replicaset or p.name}"
        prestop, grace_f = _float(p.prestop_sleep_s), _float(grace)
        for ip in p.ips:
            reused = [s for s in starts.get(ip, ()) if s > lower + COARSE_SLACK_NS]
            values = {
                "episode": -1, "pod_uid": p.uid, "namespace": p.namespace, "pod": p.name, "pod_node": p.node or "",
                "ip": ip, "replicaset": p.replicaset or "", "deployment": p.deployment or "", "rollout": rollout,
                "deleted_ns": deleted, "deleted_precise": deleted_precise, "prestop_s": prestop,
                "prestop_kind": p.prestop_kind, "grace_s": grace_f,
                "exited_ns": exited if exited is not None else MISSING_NS, "exited_precise": exited_precise,
                "window_start_ns": lower - COARSE_SLACK_NS, "window_end_ns": min(end, *reused) if reused else end,
            }  # fmt: skip
            for c, v in values.items():
                add[c](v)
            for c, v in DEFAULTS.items():  # set by _attach_endpoint_changes
                add[c](v)
    if not cols["episode"]:
        return pd.DataFrame({c: pd.Series(dtype="object") for c in EPISODE_COLUMNS})
    ep = pd.DataFrame(cols)
    ep = ep.sort_values(["deleted_ns", "pod"], kind="stable").reset_index(drop=True)
    ep["episode"] = np.arange(len(ep), dtype="int64")
    _attach_endpoint_changes(ep, endpoints)
    return ep[list(EPISODE_COLUMNS)]


def _float(v: float | int | None) -> float:
    return float(v) if v is not None else float("nan")


def _attach_endpoint_changes(ep: pd.DataFrame, endpoints: pd.DataFrame | None) -> None:
    """When did the EndpointSlice mark each terminating endpoint (not ready / terminating), and drop it?"""
    term_ns = np.full(len(ep), MISSING_NS, dtype="int64")
    term_precise = np.zeros(len(ep), dtype=bool)
    rem_ns = np.full(len(ep), MISSING_NS, dtype="int64")
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


def strictly_after_ns(episodes: pd.DataFrame) -> pd.Series:
    """Per episode id: a new connection must follow this to count as routed after the deletion (the
    deletion itself; a coarse one is truncated to the second, so one second earlier)."""
    e = episodes.set_index("episode")
    d = e["deleted_ns"].astype("int64")
    return d.where(e["deleted_precise"].astype(bool), d - NS)


def missing(value: int) -> bool:
    return int(value) == MISSING_NS


__all__ = [
    "EPISODE_COLUMNS", "MISSING_NS", "build_episodes", "episode_end_ns", "missing", "started_ns", "strictly_after_ns",
]  # fmt: skip
