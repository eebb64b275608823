"""Decode many probe records at once into the packet event table (numpy, no per-record objects).

The per-record decoders build one frozen :class:`PacketEvent` each, which CPython does at about
10^5/s; this path reads the same C structs as numpy structured arrays and gives the same rows
(tested against the per-record decoders), for the live agent at full rate.
"""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING, Any

import numpy as np

from auditor.model.packet import PACKET_COLUMNS, EventKind, normalize_packet_frame
from auditor.sources.live.decode_tcp_reset import TCP_ACK, TCP_RST
from auditor.sources.live.events import AF_INET, AF_INET6, KIND_CODES

if TYPE_CHECKING:
    import pandas as pd

_HEAD: list[tuple[Any, ...]] = [
    ("ts", "<u8"), ("kind", "<u4"), ("netns", "<u4"), ("pid", "<u4"), ("family", "<u2"), ("pad", "<u2"),
    ("saddr", "<u4", (4,)), ("daddr", "<u4", (4,)), ("sport", "<u2"), ("dport", "<u2"),
]  # fmt: skip
# kind code -> (dtype of the whole C struct incl. padding); the tail fields per family
_TWO_U32 = np.dtype([*_HEAD, ("a", "<u4"), ("b", "<u4"), ("end", "V4")])  # 72 bytes
_RESET = np.dtype([*_HEAD, ("a", "<u4"), ("b", "<u4"), ("c", "<u4")])  # 72 bytes
_ICMP = np.dtype([*_HEAD, ("a", "<u4"), ("b", "<u4"), ("proto", "u1"), ("flags", "u1"), ("end", "V6")])
_DROP = np.dtype(
    [*_HEAD, ("a", "<u4"), ("eth", "<u2"), ("proto", "u1"), ("flags", "u1"), ("pad2", "V4"), ("loc", "<u8")]
)
_DTYPES = {1: _RESET, 2: _RESET, 3: _TWO_U32, 4: _TWO_U32, 5: _ICMP, 6: _DROP}


def _texts(family: int, uniq: list[bytes]) -> list[str]:
    if family == AF_INET:
        return [socket.inet_ntop(socket.AF_INET, b[:4]) for b in uniq]
    if family == AF_INET6:
        return [socket.inet_ntop(socket.AF_INET6, b) for b in uniq]
    return ["" for _ in uniq]


def _addresses(family: np.ndarray, words: np.ndarray) -> np.ndarray:
    """Text of each 16-byte address slot (4 little-endian u32 per row), each distinct one converted once."""
    import pandas as pd

    out = np.empty(len(words), dtype=object)
    for fam in np.unique(family):
        rows = np.flatnonzero(family == fam)
        if fam == AF_INET:  # the common case: hash one u32 per row
            codes, uniq = pd.factorize(words[rows, 0])
            uniq_bytes = [int(u).to_bytes(4, "little") for u in uniq]
        else:
            uniq_arr, codes = np.unique(words[rows], axis=0, return_inverse=True)
            uniq_bytes = [u.tobytes() for u in uniq_arr]
        out[rows] = np.asarray(_texts(int(fam), uniq_bytes), dtype=object)[codes.reshape(-1)]
    return out


def decode_records(records: list[bytes], offset_ns: int, node: str = "") -> tuple[pd.DataFrame, int]:
    """(packet event table, number of records skipped as malformed) for raw probe records."""
    import pandas as pd

    codes = [raw[8] if len(raw) > 8 else 0 for raw in records]  # ev_hdr.kind (u32 LE, < 256)
    by_code: dict[int, list[bytes]] = {}
    bad = 0
    for code in set(codes):
        dtype = _DTYPES.get(code)
        chunk = [r for r, c in zip(records, codes, strict=True) if c == code]
        if dtype is None:
            bad += len(chunk)
            continue
        size = dtype.itemsize
        if any(len(r) != size for r in chunk):
            short = sum(1 for r in chunk if len(r) < size)
            bad += short
            chunk = [r[:size] for r in chunk if len(r) >= size]
        if chunk:
            by_code[code] = chunk
    frames = []
    for code, chunk in sorted(by_code.items()):
        arr = np.frombuffer(b"".join(chunk), dtype=_DTYPES[code])
        kind = KIND_CODES[code]
        src, dst = _addresses(arr["family"], arr["saddr"]), _addresses(arr["family"], arr["daddr"])
        sport, dport = arr["sport"], arr["dport"]
        if kind == EventKind.RST_RECEIVED:  # wire direction: the peer sent the RST
            src, dst, sport, dport = dst, src, dport, sport
        n = len(arr)
        cols: dict[str, object] = {
            "time": pd.to_datetime(arr["ts"].astype("int64") + offset_ns, unit="ns", utc=True),
            "kind": [kind.value] * n,
            "family": np.where(arr["family"] == AF_INET6, 6, 4),
            "src": src,
            "sport": sport,
            "dst": dst,
            "dport": dport,
            "netns": arr["netns"],
            "source": ["ebpf"] * n,
            "node": [node] * n,
        }
        if code in (1, 2):
            cols["state_raw"], cols["reason_raw"] = arr["a"] & 0xFF, arr["b"]
            if code == 1:  # the RST's flags on the wire, from the answered packet's (decode_tcp_reset)
                trigger = arr["c"] & 0xFF
                cols["tcp_flags"] = np.where(
                    trigger == 0, 0, np.where(trigger & TCP_ACK, TCP_RST, TCP_RST | TCP_ACK)
                ).astype("uint16")
        elif code in (3, 4):
            cols["state_raw"] = arr["a"] & 0xFF
        elif code == 5:
            cols["icmp_type"], cols["icmp_code"] = arr["a"] & 0xFF, arr["b"] & 0xFF
            cols["tcp_flags"] = arr["flags"]
        else:
            cols["reason_raw"], cols["tcp_flags"] = arr["a"], arr["flags"]
        frames.append(pd.DataFrame(cols))
    if not frames:
        from auditor.model.packet import packet_frame

        return packet_frame([]), bad
    df = pd.concat(frames, ignore_index=True).sort_values("time", kind="stable", ignore_index=True)
    return normalize_packet_frame(df)[list(PACKET_COLUMNS)], bad
