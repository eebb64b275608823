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

from auditor.correlate.columns import as_str_array
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
) -> np.ndarray:
    """Cause for each row of ``failures`` (which carries an ``episode`` column, -1 when none).

    A connection of kube-proxy (service traffic) is judged against its node's rule removal; a connection
    a pod or an outside address opened to the pod IP itself (``consumer_kind`` pod / external) against
    that consumer's own last new connection to the pod: it is in that consumer's propagation gap until
    then, not ``after_removal``."""
    n = len(failures)
    cause = np.full(n, Cause.UNRELATED.value, dtype=object)
    if n == 0:
        return cause
    t = failures["time"].to_numpy(dtype="datetime64[ns]").astype("int64")
    ep = failures["episode"].to_numpy(dtype="int64")
    kind = failures["failure"].to_numpy(dtype=object)
    in_ep = ep >= 0

    if in_ep.any() and not episodes.empty:
        lower_s = started_ns(episodes)
        tl = timelines.set_index(["episode", "node"])
        keys = pd.MultiIndex.from_arrays([ep, as_str_array(failures["node"])])
        rule = tl["rule_removed_ns"].reindex(keys).fillna(MISSING_NS).to_numpy(dtype="int64")
        src = tl["rule_removed_source"].reindex(keys).fillna("").to_numpy(dtype=object)
        tol = np.where(
            pd.Series(src).astype(str).str.startswith("dataplane"),
            TOLERANCE_PRECISE_NS,
            TOLERANCE_INFERRED_NS,
        )
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
        refused = kind == FailureKind.REFUSED
        reset = kind == FailureKind.RESET
        unreachable = kind == FailureKind.UNREACHABLE
        cause[started & (refused | unreachable) & ~after] = Cause.PROPAGATION_GAP.value
        cause[started & (refused | unreachable) & after] = Cause.AFTER_REMOVAL.value
        cause[started & reset] = Cause.INFLIGHT_RESET.value

    not_pod = ~failures["server_is_pod"].to_numpy(dtype=bool) if "server_is_pod" in failures else ~in_ep
    cause[(~in_ep) & (kind == FailureKind.UNREACHABLE) & not_pod] = Cause.NO_ENDPOINTS.value
    return cause


def count_causes(causes: pd.Series) -> dict[str, int]:
    counts = causes.value_counts()
    return {c: int(counts.get(c, 0)) for c in CAUSES}


__all__ = ["CAUSES", "classify", "count_causes"]
