"""Attribute every failed connection to a cause.

* ``propagation_gap``: a new connection refused by a terminating pod that had stopped listening
  while this node still routed to it (before the node's rule was removed);
* ``inflight_reset``: an established connection reset by the terminating pod;
* ``after_removal``: a refusal or unreachable for the pod IP after this node's rule was gone
  (stale conntrack entry, or a client that dials pod IPs directly);
* ``no_endpoints``: an ICMP unreachable for an address that is not a pod (kube-proxy rejects
  connections to a Service without endpoints);
* ``unrelated``: everything else (failures outside any termination episode).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from auditor.correlate.columns import KindView, codes_in, distinct
from auditor.correlate.episodes import started_ns
from auditor.model.audit import CAUSES, MISSING_NS, Cause, ConsumerKind, FailureKind

# a refusal answers a SYN sent just before; a rule removal inferred from the last SYN is only
# known to within one round trip (precise dataplane records: a few ms)
TOLERANCE_INFERRED_NS = 100_000_000
TOLERANCE_PRECISE_NS = 10_000_000


def classify(
    failures: pd.DataFrame,
    episodes: pd.DataFrame,
    timelines: pd.DataFrame,
    consumers: pd.DataFrame | None = None,
) -> pd.Categorical:
    """Cause for each row of ``failures`` (which carries an ``episode`` column, -1 when none).

    A connection of kube-proxy (service traffic) is judged against its node's rule removal; a connection
    a pod or an outside address opened to the pod IP itself (``consumer_kind`` pod / external) against
    that consumer's own last new connection to the pod: it is in that consumer's propagation gap until
    then, not ``after_removal``."""
    n = len(failures)
    cause = np.full(n, CODE[Cause.UNRELATED], dtype="int8")
    if n == 0:
        return _named(cause)
    t = failures["time"].to_numpy(dtype="datetime64[ns]").astype("int64")
    ep = failures["episode"].to_numpy(dtype="int64")
    kind = KindView(failures["failure"])
    in_ep = ep >= 0

    if in_ep.any() and not episodes.empty:
        lower_s = started_ns(episodes)
        # the failure's node timeline, looked up on integer (episode, node) keys
        nodes = distinct(timelines["node"], failures["node"])
        width = max(1, len(nodes))
        tl_key = timelines["episode"].to_numpy(dtype="int64") * width + codes_in(timelines["node"], nodes)
        f_key = np.where(in_ep, ep * width + codes_in(failures["node"], nodes), -1)
        pos = np.asarray(pd.Index(tl_key).get_indexer(f_key), dtype="int64")
        found = pos >= 0
        rule = np.full(n, MISSING_NS, dtype="int64")
        rule[found] = timelines["rule_removed_ns"].to_numpy(dtype="int64")[pos[found]]
        from_dataplane = np.zeros(n, dtype=bool)
        from_dataplane[found] = KindView(timelines["rule_removed_source"]).startswith("dataplane")[pos[found]]
        tol = np.where(from_dataplane, TOLERANCE_PRECISE_NS, TOLERANCE_INFERRED_NS)
        ep_lower = np.full(n, np.iinfo(np.int64).max, dtype="int64")
        ep_lower[in_ep] = lower_s.reindex(ep[in_ep]).to_numpy(dtype="int64")
        started = in_ep & (t >= ep_lower)
        if consumers is not None and not consumers.empty and "consumer_kind" in failures:
            direct = (
                in_ep & failures["consumer_kind"].isin([ConsumerKind.POD, ConsumerKind.EXTERNAL]).to_numpy()
            )
            if direct.any():
                last = consumers.groupby(["episode", "consumer_kind", "consumer"])["last_new_ns"].max()
                ckeys = pd.MultiIndex.from_arrays([
                    ep[direct], failures["consumer_kind"].to_numpy(dtype=object)[direct],
                    failures["consumer"].to_numpy(dtype=object)[direct],
                ])  # fmt: skip
                rule = rule.copy()
                rule[direct] = last.reindex(ckeys).fillna(MISSING_NS).to_numpy(dtype="int64")
                tol = np.where(direct, TOLERANCE_INFERRED_NS, tol)
        has_rule = rule != MISSING_NS
        after = has_rule & (t > rule + tol)
        refused = kind.eq(FailureKind.REFUSED)
        reset = kind.eq(FailureKind.RESET)
        unreachable = kind.eq(FailureKind.UNREACHABLE)
        cause[started & (refused | unreachable) & ~after] = CODE[Cause.PROPAGATION_GAP]
        cause[started & (refused | unreachable) & after] = CODE[Cause.AFTER_REMOVAL]
        cause[started & reset] = CODE[Cause.INFLIGHT_RESET]

    not_pod = ~failures["server_is_pod"].to_numpy(dtype=bool) if "server_is_pod" in failures else ~in_ep
    cause[(~in_ep) & kind.eq(FailureKind.UNREACHABLE) & not_pod] = CODE[Cause.NO_ENDPOINTS]
    return _named(cause)


CODE = {c: i for i, c in enumerate(Cause)}
_NAMES = pd.Index([c.value for c in Cause], dtype=object)


def _named(codes: np.ndarray) -> pd.Categorical:
    """Cause codes as a categorical of the cause names (every cause a category, counted or not)."""
    return pd.Categorical.from_codes(codes, categories=_NAMES)


def count_causes(causes: pd.Series) -> dict[str, int]:
    counts = causes.value_counts()
    return {c: int(counts.get(c, 0)) for c in CAUSES}


__all__ = ["CAUSES", "classify", "count_causes"]
