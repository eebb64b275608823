"""Failed connections from packet events: refused (SYN answered by RST), resets, ICMP unreachables.

Pure packet logic, no Kubernetes: which RST answers which SYN, and which copies of one packet a
multi-interface capture (``tcpdump -i any``) saw twice, once before and once after kube-proxy's DNAT.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from auditor.correlate.columns import (
    KindView,
    as_category,
    as_str_array,
    codes_in,
    concat_frames,
    distinct,
    row_hash,
)
from auditor.model.audit import FAILURE_PACKET_COLUMNS, FailureKind
from auditor.model.packet import ACK, CLOSING, EventKind

# kinds that can mean a failed connection
RESET_KINDS: tuple[str, ...] = (EventKind.TCP_RST, EventKind.RST_SENT)
REFUSED_KINDS: tuple[str, ...] = (EventKind.REFUSED,)
ICMP_KINDS: tuple[str, ...] = (EventKind.ICMP_UNREACHABLE,)
# a live rst_sent with no socket (the tracepoint's state 0) answered a segment nobody listens for;
# a client's live ``refused`` within this window of one, for the same client address and port, is
# the other end of the same refused connection
PAIR_WINDOW_NS = 1_000_000_000

FAILURE_COLUMNS = list(FAILURE_PACKET_COLUMNS)  # find_failures fills these; the engine the rest


def _frame(p: pd.DataFrame, failure: Any, server: str, client: str) -> pd.DataFrame:
    """Failure rows from packet rows; ``server``/``client`` name the packet side ("src"/"dst").

    Text columns stay categorical: a node sees few distinct addresses, and converting a million rows
    to strings (arrow-backed in pandas 3) would dominate the correlation's time."""
    sport, cport = ("sport", "dport") if server == "src" else ("dport", "sport")
    return pd.DataFrame(
        {
            "time": pd.DatetimeIndex(p["time"]).tz_convert("UTC"),
            "node": as_category(p["node"]),
            "failure": failure,
            "server_ip": as_category(p[server]),
            "server_port": p[sport].to_numpy(dtype="int64"),
            "client_ip": as_category(p[client]),
            "client_port": p[cport].to_numpy(dtype="int64"),
            "kind": as_category(p["kind"]),
            "tcp_flags": p["tcp_flags"].to_numpy(dtype="int64"),
            "seq": p["seq"].to_numpy(dtype="int64"),
            "ack": p["ack"].to_numpy(dtype="int64"),
            "source": as_category(p["source"]),
            "file": as_category(p["file"]),
            "frame": p["frame"].to_numpy(dtype="int64"),
        }
    )


def _failure(name: str, n: int) -> Any:
    return pd.Categorical.from_codes(np.zeros(n, dtype="int8"), pd.Index([str(name)]))


def find_failures(packets: pd.DataFrame) -> pd.DataFrame:
    """Return one row per failed connection event seen in ``packets`` (packet schema).

    * ``refused``: an RST/ACK with sequence number 0 whose ACK number acknowledges a SYN of the reverse
      flow (the server side had no listener), a live ``rst_sent`` without a socket (the kernel answered a segment no socket
      wanted: a SYN to a closed port), or a live ``refused`` event (the client's socket) that no such
      ``rst_sent`` already stands for (one refusal per connection, named by the server that refused);
    * ``reset``: any other RST, with its sender as the server side (in-flight connections);
    * ``unreachable``: an ICMP destination unreachable quoting a TCP datagram.
    """
    if packets.empty:
        return pd.DataFrame(columns=FAILURE_COLUMNS)
    kind = KindView(packets["kind"])
    is_rst = kind.isin(RESET_KINDS)
    out = []
    if is_rst.any():
        rst = packets.loc[is_rst]
        answered = _answers_a_syn(packets, kind, is_rst) | _no_socket_reset(packets, kind, is_rst)
        out.append(
            _frame(
                rst,
                pd.Categorical.from_codes(
                    answered.astype("int8"), pd.Index([FailureKind.RESET.value, FailureKind.REFUSED.value])
                ),
                "src",
                "dst",
            )
        )
    icmp_rows = kind.isin(ICMP_KINDS)
    if icmp_rows.any():  # not the unreachables quoting a closing segment (FIN, RST): no connection failed
        quoted = packets["tcp_flags"].to_numpy(dtype="int64")
        icmp_rows &= (quoted & CLOSING) == 0  # model.packet.unreachable_fails_a_connection, vectorized
    icmp = packets.loc[icmp_rows]
    if not icmp.empty:
        # the quoted datagram's tuple: src = the client, dst = the unreachable server
        out.append(_frame(icmp, _failure(FailureKind.UNREACHABLE, len(icmp)), "dst", "src"))
    live = packets.loc[kind.isin(REFUSED_KINDS) & ~_paired_refusals(packets, kind)]
    if not live.empty:
        # the client's socket went SYN_SENT -> CLOSE: src is the client, dst the (pre-DNAT) server
        out.append(_frame(live, _failure(FailureKind.REFUSED, len(live)), "dst", "src"))
    if not out:
        return pd.DataFrame(columns=FAILURE_COLUMNS)
    res = concat_frames(out)
    return res.sort_values("time", kind="stable").reset_index(drop=True)[FAILURE_COLUMNS]


TCP_SYN_SENT = 2  # include/net/tcp_states.h


def _no_socket_reset(packets: pd.DataFrame, kind: KindView, is_rst: np.ndarray) -> np.ndarray:
    """For each RST row: a live ``rst_sent`` the kernel sent without a socket (``state_raw`` 0) that
    answered a connection attempt. The kernel also answers a late ACK (a handshake completed just as the
    listener closed) without a socket. The probe reads the answered packet, so ``tcp_flags`` is the RST's
    own: RST/ACK answered a SYN (refused), RST alone an ACK (not a refusal). Where it is unknown (0), and
    the client's own socket is on this node, its ``rst_received`` says which (SYN_SENT: refused; any
    other state: the connection was established)."""
    if "state_raw" not in packets:
        return np.zeros(int(is_rst.sum()), dtype=bool)
    state = packets["state_raw"].to_numpy()
    cand = kind.eq(EventKind.RST_SENT) & (state == 0)
    # the probe read the answered packet: RST/ACK answered a SYN (refused), RST alone an ACK
    flags = packets["tcp_flags"].to_numpy() if "tcp_flags" in packets else np.zeros(len(packets), dtype=int)
    known = cand & (flags != 0)
    cand = cand & ~(known & ((flags & ACK) == 0))
    unknown = cand & ~known
    established = kind.eq(EventKind.RST_RECEIVED) & (state != 0) & (state != TCP_SYN_SENT)
    if unknown.any() and established.any():
        times = packets["time"].to_numpy(dtype="datetime64[ns]").astype("int64")
        dst, dport = as_str_array(packets["dst"]), packets["dport"].to_numpy()
        a = pd.DataFrame(
            {"ip": dst[unknown], "port": dport[unknown], "t": times[unknown], "row": np.flatnonzero(unknown)}
        )
        b = pd.DataFrame({"ip": dst[established], "port": dport[established], "t_rcv": times[established]})
        m = a.merge(b, on=["ip", "port"], how="inner")
        late_ack = m.loc[(m["t"] - m["t_rcv"]).abs() <= PAIR_WINDOW_NS, "row"].to_numpy(dtype="int64")
        cand = cand.copy()
        cand[late_ack] = False
    return np.asarray(cand[is_rst], dtype=bool)


def _paired_refusals(packets: pd.DataFrame, kind: KindView) -> np.ndarray:
    """Rows that are a live ``refused`` with a socketless ``rst_sent`` to the same client address and
    port within :data:`PAIR_WINDOW_NS` (the server side of the same refusal names the pod)."""
    out = np.zeros(len(packets), dtype=bool)
    ref = kind.eq(EventKind.REFUSED)
    if not ref.any() or "state_raw" not in packets:
        return out
    rst = kind.eq(EventKind.RST_SENT) & (packets["state_raw"].to_numpy() == 0)
    if not rst.any():
        return out
    times = packets["time"].to_numpy(dtype="datetime64[ns]").astype("int64")
    a = pd.DataFrame({"ip": as_str_array(packets["src"])[ref], "port": packets["sport"].to_numpy()[ref],
                      "t": times[ref], "row": np.flatnonzero(ref)})  # fmt: skip
    b = pd.DataFrame({"ip": as_str_array(packets["dst"])[rst], "port": packets["dport"].to_numpy()[rst],
                      "t_rst": times[rst]})  # fmt: skip
    b["rst_row"] = np.arange(len(b))
    m = a.merge(b, on=["ip", "port"], how="inner")
    m["dt"] = (m["t"] - m["t_rst"]).abs()
    m = m.loc[m["dt"] <= PAIR_WINDOW_NS]
    out[one_to_one(m["row"].to_numpy(dtype="int64"), m["rst_row"].to_numpy(dtype="int64"),
                   m["dt"].to_numpy(dtype="int64"))[0]] = True  # fmt: skip
    return out


def one_to_one(left: np.ndarray, right: np.ndarray, distance: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pair candidate (left, right) rows one to one, nearest first (greedy by ``distance``): a port reused
    within the pairing window has two attempts, each with its own events. Returns the paired (left, right)."""
    if not len(left):
        return left, right
    lc = pd.Series(left).map(pd.Series(left).value_counts()).to_numpy()
    rc = pd.Series(right).map(pd.Series(right).value_counts()).to_numpy()
    alone = (lc == 1) & (rc == 1)  # the common case: one candidate each way
    pairs_l, pairs_r = [left[alone]], [right[alone]]
    rest = np.flatnonzero(~alone)
    if len(rest):
        used_l: set[int] = set()
        used_r: set[int] = set()
        got_l, got_r = [], []
        for i in rest[np.argsort(distance[rest], kind="stable")].tolist():
            a, b = int(left[i]), int(right[i])
            if a not in used_l and b not in used_r:
                used_l.add(a)
                used_r.add(b)
                got_l.append(a)
                got_r.append(b)
        pairs_l.append(np.asarray(got_l, dtype="int64"))
        pairs_r.append(np.asarray(got_r, dtype="int64"))
    return np.concatenate(pairs_l), np.concatenate(pairs_r)


def _answers_a_syn(packets: pd.DataFrame, kind: KindView, is_rst: np.ndarray) -> np.ndarray:
    """For each RST row: is it an RST/ACK with sequence number 0 acknowledging a SYN of the reverse flow
    (seq + 1)?

    Keyed by the client's address and port and the acknowledged sequence number: an initial sequence
    number is random, so (client, ISN + 1) names one connection attempt. The sequence number tells a
    refusal from a reset of an accepted connection with the same ACK number: a SYN nobody listens for is
    answered ``<SEQ=0><ACK=ISN+1><CTL=RST,ACK>`` (RFC 9293 3.10.7.1; Linux, and iptables' REJECT
    --reject-with tcp-reset, alike), while a connection whose handshake completed before the listener
    closed, still in the accept queue with none of the client's data received, is reset with
    ``SEQ=server ISN+1, ACK=ISN+1``: its client saw "connection reset by peer", not "refused".
    """
    r = is_rst
    flags = packets["tcp_flags"].to_numpy()
    # a RST answers a SYN only with the ACK bit set (RFC 9293: RST/ACK to a SYN on a closed port)
    has_ack = (flags[r] & ACK) != 0
    s = kind.eq(EventKind.TCP_SYN)
    ack = packets["ack"].to_numpy()
    # prefilter (exact match follows): only SYNs whose ISN + 1 has the low bits of some RST's ACK number
    isn1 = (packets["seq"].to_numpy().astype("int64") + 1) & 0xFFFFFFFF
    low = np.zeros(1 << 20, dtype=bool)
    low[ack[r].astype("int64") & 0xFFFFF] = True
    s = s & low[isn1 & 0xFFFFF]
    addr = distinct(packets["src"], packets["dst"])
    syn_keys = row_hash(
        codes_in(packets["src"], addr)[s],  # codes of the whole column, then the rows: no Series mask
        packets["sport"].to_numpy()[s],
        isn1[s],
    )
    rst_keys = row_hash(
        codes_in(packets["dst"], addr)[r], packets["dport"].to_numpy()[r], ack[r]
    )
    # hash the few RST keys and probe them with the many SYN keys (pandas' hash tables: numpy's
    # sort-based isin is ~10x slower on 64-bit keys), then look the answered keys up again
    seq_zero = packets["seq"].to_numpy()[r] == 0
    rst_index = pd.Index(rst_keys).unique()
    probed = np.asarray(rst_index.get_indexer(syn_keys), dtype="int64")
    answered = np.bincount(probed[probed >= 0], minlength=len(rst_index)) > 0  # per distinct RST key
    hit = answered[np.asarray(rst_index.get_indexer(rst_keys), dtype="int64")]
    return np.asarray(hit & has_ack & seq_zero, dtype=bool)


def drop_nat_copies(failures: pd.DataFrame, is_pod_ip: pd.Series) -> pd.DataFrame:
    """Keep one copy of each failure a capture saw on several interfaces.

    With ``tcpdump -i any`` on a node, a pod's RST is seen leaving the pod (source: pod IP) and
    again after kube-proxy's un-DNAT (source: the ClusterIP). The copies share the client's address
    and port and the sequence numbers; the copy naming the pod is kept.
    """
    if failures.empty:
        return failures
    # only packet copies can be duplicates; live events are unique by construction
    pcap = KindView(failures["source"]).eq("pcap")
    if not pcap.any():
        return failures
    key = row_hash(*(
        np.asarray(as_category(failures[c]).codes, dtype="int64") if c in ("node", "failure", "client_ip", "source")
        else failures[c].to_numpy(dtype="int64")
        for c in ("node", "failure", "client_ip", "client_port", "seq", "ack", "tcp_flags", "source")
    ))  # fmt: skip
    # the copy naming the pod first, then by time: the first of each key is kept
    order = np.lexsort((failures["time"].to_numpy(dtype="datetime64[ns]").astype("int64"), ~is_pod_ip.to_numpy(dtype=bool)))
    dup = np.zeros(len(failures), dtype=bool)
    dup[order] = pd.Series(key[order]).duplicated(keep="first").to_numpy()
    dup &= pcap
    return failures.loc[~dup].reset_index(drop=True)
