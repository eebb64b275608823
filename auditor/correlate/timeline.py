"""Per-node timelines of each termination episode: when this node stopped routing to the pod, when the
pod stopped listening, and the propagation delay and gap that follow.

Times come from the best source available, named in ``*_source``:
* rule removed: the node's dataplane record (precise) or, inferred from packets, the last new
  connection (SYN) this node routed to the pod IP after the deletion;
* listener closed: the kernel's LISTEN -> CLOSE event (live agent) or, inferred from packets, the first
  connection the pod refused (SYN answered by RST) after the deletion.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from auditor.correlate.attach import attach_episodes
from auditor.correlate.columns import KindView, as_category, as_str_array
from auditor.correlate.consumers import SynTraffic
from auditor.correlate.episodes import started_ns
from auditor.enrich.protocols import PodGetter
from auditor.model.audit import MISSING_NS, TIMELINE_COLUMNS, ConsumerKind, FailureKind
from auditor.model.dataplane import RuleOp
from auditor.model.packet import EventKind


def _first_or_last(
    times: np.ndarray, episode: np.ndarray, node: np.ndarray | pd.Categorical, after: np.ndarray, how: str
) -> pd.Series:
    """min/max time per (episode, node) among rows attached to an episode and not before ``after``.

    Grouped on integer codes (episode x node code), then labelled: a text group-by over hundreds of
    thousands of SYNs would cost more than the rest of the correlation."""
    keep = (episode >= 0) & (times >= after)
    if not keep.any():
        return pd.Series(dtype="int64")
    cat = node if isinstance(node, pd.Categorical) else pd.Categorical(np.asarray(node, dtype=object))
    codes = np.asarray(cat.codes)[keep].astype("int64")
    n_nodes = max(1, len(cat.categories))
    key = episode[keep].astype("int64") * n_nodes + codes
    t = pd.Series(times[keep])
    g = t.groupby(key, sort=False)
    agg = g.min() if how == "min" else g.max()
    keys = agg.index.to_numpy(dtype="int64")
    names = np.asarray(cat.categories.astype(str), dtype=object)[keys % n_nodes]
    index = pd.MultiIndex.from_arrays([keys // n_nodes, names], names=["episode", "node"])
    return pd.Series(agg.to_numpy(dtype="int64"), index=index)


def _per_episode(
    packets: pd.DataFrame,
    mask: np.ndarray,
    times: np.ndarray,
    ip_column: str,
    episodes: pd.DataFrame,
    pods: PodGetter,
    after_of: Callable[[np.ndarray], np.ndarray],
    how: str,
) -> pd.Series:
    """min/max time per (episode, node) of the masked packets, looking only at the columns needed
    (a boolean ``.loc`` on the whole table would copy every column of a million rows)."""
    if not mask.any():
        return pd.Series(dtype="int64")
    t = times[mask]
    ep = attach_episodes(t, packets[ip_column][mask], episodes, pods)
    hit = ep >= 0
    if not hit.any():
        return pd.Series(dtype="int64")
    nodes = as_category(packets["node"][mask][hit])
    return _first_or_last(t[hit], ep[hit], nodes, after_of(ep[hit]), how)


def build_timelines(
    episodes: pd.DataFrame,
    nodes: list[str],
    packets: pd.DataFrame,
    failures: pd.DataFrame,
    dataplane: pd.DataFrame | None,
    pods: PodGetter,
    syns: SynTraffic | None = None,
) -> pd.DataFrame:
    """One row per (episode, node); columns :data:`TIMELINE_COLUMNS` (the fields of
    :class:`~auditor.model.audit.NodeTimeline`).

    Inferred times: the rule removal is the last SYN this node routed to the pod (a lower bound: with a
    random split, SYNs to the other pods say nothing about when the rule went away); the listener close
    is the midpoint between the pod's last SYN-ACK (still listening) and its first refusal."""
    if episodes.empty or not nodes:
        return pd.DataFrame({c: pd.Series(dtype="object") for c in TIMELINE_COLUMNS})
    deleted = episodes.set_index("episode")["deleted_ns"]
    precise = episodes.set_index("episode")["deleted_precise"]
    # lower bounds of "after the deletion". What the pod and the nodes did (listener closed, refusals,
    # rules rewritten) may precede our watch receipt of the deletion: started_ns allows for that. The
    # last SYN routed to the pod must follow the deletion itself (coarse times: truncated to the second).
    started = started_ns(episodes)
    strict = deleted.where(precise, deleted - 1_000_000_000)

    def bound(lower: pd.Series) -> Callable[[np.ndarray], np.ndarray]:
        def after_of(ep_ids: np.ndarray) -> np.ndarray:
            out = np.full(len(ep_ids), np.iinfo(np.int64).max, dtype="int64")
            ok = ep_ids >= 0
            out[ok] = lower.reindex(ep_ids[ok]).to_numpy(dtype="int64")
            return out

        return after_of

    after_of, after_deletion = bound(started), bound(strict)

    if packets.empty:
        last_syn = listen_close = pd.Series(dtype="int64")
    else:
        kind = KindView(packets["kind"])
        times = packets["time"].to_numpy(dtype="datetime64[ns]").astype("int64")
        # last SYN routed to the pod IP, per node (the SYNs already attached by the consumers, when given)
        if syns is not None:
            # kube-proxy's own SYNs say when the node's rules stopped routing to the pod: a pod dialing the
            # pod IP itself (an ingress) is another consumer with its own delay. Where a node shows no
            # translated SYN for an episode (a capture that misses the pre-DNAT copy), all its SYNs count.
            g = syns.groups
            if g.empty:
                last_syn = pd.Series(dtype="int64")
            else:
                proxy = (g["consumer_kind"] == ConsumerKind.KUBE_PROXY).to_numpy()
                pair = pd.MultiIndex.from_arrays([g["episode"].to_numpy(dtype="int64"), g["node"].to_numpy(dtype=object)])
                with_proxy = pair.isin(pair[proxy])
                use = (proxy | ~with_proxy) & (g["last_syn"].to_numpy(dtype="int64") != MISSING_NS)
                last_syn = g.loc[use].groupby(["episode", "node"], sort=False)["last_syn"].max().astype("int64")
        else:
            last_syn = _per_episode(
                packets, kind.eq(EventKind.TCP_SYN), times, "dst", episodes, pods, after_deletion, "max"
            )
        # listener closed, from the live agent
        listen_close = _per_episode(
            packets, kind.eq(EventKind.LISTEN_CLOSE), times, "src", episodes, pods, after_of, "min"
        )
    # first refusal by the pod, per node
    ref = failures.loc[(failures["failure"] == FailureKind.REFUSED) & (failures["episode"] >= 0)]
    ref_t = ref["time"].to_numpy(dtype="datetime64[ns]").astype("int64")
    ref_ep = ref["episode"].to_numpy(dtype="int64")
    first_ref = _first_or_last(ref_t, ref_ep, as_str_array(ref["node"]), after_of(ref_ep), "min")
    # rule removed, from the dataplane record
    if dataplane is not None and not dataplane.empty:
        dp = dataplane.loc[dataplane["op"].astype(str) == RuleOp.REMOVED]
        dp_t = pd.to_datetime(dp["time"], utc=True).to_numpy(dtype="datetime64[ns]").astype("int64")
        dp_ep = attach_episodes(dp_t, dp["ip"], episodes, pods)
        dp_removed = _first_or_last(dp_t, dp_ep, dp["node"].astype(str).to_numpy(), after_of(dp_ep), "min")
        dp_backend = dict(
            zip(
                zip(dp_ep.tolist(), dp["node"].astype(str).tolist(), strict=True),
                dp["backend"].astype(str).tolist(),
                strict=True,
            )
        )
    else:
        dp_removed, dp_backend = pd.Series(dtype="int64"), {}

    base = pd.MultiIndex.from_product(
        [episodes["episode"].to_numpy(dtype="int64"), list(nodes)], names=["episode", "node"]
    ).to_frame(index=False)
    idx = pd.MultiIndex.from_frame(base)

    def col(series: pd.Series) -> np.ndarray:
        if series.empty:
            return np.full(len(base), MISSING_NS, dtype="int64")
        return series.reindex(idx).fillna(MISSING_NS).to_numpy(dtype="int64")

    dp_v, syn_v, lc_v, ref_v = col(dp_removed), col(last_syn), col(listen_close), col(first_ref)
    ref_mid, ref_pm = _listener_bracket(base, ref_v, packets, episodes, pods)
    rule = np.where(dp_v != MISSING_NS, dp_v, syn_v)
    backend = [
        dp_backend.get(k, "") for k in zip(base["episode"].tolist(), base["node"].tolist(), strict=True)
    ]
    rule_src = np.where(
        dp_v != MISSING_NS,
        np.array([f"dataplane:{b}" if b else "dataplane" for b in backend], dtype=object),
        np.where(syn_v != MISSING_NS, "inferred:last_syn", ""),
    )
    listener = np.where(lc_v != MISSING_NS, lc_v, ref_mid)
    listener_src = np.where(
        lc_v != MISSING_NS,
        "ebpf:listen_close",
        np.where(
            ref_pm > 0,
            "inferred:synack_refusal_midpoint",
            np.where(ref_v != MISSING_NS, "inferred:first_refused", ""),
        ),
    )
    d = deleted.reindex(base["episode"]).to_numpy(dtype="int64")
    has_rule = rule != MISSING_NS
    has_listener = listener != MISSING_NS
    delay = np.where(has_rule, (rule - d) / 1e9, np.nan)
    gap = np.where(has_rule & has_listener, np.maximum(0.0, (rule - listener) / 1e9), 0.0)
    out = base.assign(
        rule_removed_ns=rule,
        rule_removed_source=rule_src,
        listener_closed_ns=listener,
        listener_closed_source=listener_src,
        listener_closed_pm_s=np.where(lc_v != MISSING_NS, 0.0, ref_pm),
        last_syn_ns=syn_v,
        first_refused_ns=ref_v,
        propagation_delay_s=delay,
        propagation_delay_precise=precise.reindex(base["episode"]).to_numpy(dtype=bool) & has_rule,
        gap_s=gap,
    )
    return out[list(TIMELINE_COLUMNS)]


# a bracket wider than this says the traffic stopped, not when the change happened: keep the bound
MAX_BRACKET_NS = 1_000_000_000


def _midpoint(bound: np.ndarray, other: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Midpoint of [bound, other] (either order) where both exist and are close; else the bound itself."""
    ok = (bound != MISSING_NS) & (other != MISSING_NS) & (np.abs(other - bound) <= MAX_BRACKET_NS)
    mid = np.where(ok, bound + (other - bound) // 2, bound)
    pm = np.where(ok, np.abs(other - bound) / 2e9, 0.0)
    return mid, pm


def _listener_bracket(
    base: pd.DataFrame, first_refused: np.ndarray, packets: pd.DataFrame, episodes: pd.DataFrame,
    pods: PodGetter,
) -> tuple[np.ndarray, np.ndarray]:
    """The pod's listener was open for the last connection it accepted (its SYN-ACK) and closed for its
    first refusal: the listener close is estimated at the midpoint."""
    prev = np.full(len(base), MISSING_NS, dtype="int64")
    has = first_refused != MISSING_NS
    if packets.empty or not has.any():
        return _midpoint(first_refused, prev)
    sa = KindView(packets["kind"]).eq(EventKind.TCP_SYNACK)
    if not sa.any():
        return _midpoint(first_refused, prev)
    t = packets["time"][sa].to_numpy(dtype="datetime64[ns]").astype("int64")
    ep = attach_episodes(t, packets["src"][sa], episodes, pods)
    hit = ep >= 0
    if not hit.any():
        return _midpoint(first_refused, prev)
    acks = pd.DataFrame({"episode": ep[hit], "node": as_str_array(packets["node"][sa][hit]), "t": t[hit]})
    refused = base.assign(first=first_refused).loc[has]
    m = acks.merge(refused, on=["episode", "node"])
    m = m.loc[m["t"] < m["first"]]
    if m.empty:
        return _midpoint(first_refused, prev)
    last = m.groupby(["episode", "node"], sort=False)["t"].max()
    idx = pd.MultiIndex.from_frame(base[["episode", "node"]])
    prev = last.reindex(idx).fillna(MISSING_NS).to_numpy(dtype="int64")
    return _midpoint(first_refused, prev)
