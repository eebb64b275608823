"""Packed event records -> Arrow record batches with the packet schema (no pandas).

Addresses, encapsulation chains and interface names are dictionary columns; their dictionaries
grow per file (a node sees few distinct addresses), so converting costs one ``np.unique`` per batch.
"""

from __future__ import annotations

import ipaddress

import numpy as np
import pyarrow as pa

from auditor.model.packet import PACKET_COLUMNS, packet_arrow_schema
from auditor.sources.capture import layout as L

_TIME = pa.timestamp("ns", tz="UTC")
_ARROW_TYPES = {
    np.dtype(t): f()
    for t, f in (
        ("u1", pa.uint8),
        ("<u2", pa.uint16),
        ("<u4", pa.uint32),
        ("<u8", pa.uint64),
        ("<i4", pa.int32),
        ("<i8", pa.int64),
    )
}


# pa.array() on numpy or lists imports pandas (~0.3 s); building from buffers does not.
def numeric_array(values: np.ndarray, type: pa.DataType | None = None) -> pa.Array:
    """A primitive Arrow array sharing a numpy array's memory (copied if strided)."""
    values = np.ascontiguousarray(values)
    return pa.Array.from_buffers(
        type or _ARROW_TYPES[values.dtype], len(values), [None, pa.py_buffer(values)]
    )


def string_array(values: list[str]) -> pa.Array:
    """A string array from a (short) list."""
    encoded = [v.encode("utf-8") for v in values]
    offsets = np.zeros(len(encoded) + 1, dtype=np.int32)
    np.cumsum([len(b) for b in encoded], out=offsets[1:])
    data = pa.py_buffer(b"".join(encoded))
    return pa.Array.from_buffers(pa.string(), len(encoded), [None, pa.py_buffer(offsets), data])


def dictionary_array(codes: np.ndarray, values: list[str] | pa.Array) -> pa.DictionaryArray:
    dictionary = values if isinstance(values, pa.Array) else string_array(values)
    return pa.DictionaryArray.from_arrays(numeric_array(codes.astype(np.int32, copy=False)), dictionary)


def factorize(*keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(index of one row per distinct key tuple, inverse codes) for equal-length integer arrays."""
    n = len(keys[0])
    if n == 0:
        return np.zeros(0, dtype=np.intp), np.zeros(0, dtype=np.intp)
    order = np.lexsort(keys[::-1])
    new = np.zeros(n, dtype=bool)
    new[0] = True
    for k in keys:
        ks = k[order]
        new[1:] |= ks[1:] != ks[:-1]
    group = np.cumsum(new) - 1
    inverse = np.empty(n, dtype=np.intp)
    inverse[order] = group
    return order[new], inverse


class _Dictionary:
    """A growing value -> index map for one dictionary column."""

    def __init__(self) -> None:
        self.values: list[str] = []
        self.index: dict[object, int] = {}

    def code(self, key: object, text: str) -> int:
        i = self.index.get(key)
        if i is None:
            i = self.index[key] = len(self.values)
            self.values.append(text)
        return i

    def array(self, indices: np.ndarray) -> pa.DictionaryArray:
        return dictionary_array(indices, self.values)


def _address_text(family: int, raw: bytes) -> str:
    if family == 4:
        return str(ipaddress.IPv4Address(raw[:4]))
    if family == 6:
        return str(ipaddress.IPv6Address(raw[:16]))
    return ""


class BatchBuilder:
    """Turns chunks of packed events of one file into record batches."""

    def __init__(self, file: str, node: str) -> None:
        self.schema = packet_arrow_schema()
        self.file, self.node = file, node
        self.addresses = _Dictionary()
        self.encaps = _Dictionary()
        self.kinds = string_array(list(L.KIND_NAMES))

    def _addresses(self, family: np.ndarray, raw: np.ndarray) -> pa.DictionaryArray:
        words = np.ascontiguousarray(raw).view("<u8").reshape(-1, 2)
        first, inverse = factorize(family, words[:, 0], words[:, 1])
        codes = np.array(
            [
                self.addresses.code(
                    (int(family[i]), bytes(raw[i])), _address_text(int(family[i]), bytes(raw[i]))
                )
                for i in first
            ],
            dtype=np.int32,
        )
        return self.addresses.array(codes[inverse])

    def _constant(self, value: str, n: int) -> pa.DictionaryArray:
        return dictionary_array(np.zeros(n, dtype=np.int32), [value])

    def build(self, ev: np.ndarray, interfaces: list[str]) -> pa.RecordBatch:
        """One record batch from packed events; ``ev['iface']`` indexes ``interfaces``."""
        n = len(ev)
        encap = ev["encap"]
        enc_first, enc_inv = factorize(encap)
        enc_codes = np.array(
            [self.encaps.code(int(encap[i]), L.encap_name(int(encap[i]))) for i in enc_first], dtype=np.int32
        )
        num = numeric_array
        cols: dict[str, pa.Array] = {
            "time": num(ev["time_ns"], _TIME),
            "kind": dictionary_array(ev["kind"].astype(np.int32) - 1, self.kinds),
            "family": num(ev["family"]),
            "src": self._addresses(ev["family"], ev["src"]),
            "sport": num(ev["sport"]),
            "dst": self._addresses(ev["family"], ev["dst"]),
            "dport": num(ev["dport"]),
            "tcp_flags": num(ev["tcp_flags"]),
            "seq": num(ev["seq"]),
            "ack": num(ev["ack"]),
            "payload_len": num(ev["payload_len"]),
            "icmp_type": num(ev["icmp_type"]),
            "icmp_code": num(ev["icmp_code"]),
            "reporter": self._addresses(ev["rfamily"], ev["reporter"]),
            "encap": self.encaps.array(enc_codes[enc_inv]),
            "reason_raw": num(np.zeros(n, dtype=np.uint32)),
            "state_raw": num(np.zeros(n, dtype=np.uint8)),
            "netns": num(np.zeros(n, dtype=np.uint64)),
            "source": self._constant("pcap", n),
            "file": self._constant(self.file, n),
            "interface": dictionary_array(ev["iface"].astype(np.int32), interfaces),
            "node": self._constant(self.node, n),
            "frame": num(ev["frame"]),
        }
        return pa.RecordBatch.from_arrays([cols[c] for c in PACKET_COLUMNS], schema=self.schema)
