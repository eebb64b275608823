"""Attach timestamped rows to the termination episode of the pod that owned an IP at that time."""

from __future__ import annotations

import numpy as np
import pandas as pd

from auditor.correlate.columns import codes_in


def attach_episodes(times_ns: np.ndarray, ips: pd.Series, episodes: pd.DataFrame) -> np.ndarray:
    """For each (time, ip), the ``episode`` id whose IP window contains it, or -1.

    Episode windows of one IP never overlap (a reused IP closes the earlier window), so an as-of
    join on the window start followed by a check of the window end is exact. Vectorized
    (``pandas.merge_asof`` on integer IP codes); no per-row Python.
    """
    n = len(times_ns)
    result = np.full(n, -1, dtype="int64")
    if n == 0 or episodes.empty:
        return result
    ep_ips = episodes["ip"].astype(str).to_numpy()
    cats = pd.Index(np.unique(ep_ips))
    codes = codes_in(ips, cats)
    known = codes >= 0
    if not known.any():
        return result
    left = pd.DataFrame(
        {"t": np.asarray(times_ns, dtype="int64")[known], "ipc": codes[known], "row": np.nonzero(known)[0]}
    ).sort_values("t", kind="stable")
    right = pd.DataFrame(
        {
            "t": episodes["window_start_ns"].to_numpy(dtype="int64"),
            "ipc": cats.get_indexer(pd.Index(ep_ips)),
            "end": episodes["window_end_ns"].to_numpy(dtype="int64"),
            "episode": episodes["episode"].to_numpy(dtype="int64"),
        }
    ).sort_values("t", kind="stable")
    m = pd.merge_asof(left, right, on="t", by="ipc", direction="backward")
    ok = m["episode"].notna().to_numpy() & (m["t"].to_numpy() <= m["end"].fillna(-1).to_numpy())
    result[m["row"].to_numpy()[ok]] = m["episode"].to_numpy()[ok].astype("int64")
    return result
