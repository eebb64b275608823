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
        return pa.DictionaryArray.from_arrays(
            pa.array(indices.astype(np.int32, copy=False)), pa.array(self.values, type=pa.string())
        )


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
        self.kinds = pa.array(list(L.KIND_NAMES), type=pa.string())

    def _addresses(self, family: np.ndarray, raw: np.ndarray) -> pa.DictionaryArray:
        keys = np.empty(len(raw), dtype=[("f", "u1"), ("a", "V16")])
        keys["f"], keys["a"] = family, raw
        uniq, inverse = np.unique(keys, return_inverse=True)
        codes = np.array(
            [self.addresses.code(bytes(k), _address_text(int(k["f"]), bytes(k["a"]))) for k in uniq],
            dtype=np.int32,
        )
        return self.addresses.array(codes[inverse.reshape(-1)])

    def _constant(self, value: str, n: int) -> pa.DictionaryArray:
        return pa.DictionaryArray.from_arrays(
            pa.array(np.zeros(n, dtype=np.int32)), pa.array([value], type=pa.string())
        )

    def build(self, ev: np.ndarray, interfaces: list[str]) -> pa.RecordBatch:
        """One record batch from packed events; ``ev['iface']`` indexes ``interfaces``."""
        n = len(ev)
        enc_uniq, enc_inv = np.unique(ev["encap"], return_inverse=True)
        enc_codes = np.array([self.encaps.code(int(u), L.encap_name(int(u))) for u in enc_uniq], dtype=np.int32)
        zeros32 = np.zeros(n, dtype=np.uint32)
        cols: dict[str, pa.Array] = {
            "time": pa.array(np.ascontiguousarray(ev["time_ns"]), type=pa.int64()).view(_TIME),
            "kind": pa.DictionaryArray.from_arrays(
                pa.array(ev["kind"].astype(np.int32) - 1), self.kinds
            ),
            "family": pa.array(np.ascontiguousarray(ev["family"])),
            "src": self._addresses(ev["family"], ev["src"]),
            "sport": pa.array(np.ascontiguousarray(ev["sport"])),
            "dst": self._addresses(ev["family"], ev["dst"]),
            "dport": pa.array(np.ascontiguousarray(ev["dport"])),
            "tcp_flags": pa.array(np.ascontiguousarray(ev["tcp_flags"])),
            "seq": pa.array(np.ascontiguousarray(ev["seq"])),
            "ack": pa.array(np.ascontiguousarray(ev["ack"])),
            "payload_len": pa.array(np.ascontiguousarray(ev["payload_len"])),
            "icmp_type": pa.array(np.ascontiguousarray(ev["icmp_type"])),
            "icmp_code": pa.array(np.ascontiguousarray(ev["icmp_code"])),
            "reporter": self._addresses(ev["rfamily"], ev["reporter"]),
            "encap": self.encaps.array(enc_codes[enc_inv.reshape(-1)]),
            "reason_raw": pa.array(zeros32),
            "state_raw": pa.array(np.zeros(n, dtype=np.uint8)),
            "netns": pa.array(np.zeros(n, dtype=np.uint64)),
            "source": self._constant("pcap", n),
            "file": self._constant(self.file, n),
            "interface": pa.DictionaryArray.from_arrays(
                pa.array(ev["iface"].astype(np.int32)), pa.array(interfaces, type=pa.string())
            ),
            "node": self._constant(self.node, n),
            "frame": pa.array(np.ascontiguousarray(ev["frame"])),
        }
        return pa.RecordBatch.from_arrays([cols[c] for c in PACKET_COLUMNS], schema=self.schema)
