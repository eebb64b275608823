"""Endpoint consumers: whoever opens new connections to a terminating pod, and how late each one stops.

A consumer learns that an endpoint is terminating through its own channel, with its own delay:

* ``kube-proxy`` of a node: service traffic translated by that node's rules. A capture on the node sees
  the connection twice, before DNAT (to the Service address) and after (to the pod); the live agent sees
  the client's socket refused with the Service address as its destination.
* ``pod``: a pod that dials pod IPs itself (an ingress controller, a mesh sidecar, a proxy), named by
  IP -> pod (``namespace/name``): its SYNs reach the pod with no Service address before them.
* ``external``: an address outside the pod network (a cloud load balancer in IP mode, a node-local
  proxy, the kubelet's probes).

Per episode and consumer: its last new connection to the pod after the deletion (with captures: its last
SYN; live: its last refused connection, a lower bound), its first refusal, its **propagation delay**
(last new connection - deletion) and **gap** (last new connection - the pod's listener close), and the
refusals and resets of its connections. The table's columns are the fields of
:class:`~auditor.model.audit.ConsumerTimeline`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from auditor.correlate.attach import attach_episodes
from auditor.correlate.columns import KindView, as_category, as_str_array, codes_in, row_hash
from auditor.correlate.episodes import strictly_after_ns
from auditor.correlate.failures import one_to_one
from auditor.enrich.protocols import PodGetter
from auditor.model.audit import CONSUMER_COLUMNS, MISSING_NS, ConsumerKind, FailureKind
from auditor.model.packet import EventKind

NS = 1_000_000_000
PAIR_WINDOW_NS = NS  # a live client-side refusal and the server's socketless RST of the same attempt


@dataclass(frozen=True)
class SynTraffic:
    """The SYNs to terminating pods, aggregated: what the timelines, the consumers and the evidence need,
    without a row per SYN (a capture holds millions).

    ``groups``: one row per (episode, consumer kind, consumer, node) with ``new_connections`` (its SYNs)
    and ``last_syn`` (its last SYN after the deletion, :func:`~auditor.correlate.episodes.strictly_after_ns`;
    MISSING_NS when none); ``proxied``: the (node, client address) pairs whose SYNs the node's kube-proxy
    translated; ``labels``: the consumers, (kind, name); ``failure_label``: per row of the failures given,
    the consumer (index into ``labels``) of the last SYN of its (node, client address, client port), -1
    when none."""

    groups: pd.DataFrame
    proxied: frozenset[tuple[str, str]]
    labels: tuple[tuple[str, str], ...]
    failure_label: np.ndarray

    @property
    def empty(self) -> bool:
        return self.groups.empty


GROUP_COLUMNS = ("episode", "consumer_kind", "consumer", "node", "new_connections", "last_syn")


def no_syn_traffic(failures: pd.DataFrame | None = None) -> SynTraffic:
    n = 0 if failures is None else len(failures)
    groups = pd.DataFrame({c: pd.Series(dtype="object") for c in GROUP_COLUMNS})
    return SynTraffic(groups, frozenset(), (), np.full(n, -1, dtype="int64"))


def syn_consumers(
    packets: pd.DataFrame, episodes: pd.DataFrame, pods: PodGetter, failures: pd.DataFrame | None = None
) -> SynTraffic:
    """Every SYN to a pod of an episode, given its consumer, then aggregated (:class:`SynTraffic`);
    ``failures`` (with ``node``, ``client_ip``, ``client_port``): the connections whose last SYN's consumer
    :func:`failure_consumers` will need."""
    if packets.empty or episodes.empty:
        return no_syn_traffic(failures)
    syn = KindView(packets["kind"]).eq(EventKind.TCP_SYN)
    if not syn.any():
        return no_syn_traffic(failures)
    syn = np.flatnonzero(syn)  # positions: one nonzero pass, then takes
    t = packets["time"].to_numpy(dtype="datetime64[ns]").astype("int64")[syn]
    node_all, src_all, dst_all = (as_category(packets[c]) for c in ("node", "src", "dst"))
    dst_codes = np.asarray(dst_all.codes, dtype="int64")[syn]
    dst = pd.Series(pd.Categorical.from_codes(dst_codes, categories=dst_all.categories))
    ep = attach_episodes(t, dst, episodes, pods)
    node_codes = np.asarray(node_all.codes, dtype="int64")[syn]
    src_codes = np.asarray(src_all.codes, dtype="int64")[syn]
    sport = packets["sport"].to_numpy()[syn].astype("int64")
    hit = ep >= 0
    translated = np.zeros(int(hit.sum()), dtype=bool)
    # the same SYN seen before DNAT, to a Service address (never a pod's): kube-proxy of this node translated it
    dst_is_pod = np.append(pods.is_pod_ip(pd.Series(dst_all.categories)), False)  # per address; -1: none
    before_dnat = ~hit & ~dst_is_pod[dst_codes]
    if before_dnat.any():
        key = row_hash(node_codes, src_codes, sport, packets["seq"].to_numpy()[syn])
        translated = pd.Index(key[before_dnat]).unique().get_indexer(key[hit]) >= 0
    at = np.flatnonzero(hit)
    t, ep, node_codes, src_codes, sport = t[at], ep[at], node_codes[at], src_codes[at], sport[at]
    node = pd.Categorical.from_codes(node_codes, categories=node_all.categories)
    src = pd.Categorical.from_codes(src_codes, categories=src_all.categories)
    label, labels = _classify(src, node, translated, t, pods)
    n_labels, n_nodes = max(1, len(labels)), max(1, len(node.categories))
    node_names = np.asarray(node.categories.astype(str), dtype=object)
    src_names = np.asarray(src.categories.astype(str), dtype=object)
    kinds = np.array([k for k, _ in labels] or [""], dtype=object)
    names = np.array([n for _, n in labels] or [""], dtype=object)
    # per (episode, consumer, node), grouped on one integer key
    strict = strictly_after_ns(episodes)
    bound = by_id(strict.index.to_numpy(dtype="int64"), strict.to_numpy(dtype="int64"), MISSING_NS)[ep]
    gkey, size, last_after = _size_and_max((ep * n_labels + label) * n_nodes + node_codes, np.where(t >= bound, t, MISSING_NS))
    glabel = (gkey // n_nodes) % n_labels
    groups = pd.DataFrame({
        "episode": gkey // (n_nodes * n_labels), "consumer_kind": kinds[glabel], "consumer": names[glabel],
        "node": node_names[gkey % n_nodes], "new_connections": size, "last_syn": last_after,
    })  # fmt: skip
    proxy_labels = [i for i, (k, _) in enumerate(labels) if k == ConsumerKind.KUBE_PROXY]
    proxy = np.isin(label, proxy_labels)
    width = max(1, len(src_names))
    pairs = np.unique(node_codes[proxy] * width + src_codes[proxy])
    proxied = frozenset((str(node_names[k // width]), str(src_names[k % width])) for k in pairs.tolist())
    failure_label = np.full(0 if failures is None else len(failures), -1, dtype="int64")
    if failures is not None and not failures.empty:
        # the last SYN of each failed connection's (node, client address, client port)
        fkey = row_hash(
            codes_in(failures["node"], pd.Index(node_names)), codes_in(failures["client_ip"], pd.Index(src_names)),
            failures["client_port"].to_numpy(dtype="int64"),
        )  # fmt: skip
        fail = pd.Index(fkey).unique()
        pos = np.asarray(fail.get_indexer(row_hash(node_codes, src_codes, sport)), dtype="int64")
        sel = np.flatnonzero(pos >= 0)
        last_row = np.full(len(fail) + 1, -1, dtype="int64")  # + 1: the slot of "no such SYN"
        np.maximum.at(last_row, pos[sel], sel)  # rows ascend: the maximum is the last
        row = last_row[np.asarray(fail.get_indexer(fkey), dtype="int64")]
        failure_label = np.where(row >= 0, np.append(label, -1)[row], -1)
    return SynTraffic(groups, proxied, tuple(labels), failure_label)


DENSE_GROUPS = 1 << 22  # group keys below this: counted in arrays, not hashed


def by_id(ids: np.ndarray, values: np.ndarray, fill: int) -> np.ndarray:
    """An array indexed by (non-negative) id: ``values`` at ``ids``, ``fill`` elsewhere."""
    out = np.full(int(ids.max(initial=-1)) + 1, fill, dtype="int64")
    out[ids] = values
    return out


def _size_and_max(key: np.ndarray, value: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(distinct keys ascending, rows per key, max value per key) for non-negative integer keys."""
    if not len(key):
        return key, key, key
    top = int(key.max()) + 1
    if top <= DENSE_GROUPS:
        size = np.bincount(key, minlength=top)
        mx = np.full(top, np.iinfo(np.int64).min, dtype="int64")
        np.maximum.at(mx, key, value)
        present = np.flatnonzero(size)
        return present, size[present].astype("int64"), mx[present]
    agg = pd.Series(value).groupby(key, sort=True).agg(["size", "max"])
    return agg.index.to_numpy(dtype="int64"), agg["size"].to_numpy(dtype="int64"), agg["max"].to_numpy(dtype="int64")


def _classify(
    src: pd.Categorical, node: pd.Categorical, translated: np.ndarray, t: np.ndarray, pods: PodGetter
) -> tuple[np.ndarray, list[tuple[str, str]]]:
    """The consumer of each row, as a label code into the returned (kind, name) list: kube-proxy of the
    node when translated, else the pod holding the source address (looked up once per address, at its
    last time), else external."""
    src_codes, node_codes = np.asarray(src.codes, dtype="int64"), np.asarray(node.codes, dtype="int64")
    src_names = np.asarray(src.categories.astype(str), dtype=object)
    node_names = np.asarray(node.categories.astype(str), dtype=object)
    labels: dict[tuple[str, str], int] = {}
    row_label = np.full(len(src_codes), -1, dtype="int64")

    def label(kind: str, name: str) -> int:
        return labels.setdefault((kind, name), len(labels))

    if translated.any():
        for code in np.unique(node_codes[translated]).tolist():
            row_label[translated & (node_codes == code)] = label(ConsumerKind.KUBE_PROXY, str(node_names[code]))
    direct = ~translated
    if direct.any():
        codes = src_codes[direct]
        seen, _, last_t = _size_and_max(codes, t[direct])  # one lookup per source address, at its last SYN
        label_of = np.full(len(src_names), -1, dtype="int64")
        for code, when in zip(seen.tolist(), last_t.tolist(), strict=True):
            ip = str(src_names[code])
            ref = pods.pod_by_ip(ip, int(when))
            label_of[code] = (
                label(ConsumerKind.POD, f"{ref.namespace}/{ref.name}") if ref else label(ConsumerKind.EXTERNAL, ip)
            )
        row_label[direct] = label_of[codes]
    return row_label, list(labels)


def failure_consumers(
    failures: pd.DataFrame, syns: SynTraffic, packets: pd.DataFrame, pods: PodGetter
) -> tuple[pd.Categorical, pd.Categorical]:
    """(kind, name) of the consumer of each failed connection ("" when it has no episode).

    A failure is the consumer's whose SYN it answered (same node, client address and port); a live
    refusal goes by the client socket's own destination (a Service address: kube-proxy; a pod address:
    the dialing pod); otherwise by the client address (a pod, else external), kube-proxy when that
    client's other connections went through the node's rules."""
    n = len(failures)
    if n == 0:
        return _label_columns(np.zeros(0, dtype="int64"), [])
    ep = failures["episode"].to_numpy(dtype="int64")
    labels = list(syns.labels)
    code = np.where(ep >= 0, syns.failure_label, -1) if len(syns.failure_label) == n else np.full(n, -1, dtype="int64")
    todo = np.flatnonzero((ep >= 0) & (code < 0))
    if len(todo):
        node = as_str_array(failures["node"])
        client = as_str_array(failures["client_ip"])
        t = failures["time"].to_numpy(dtype="datetime64[ns]").astype("int64")
        live_dst = _live_destinations(failures, packets)
        server = as_str_array(failures["server_ip"])
        translated = np.array([
            live_dst[int(i)] != server[i] if int(i) in live_dst else (node[i], client[i]) in syns.proxied
            for i in todo
        ], dtype=bool)  # fmt: skip
        label, more = _classify(pd.Categorical(client[todo]), pd.Categorical(node[todo]), translated, t[todo], pods)
        index = {lab: i for i, lab in enumerate(labels)}
        remap = np.array([index.setdefault(lab, len(index)) for lab in more] or [-1], dtype="int64")
        labels = sorted(index, key=index.__getitem__)
        code[todo] = remap[label]
    return _label_columns(code, labels)


def _label_columns(code: np.ndarray, labels: list[tuple[str, str]]) -> tuple[pd.Categorical, pd.Categorical]:
    """(kind, name) columns of consumer label codes (-1: none, "")."""
    out = []
    for part in (0, 1):
        values = [lab[part] for lab in labels]
        cats = pd.Index(sorted({*values, ""}), dtype=object)
        of_label = np.append(np.asarray(cats.get_indexer(pd.Index(values, dtype=object)), dtype="int64"), cats.get_indexer(pd.Index([""], dtype=object)))
        out.append(pd.Categorical.from_codes(of_label[code], categories=cats))
    return out[0], out[1]


def _live_destinations(failures: pd.DataFrame, packets: pd.DataFrame) -> dict[int, str]:
    """For failures the live agent saw: the destination the client's own socket dialed (its ``refused``
    event on the same node, same client address and port, the nearest in time within
    :data:`PAIR_WINDOW_NS`, one event per failure: a port reused within the window has two attempts)."""
    if packets.empty or "source" not in failures:
        return {}
    live = np.flatnonzero(as_str_array(failures["source"]) == "ebpf")
    ref = KindView(packets["kind"]).eq(EventKind.REFUSED)
    if not len(live) or not ref.any():
        return {}
    a = pd.DataFrame({
        "node": as_str_array(failures["node"])[live], "ip": as_str_array(failures["client_ip"])[live],
        "port": failures["client_port"].to_numpy(dtype="int64")[live],
        "t": failures["time"].to_numpy(dtype="datetime64[ns]").astype("int64")[live], "row": live,
    })  # fmt: skip
    b = pd.DataFrame({
        "node": as_str_array(packets["node"][ref]), "ip": as_str_array(packets["src"][ref]),
        "port": packets["sport"].to_numpy()[ref].astype("int64"),
        "t_ref": packets["time"][ref].to_numpy(dtype="datetime64[ns]").astype("int64"),
        "dst": as_str_array(packets["dst"][ref]),
    })  # fmt: skip
    b["ref_row"] = np.arange(len(b))
    m = a.merge(b, on=["node", "ip", "port"], how="inner")
    m["dt"] = (m["t"] - m["t_ref"]).abs()
    m = m.loc[m["dt"] <= PAIR_WINDOW_NS]
    rows, refs = one_to_one(m["row"].to_numpy(dtype="int64"), m["ref_row"].to_numpy(dtype="int64"),
                            m["dt"].to_numpy(dtype="int64"))  # fmt: skip
    dst = b["dst"].to_numpy(dtype=object)
    return {int(r): str(dst[f]) for r, f in zip(rows.tolist(), refs.tolist(), strict=True)}


KEYS = ["episode", "consumer_kind", "consumer", "node"]


def build_consumers(
    episodes: pd.DataFrame,
    timelines: pd.DataFrame,
    syns: SynTraffic,
    failures: pd.DataFrame,
    strict_after: pd.Series,
) -> pd.DataFrame:
    """One row per (episode, consumer kind, consumer, node); columns :data:`CONSUMER_COLUMNS`.

    ``failures`` carries ``consumer_kind`` and ``consumer``; ``strict_after``: per episode, the time a
    new connection must follow to count as "after the deletion" (as for the nodes' last SYN)."""
    empty = pd.DataFrame({c: pd.Series(dtype="object") for c in CONSUMER_COLUMNS})
    if episodes.empty:
        return empty
    parts = []
    if not syns.empty:
        g = syns.groups
        parts.append(g.set_index(KEYS)[["new_connections", "last_syn"]])
    fl = failures.loc[(failures["episode"] >= 0) & (failures["consumer"] != "")]
    if not fl.empty:
        t = fl["time"].to_numpy(dtype="datetime64[ns]").astype("int64")
        ep = fl["episode"].to_numpy(dtype="int64")
        failure = KindView(fl["failure"])
        refused = failure.eq(FailureKind.REFUSED)
        bound = strict_after.reindex(ep).to_numpy(dtype="int64")
        frame = pd.DataFrame({
            "episode": ep, "consumer_kind": as_category(fl["consumer_kind"]),
            "consumer": as_category(fl["consumer"]), "node": as_category(fl["node"]),
            "refused": refused.astype("int64"), "resets": (~refused & failure.eq(FailureKind.RESET)).astype("int64"),
            "t_ref": np.where(refused, t, np.iinfo(np.int64).max), "t_ref_after": np.where(refused & (t >= bound), t, MISSING_NS),
        })  # fmt: skip
        parts.append(frame.groupby(KEYS, observed=True, sort=False).agg(
            refused=("refused", "sum"), resets=("resets", "sum"), first_ref=("t_ref", "min"),
            last_ref=("t_ref_after", "max")))  # fmt: skip
    if not parts:
        return empty
    m = parts[0] if len(parts) == 1 else parts[0].join(parts[1], how="outer")
    m = m.reset_index()
    for col, fill in (("new_connections", 0), ("last_syn", MISSING_NS), ("refused", 0), ("resets", 0),
                      ("first_ref", np.iinfo(np.int64).max), ("last_ref", MISSING_NS)):  # fmt: skip
        m[col] = m[col].fillna(fill).astype("int64") if col in m else fill
    # live events carry no SYNs: the last refused connection is a new one after the deletion, a lower bound
    last = np.where(m["new_connections"].to_numpy() > 0, m["last_syn"].to_numpy(), m["last_ref"].to_numpy())
    # kube-proxy stops when its node's rules change: the node's timeline knows it best (a dataplane record)
    if not timelines.empty:
        rule = timelines.set_index(["episode", "node"])["rule_removed_ns"]
        keys = pd.MultiIndex.from_arrays([m["episode"].to_numpy(dtype="int64"), m["node"].astype(str).to_numpy()])
        node_rule = rule.reindex(keys).fillna(MISSING_NS).to_numpy(dtype="int64")
        proxy = (m["consumer_kind"].astype(str) == ConsumerKind.KUBE_PROXY).to_numpy()
        last = np.where(proxy & (node_rule != MISSING_NS), node_rule, last)
    first_ref = m["first_ref"].to_numpy()
    first_ref = np.where(first_ref == np.iinfo(np.int64).max, MISSING_NS, first_ref)
    ep = m["episode"].to_numpy(dtype="int64")
    deleted = episodes.set_index("episode")["deleted_ns"].reindex(ep).to_numpy(dtype="int64")
    precise = episodes.set_index("episode")["deleted_precise"].reindex(ep).to_numpy(dtype=bool)
    lc = np.full(len(m), MISSING_NS, dtype="int64")
    if not timelines.empty:
        closed = (
            timelines.loc[timelines["listener_closed_ns"] != MISSING_NS]
            .groupby("episode")["listener_closed_ns"]
            .min()
        )
        lc = closed.reindex(ep).fillna(MISSING_NS).to_numpy(dtype="int64")
    has = last != MISSING_NS
    out = pd.DataFrame({
        "episode": ep, "consumer_kind": m["consumer_kind"].astype(str).to_numpy(dtype=object),
        "consumer": m["consumer"].astype(str).to_numpy(dtype=object), "node": m["node"].astype(str).to_numpy(dtype=object),
        "new_connections": m["new_connections"].to_numpy(dtype="int64"), "last_new_ns": last,
        "first_refused_ns": first_ref, "refused": m["refused"].to_numpy(dtype="int64"),
        "resets": m["resets"].to_numpy(dtype="int64"),
        "propagation_delay_s": np.where(has, (last - deleted) / 1e9, np.nan),
        "propagation_delay_precise": precise & has,
        "gap_s": np.where(has & (lc != MISSING_NS), np.maximum(0.0, (last - lc) / 1e9), 0.0),
    })  # fmt: skip
    return out.sort_values(KEYS, kind="stable").reset_index(drop=True)[list(CONSUMER_COLUMNS)]
