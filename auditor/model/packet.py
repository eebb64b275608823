"""Packet-level events: one row per TCP SYN / SYN-ACK / RST / FIN or ICMP unreachable seen on a node.

The same record is produced by the capture reader (``source="pcap"``) and by the live eBPF
probes (``source="ebpf"``), so everything downstream (enrich, correlate, report) reads one table.

Column conventions
------------------
* ``time`` is UTC with nanosecond resolution (pandas ``datetime64[ns, UTC]``).
* Addresses are text (``"10.244.1.7"``, ``"fd00::7"``); in pandas they are categoricals, because a
  node sees few distinct pod IPs and millions of packets.
* For ``icmp_unreachable`` the 4-tuple is the *quoted* datagram's (the connection that failed, in
  its original direction) and ``reporter`` is the address that sent the ICMP error.
* Raw kernel values keep a ``_raw`` suffix (``reason_raw``, ``state_raw``) until a formatter names them;
  they are 0 for captures.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from enum import StrEnum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa


class EventKind(StrEnum):
    # seen on the wire (captures) -- also emitted by the live agent where it sees the packet
    TCP_SYN = "tcp_syn"  # SYN without ACK: a connection attempt
    TCP_SYNACK = "tcp_synack"
    TCP_RST = "tcp_rst"
    TCP_FIN = "tcp_fin"
    ICMP_UNREACHABLE = "icmp_unreachable"
    # seen in the kernel (live probes)
    RST_SENT = "rst_sent"  # tcp:tcp_send_reset
    RST_RECEIVED = "rst_received"  # tcp:tcp_receive_reset
    REFUSED = "refused"  # sock:inet_sock_set_state SYN_SENT -> CLOSE
    LISTEN_CLOSE = "listen_close"  # sock:inet_sock_set_state LISTEN -> CLOSE
    DROP = "drop"  # skb:kfree_skb with a drop reason


# TCP flag bits, as on the wire.
FIN, SYN, RST, PSH, ACK, URG, ECE, CWR = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80


def unreachable_fails_a_connection(quoted_flags: int) -> bool:
    """Does an ICMP unreachable quoting a TCP segment with these flags stand for a failed connection?

    Not when the quoted segment closes (FIN) or aborts (RST) one: the peer was done with it (a kept-alive
    client closing after the pod's sandbox went away). 0: the flags were not quoted (RFC 792 quotes 8
    bytes of the segment), counted."""
    return not quoted_flags & CLOSING


CLOSING = FIN | RST  # the flags of a segment that ends a connection (see unreachable_fails_a_connection)


@dataclass(frozen=True, slots=True)
class PacketEvent:
    """One event. Field order is the column order of the table."""

    time_ns: int  # UTC nanoseconds since the epoch
    kind: str  # an EventKind value
    family: int  # 4 or 6
    src: str
    sport: int
    dst: str
    dport: int
    tcp_flags: int = 0
    seq: int = 0
    ack: int = 0
    payload_len: int = 0
    icmp_type: int = 0
    icmp_code: int = 0
    reporter: str = ""  # ICMP: who sent the error
    encap: str = ""  # outermost-first tunnel/tag chain, e.g. "vlan+vxlan"
    reason_raw: int = 0  # live: sk_rst_reason / skb drop reason
    state_raw: int = 0  # live: TCP state before the transition
    netns: int = 0  # live: network namespace inode of the socket
    source: str = "pcap"  # "pcap" | "ebpf"
    file: str = ""
    interface: str = ""
    node: str = ""
    frame: int = 0  # 1-based record number in the capture file; 0 for live events


PACKET_COLUMNS: tuple[str, ...] = tuple(
    "time" if f.name == "time_ns" else f.name for f in fields(PacketEvent)
)

_INT_COLUMNS: dict[str, Any] = {
    "family": "uint8",
    "sport": "uint16",
    "dport": "uint16",
    "tcp_flags": "uint16",
    "seq": "uint32",
    "ack": "uint32",
    "payload_len": "uint32",
    "icmp_type": "uint8",
    "icmp_code": "uint8",
    "reason_raw": "uint32",
    "state_raw": "uint8",
    "netns": "uint64",
    "frame": "uint64",
}
# The text columns (categoricals in pandas, dictionary-encoded in Arrow): every ``str`` field of the record.
TEXT_COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(PacketEvent) if f.type in ("str", str))


def packet_arrow_schema() -> pa.Schema:
    """The Arrow schema of the packet event table (Parquet files use it as is)."""
    import pyarrow as pa

    cols: list[tuple[str, Any]] = []
    for name in PACKET_COLUMNS:
        if name == "time":
            cols.append((name, pa.timestamp("ns", tz="UTC")))
        elif name in _INT_COLUMNS:
            cols.append((name, getattr(pa, _INT_COLUMNS[name])()))
        else:
            cols.append((name, pa.dictionary(pa.int32(), pa.string())))
    return pa.schema(cols)


def packet_frame(events: list[PacketEvent] | None = None) -> pd.DataFrame:
    """Build the pandas table from records (empty table with the right dtypes if none)."""
    import pandas as pd

    rows = events or []
    data: dict[str, Any] = {}
    for f in fields(PacketEvent):
        values = [getattr(e, f.name) for e in rows]
        if f.name == "time_ns":
            data["time"] = pd.to_datetime(pd.Series(values, dtype="int64"), unit="ns", utc=True)
        elif f.name in _INT_COLUMNS:
            data[f.name] = pd.Series(values, dtype=_INT_COLUMNS[f.name])
        else:
            data[f.name] = pd.Series(values, dtype="object").astype("category")
    return pd.DataFrame(data, columns=list(PACKET_COLUMNS))


def normalize_packet_frame(df: pd.DataFrame) -> pd.DataFrame:
    """Coerce a table read back from Parquet/JSONL/CSV to the canonical dtypes."""
    import pandas as pd

    out = df.copy()
    for name in PACKET_COLUMNS:
        if name not in out.columns:
            if name == "time":
                raise ValueError("event table has no 'time' column")
            out[name] = 0 if name in _INT_COLUMNS else ""
    out["time"] = pd.to_datetime(out["time"], utc=True)
    for name, dtype in _INT_COLUMNS.items():
        out[name] = pd.to_numeric(out[name], errors="coerce").fillna(0).astype(dtype)
    for name in TEXT_COLUMNS:
        out[name] = out[name].fillna("").astype(str).astype("category")
    return out[list(PACKET_COLUMNS)]
