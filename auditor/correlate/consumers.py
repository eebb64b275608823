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

import numpy as np
import pandas as pd

from auditor.correlate.attach import attach_episodes
from auditor.correlate.columns import KindView, as_category, as_str_array, codes_in, distinct, row_hash
from auditor.enrich.protocols import PodGetter
from auditor.model.audit import CONSUMER_COLUMNS, MISSING_NS, ConsumerKind, FailureKind
from auditor.model.packet import EventKind

NS = 1_000_000_000
PAIR_WINDOW_NS = NS  # a live client-side refusal and the server's socketless RST of the same attempt


def syn_consumers(packets: pd.DataFrame, episodes: pd.DataFrame, pods: PodGetter) -> pd.DataFrame:
    """Every SYN to a pod of an episode, with its consumer: columns t, node, src, sport, episode, kind, name
    (text columns categorical: a node sees few distinct sources and consumers)."""
    empty = pd.DataFrame({c: [] for c in ("t", "node", "src", "sport", "episode", "kind", "name")})
    if packets.empty or episodes.empty:
        return empty
    syn = KindView(packets["kind"]).eq(EventKind.TCP_SYN)
    if not syn.any():
        return empty
    t = packets["time"][syn].to_numpy(dtype="datetime64[ns]").astype("int64")
    ep = attach_episodes(t, packets["dst"][syn], episodes, pods)
    node, src = as_category(packets["node"][syn]), as_category(packets["src"][syn])
    sport = packets["sport"].to_numpy()[syn]
    key = row_hash(np.asarray(node.codes), np.asarray(src.codes), sport, packets["seq"].to_numpy()[syn])
    hit = ep >= 0
    # the same SYN seen before DNAT, to a Service address: kube-proxy of this node translated it
    translated = pd.Series(key[hit]).isin(pd.Series(key[~hit])).to_numpy()
    node, src = node[hit], src[hit]
    kind, name = _classify(src, node, translated, t[hit], pods)
    return pd.DataFrame({
        "t": t[hit], "node": node, "src": src, "sport": sport[hit].astype("int64"), "episode": ep[hit],
        "kind": kind, "name": name,
    })  # fmt: skip


def _classify(
    src: pd.Categorical, node: pd.Categorical, translated: np.ndarray, t: np.ndarray, pods: PodGetter
) -> tuple[pd.Categorical, pd.Categorical]:
    """(kind, name) per row: kube-proxy of the node when translated, else the pod holding the source
    address (looked up once per address), else external. Categorical in, categorical out."""
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
        last_t = pd.Series(t[direct]).groupby(codes).max()
        rows = np.flatnonzero(direct)
        for code, when in zip(last_t.index.tolist(), last_t.tolist(), strict=True):
            ip = str(src_names[code])
            ref = pods.pod_by_ip(ip, int(when))
            lab = label(ConsumerKind.POD, f"{ref.namespace}/{ref.name}") if ref else label(ConsumerKind.EXTERNAL, ip)
            row_label[rows[codes == code]] = lab
    return _categorical([k for k, _ in labels], row_label), _categorical([n for _, n in labels], row_label)


def _categorical(values: list[str], codes: np.ndarray) -> pd.Categorical:
    """``values[codes]`` as a Categorical, without a per-row text array."""
    cats = pd.Index(sorted(set(values)), dtype=object)
    code_of = np.asarray(cats.get_indexer(pd.Index(values, dtype=object)), dtype="int64")
    return pd.Categorical.from_codes(code_of[codes] if len(codes) else codes, categories=cats)


def failure_consumers(
    failures: pd.DataFrame, syns: pd.DataFrame, packets: pd.DataFrame, pods: PodGetter
) -> tuple[np.ndarray, np.ndarray]:
    """(kind, name) of the consumer of each failed connection ("" when it has no episode).

    A failure is the consumer's whose SYN it answered (same node, client address and port); a live
    refusal goes by the client socket's own destination (a Service address: kube-proxy; a pod address:
    the dialing pod); otherwise by the client address (a pod, else external), kube-proxy when that
    client's other connections went through the node's rules."""
    n = len(failures)
    kind = np.full(n, "", dtype=object)
    name = np.full(n, "", dtype=object)
    if n == 0:
        return kind, name
    ep = failures["episode"].to_numpy(dtype="int64")
    node = as_str_array(failures["node"])
    client = as_str_array(failures["client_ip"])
    cport = failures["client_port"].to_numpy(dtype="int64")
    t = failures["time"].to_numpy(dtype="datetime64[ns]").astype("int64")
    via_service: set[tuple[str, str]] = set()
    if not syns.empty:
        nodes = distinct(syns["node"], failures["node"])
        addrs = distinct(syns["src"], failures["client_ip"])
        syn_key = row_hash(codes_in(syns["node"], nodes), codes_in(syns["src"], addrs), syns["sport"].to_numpy())
        fail_key = row_hash(codes_in(failures["node"], nodes), codes_in(failures["client_ip"], addrs), cport)
        last = pd.Series(np.arange(len(syns)), index=syn_key)
        last = last[~last.index.duplicated(keep="last")]
        pos = last.reindex(fail_key).to_numpy(dtype="float64")
        hit = (ep >= 0) & ~np.isnan(pos)
        rows = pos[hit].astype("int64")
        kind[hit] = np.asarray(syns["kind"].astype(str), dtype=object)[rows]
        name[hit] = np.asarray(syns["name"].astype(str), dtype=object)[rows]
        proxied = syns.loc[syns["kind"] == ConsumerKind.KUBE_PROXY, ["node", "src"]].drop_duplicates()
        via_service = {(str(a), str(b)) for a, b in zip(proxied["node"], proxied["src"], strict=True)}
    live_dst = _live_destinations(failures, packets)
    todo = np.flatnonzero((ep >= 0) & (kind == ""))
    if len(todo):
        server = as_str_array(failures["server_ip"])
        translated = np.array([
            live_dst[int(i)] != server[i] if int(i) in live_dst else (node[i], client[i]) in via_service
            for i in todo
        ], dtype=bool)  # fmt: skip
        kinds, names = _classify(
            pd.Categorical(client[todo]), pd.Categorical(node[todo]), translated, t[todo], pods
        )
        kind[todo] = np.asarray(kinds.astype(str), dtype=object)
        name[todo] = np.asarray(names.astype(str), dtype=object)
    return kind, name


def _live_destinations(failures: pd.DataFrame, packets: pd.DataFrame) -> dict[int, str]:
    """For failures the live agent saw: the destination the client's own socket dialed (its ``refused``
    event on the same node, same client address and port, within :data:`PAIR_WINDOW_NS`)."""
    if packets.empty or "source" not in failures:
        return {}
    live = np.flatnonzero(as_str_array(failures["source"]) == "ebpf")
    ref = KindView(packets["kind"]).eq(EventKind.REFUSED)
    if not len(live) or not ref.any():
        return {}
    rt = packets["time"][ref].to_numpy(dtype="datetime64[ns]").astype("int64")
    by_conn: dict[tuple[str, str, int], list[tuple[int, str]]] = {}
    for n, s, p, d, tt in zip(as_str_array(packets["node"][ref]), as_str_array(packets["src"][ref]),
                              packets["sport"].to_numpy()[ref], as_str_array(packets["dst"][ref]), rt,
                              strict=True):  # fmt: skip
        by_conn.setdefault((n, s, int(p)), []).append((int(tt), d))
    node, client = as_str_array(failures["node"]), as_str_array(failures["client_ip"])
    cport = failures["client_port"].to_numpy(dtype="int64")
    t = failures["time"].to_numpy(dtype="datetime64[ns]").astype("int64")
    out: dict[int, str] = {}
    for i in live:
        for tt, d in by_conn.get((node[i], client[i], int(cport[i])), []):
            if abs(tt - int(t[i])) <= PAIR_WINDOW_NS:
                out[int(i)] = d
                break
    return out


KEYS = ["episode", "consumer_kind", "consumer", "node"]


def build_consumers(
    episodes: pd.DataFrame,
    timelines: pd.DataFrame,
    syns: pd.DataFrame,
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
        bound = strict_after.reindex(syns["episode"].to_numpy()).to_numpy(dtype="int64")
        t = syns["t"].to_numpy(dtype="int64")
        frame = pd.DataFrame({
            "episode": syns["episode"].to_numpy(dtype="int64"), "consumer_kind": pd.Categorical(syns["kind"]),
            "consumer": pd.Categorical(syns["name"]), "node": pd.Categorical(syns["node"]),
            "t_after": np.where(t >= bound, t, MISSING_NS),
        })  # fmt: skip
        parts.append(frame.groupby(KEYS, observed=True, sort=False).agg(
            new_connections=("t_after", "size"), last_syn=("t_after", "max")))  # fmt: skip
    fl = failures.loc[(failures["episode"] >= 0) & (failures["consumer"] != "")]
    if not fl.empty:
        t = fl["time"].to_numpy(dtype="datetime64[ns]").astype("int64")
        ep = fl["episode"].to_numpy(dtype="int64")
        refused = (fl["failure"].astype(str) == FailureKind.REFUSED).to_numpy()
        bound = strict_after.reindex(ep).to_numpy(dtype="int64")
        frame = pd.DataFrame({
            "episode": ep, "consumer_kind": pd.Categorical(fl["consumer_kind"].astype(str)),
            "consumer": pd.Categorical(fl["consumer"].astype(str)), "node": pd.Categorical(as_str_array(fl["node"])),
            "refused": refused.astype("int64"), "resets": (~refused & (fl["failure"].astype(str) == FailureKind.RESET).to_numpy()).astype("int64"),
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
