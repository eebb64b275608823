"""Attach timestamped rows to the termination episode of the pod that owned an IP at that time."""

from __future__ import annotations

import numpy as np
import pandas as pd

from auditor.correlate.columns import codes_in
from auditor.enrich.protocols import PodGetter


def attach_episodes(
    times_ns: np.ndarray, ips: pd.Series, episodes: pd.DataFrame, pods: PodGetter
) -> np.ndarray:
    """For each (time, ip), the ``episode`` id of the pod that held the IP then, when the time falls in
    that episode's window; else -1.

    Which pod held the IP is the :class:`~auditor.enrich.protocols.PodGetter`'s answer (IP reuse and
    tombstones are its business); an episode is keyed by (pod uid, IP). Vectorized: one resolution per
    row, then integer keys (uid position x IP position) looked up in a hash index.
    """
    n = len(times_ns)
    result = np.full(n, -1, dtype="int64")
    if n == 0 or episodes.empty:
        return result
    times = np.asarray(times_ns, dtype="int64")
    owner = pods.resolve_uids(ips, times)
    ep_uids = pd.Index(episodes["pod_uid"].astype(str).to_numpy(dtype=object))
    # position of each owner (a uid category) among the episodes' uids; -1: the pod has no episode
    owner_pos = np.append(np.asarray(ep_uids.get_indexer_for(owner.categories.astype(str)), dtype="int64"), -1)
    if ep_uids.is_unique:
        # one episode per pod (one IP each): the owner names the episode; it held this very IP
        pos = owner_pos[np.asarray(owner.codes, dtype="int64")]
    else:
        # dual-stack pods have one episode per IP: key (uid position, IP position)
        uid_cats = pd.Index(ep_uids.unique())
        ep_ips = episodes["ip"].astype(str).to_numpy(dtype=object)
        ip_cats = pd.Index(np.unique(ep_ips))
        ip_codes = codes_in(ips, ip_cats)
        uid_pos = np.append(np.asarray(uid_cats.get_indexer(owner.categories.astype(str)), dtype="int64"), -1)
        row_uid = uid_pos[np.asarray(owner.codes, dtype="int64")]
        n_ip = len(ip_cats)
        ep_key = np.asarray(uid_cats.get_indexer(ep_uids), dtype="int64") * n_ip + np.asarray(
            ip_cats.get_indexer(pd.Index(ep_ips)), dtype="int64"
        )
        row_key = np.where((row_uid >= 0) & (ip_codes >= 0), row_uid * n_ip + ip_codes, -1)
        pos = np.asarray(pd.Index(ep_key).get_indexer(pd.Index(row_key)), dtype="int64")
        pos[row_key < 0] = -1
    hit = pos >= 0
    start = episodes["window_start_ns"].to_numpy(dtype="int64")
    end = episodes["window_end_ns"].to_numpy(dtype="int64")
    ids = episodes["episode"].to_numpy(dtype="int64")
    p = np.where(hit, pos, 0)
    inside = hit & (times >= start[p]) & (times <= end[p])
    result[inside] = ids[p[inside]]
    return result
