"""Failed connections from packet events: refused (SYN answered by RST), resets, ICMP unreachables.

Pure packet logic, no Kubernetes: which RST answers which SYN, and which copies of one packet a
multi-interface capture (``tcpdump -i any``) saw twice, once before and once after kube-proxy's DNAT.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

# kinds that can mean a failed connection
RESET_KINDS = ("tcp_rst", "rst_sent")
REFUSED_KINDS = ("refused",)
ICMP_KINDS = ("icmp_unreachable",)

FAILURE_COLUMNS = [
    "time",
    "node",
    "failure",  # refused | reset | unreachable
    "server_ip",  # the side that refused/reset (a pod IP, or a service IP seen before un-DNAT)
    "server_port",
    "client_ip",
    "client_port",
    "kind",
    "tcp_flags",
    "seq",
    "ack",
    "source",
    "file",
    "frame",
]


def _str(s: pd.Series) -> pd.Series:
    return s.astype(str)


def find_failures(packets: pd.DataFrame) -> pd.DataFrame:
    """Return one row per failed connection event seen in ``packets`` (packet schema).

    * ``refused``: an RST whose ACK number acknowledges a SYN of the reverse flow (the server side
      had no listener), or a live ``refused`` event;
    * ``reset``: any other RST sent by the server side of a flow (in-flight connections);
    * ``unreachable``: an ICMP destination unreachable quoting a TCP datagram.
    """
    if packets.empty:
        return pd.DataFrame(columns=FAILURE_COLUMNS)
    kind = _str(packets["kind"])
    syn = packets.loc[kind == "tcp_syn", ["node", "src", "sport", "dst", "dport", "seq"]]
    rst = packets.loc[kind.isin(RESET_KINDS)]
    out = []
    if not rst.empty:
        out.append(_classify_resets(rst, syn))
    icmp = packets.loc[kind.isin(ICMP_KINDS)]
    if not icmp.empty:
        out.append(
            pd.DataFrame(
                {
                    "time": icmp["time"],
                    "node": _str(icmp["node"]),
                    "failure": "unreachable",
                    "server_ip": _str(icmp["dst"]),
                    "server_port": icmp["dport"].astype("int64"),
                    "client_ip": _str(icmp["src"]),
                    "client_port": icmp["sport"].astype("int64"),
                    "kind": _str(icmp["kind"]),
                    "tcp_flags": 0,
                    "seq": 0,
                    "ack": 0,
                    "source": _str(icmp["source"]),
                    "file": _str(icmp["file"]),
                    "frame": icmp["frame"].astype("int64"),
                }
            )
        )
    live = packets.loc[kind.isin(REFUSED_KINDS)]
    if not live.empty:
        # the client's socket went SYN_SENT -> CLOSE: src is the client, dst the (pre-DNAT) server
        out.append(
            pd.DataFrame(
                {
                    "time": live["time"],
                    "node": _str(live["node"]),
                    "failure": "refused",
                    "server_ip": _str(live["dst"]),
                    "server_port": live["dport"].astype("int64"),
                    "client_ip": _str(live["src"]),
                    "client_port": live["sport"].astype("int64"),
                    "kind": _str(live["kind"]),
                    "tcp_flags": 0,
                    "seq": 0,
                    "ack": 0,
                    "source": _str(live["source"]),
                    "file": _str(live["file"]),
                    "frame": live["frame"].astype("int64"),
                }
            )
        )
    if not out:
        return pd.DataFrame(columns=FAILURE_COLUMNS)
    res = pd.concat(out, ignore_index=True)
    return res.sort_values("time", kind="stable").reset_index(drop=True)[FAILURE_COLUMNS]


def _classify_resets(rst: pd.DataFrame, syn: pd.DataFrame) -> pd.DataFrame:
    r = pd.DataFrame(
        {
            "time": rst["time"].to_numpy(),
            "node": _str(rst["node"]).to_numpy(),
            "server_ip": _str(rst["src"]).to_numpy(),
            "server_port": rst["sport"].astype("int64").to_numpy(),
            "client_ip": _str(rst["dst"]).to_numpy(),
            "client_port": rst["dport"].astype("int64").to_numpy(),
            "kind": _str(rst["kind"]).to_numpy(),
            "tcp_flags": rst["tcp_flags"].astype("int64").to_numpy(),
            "seq": rst["seq"].astype("int64").to_numpy(),
            "ack": rst["ack"].astype("int64").to_numpy(),
            "source": _str(rst["source"]).to_numpy(),
            "file": _str(rst["file"]).to_numpy(),
            "frame": rst["frame"].astype("int64").to_numpy(),
        }
    )
    answered = np.zeros(len(r), dtype=bool)
    if not syn.empty:
        s = pd.DataFrame(
            {
                "node": _str(syn["node"]).to_numpy(),
                "client_ip": _str(syn["src"]).to_numpy(),
                "client_port": syn["sport"].astype("int64").to_numpy(),
                "server_ip": _str(syn["dst"]).to_numpy(),
                "server_port": syn["dport"].astype("int64").to_numpy(),
                "ack": (syn["seq"].astype("int64").to_numpy() + 1) % (1 << 32),
            }
        ).drop_duplicates()
        s["_answered"] = True
        keys = ["node", "client_ip", "client_port", "server_ip", "server_port", "ack"]
        m = r[keys].merge(s, on=keys, how="left")
        answered = m["_answered"].fillna(False).to_numpy(dtype=bool).copy()
    # a RST answers a SYN only with the ACK bit set (RFC 793: RST/ACK to a SYN on a closed port)
    answered &= (r["tcp_flags"].to_numpy() & 0x10) != 0
    r.insert(2, "failure", np.where(answered, "refused", "reset"))
    return r


def drop_nat_copies(failures: pd.DataFrame, is_pod_ip: pd.Series) -> pd.DataFrame:
    """Keep one copy of each failure a capture saw on several interfaces.

    With ``tcpdump -i any`` on a node, a pod's RST is seen leaving the pod (source: pod IP) and
    again after kube-proxy's un-DNAT (source: the ClusterIP). The copies share the client's address
    and port and the sequence numbers; the copy naming the pod is kept.
    """
    if failures.empty:
        return failures
    f = failures.assign(_pod=is_pod_ip.to_numpy(dtype=bool))
    f = f.sort_values(["_pod", "time"], ascending=[False, True], kind="stable")
    key = ["node", "failure", "client_ip", "client_port", "seq", "ack", "tcp_flags", "source"]
    # only packet copies can be duplicates; live events are unique by construction
    dup = f.duplicated(subset=key, keep="first") & (f["source"] == "pcap")
    return f.loc[~dup].drop(columns="_pod").sort_values("time", kind="stable").reset_index(drop=True)
