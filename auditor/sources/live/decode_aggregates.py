"""Decode the in-kernel aggregates (``struct agg_key`` / ``struct agg_val`` in probes/aggregates.h).

The map is a per-CPU hash: a lookup gives, per key, one ``struct agg_val`` per possible CPU, which are
summed here. Keys and values come as the two flat buffers a batch lookup fills (``n`` keys back to
back, then ``n`` x ``ncpus`` values), so the decoder works on byte literals and needs neither bcc nor
root. A bucket is ``bpf_ktime_get_ns() // bucket_ns`` (CLOCK_MONOTONIC); its UTC start is
``bucket * bucket_ns + offset_ns`` with the probes' clock offset (:mod:`auditor.sources.live.clock`).
"""

from __future__ import annotations

import struct

from auditor.model.counts import CountRecord
from auditor.sources.live.events import KIND_CODES, DecodeError, address_text, ip_version

# u8 addr[16], u32 bucket, u32 reason, u16 port, u8 kind, family, state, flags, side, ip_proto (32)
AGG_KEY = struct.Struct("<16sIIHBBBBBB")
# u64 events, u64 detail_lost: one per possible CPU (8-byte aligned already)
AGG_VALUE = struct.Struct("<QQ")
AGG_SRC = 1  # probes/aggregates.h: addr:port is the packet's source (AGG_DST = 0: its destination)


def key_bucket(keys: bytes, i: int) -> int:
    """The bucket of the ``i``-th key in a buffer of keys."""
    return int(struct.unpack_from("<I", keys, i * AGG_KEY.size + 16)[0])


def decode_aggregates(
    keys: bytes, values: bytes, ncpus: int, offset_ns: int, bucket_ns: int, node: str = ""
) -> tuple[list[CountRecord], int]:
    """(records, keys skipped as malformed) of ``len(keys) // 32`` keys and their per-CPU values.

    Keys of an unknown kind or family are skipped and counted; so is a key whose events sum to 0 (a
    key created but never counted cannot happen, but a zero row would say nothing)."""
    if ncpus < 1:
        raise DecodeError(f"bad CPU count {ncpus}")
    n = len(keys) // AGG_KEY.size
    per_key = AGG_VALUE.size * ncpus
    if len(values) < n * per_key:
        raise DecodeError(f"{len(values)} value bytes for {n} keys of {ncpus} CPUs")
    out: list[CountRecord] = []
    bad = 0
    for i in range(n):
        addr, bucket, reason, port, code, family, state, flags, side, proto = AGG_KEY.unpack_from(
            keys, i * AGG_KEY.size
        )
        kind = KIND_CODES.get(code)
        text = address_text(family, addr)
        events = lost = 0
        base = i * per_key
        for cpu in range(ncpus):
            e, d = AGG_VALUE.unpack_from(values, base + cpu * AGG_VALUE.size)
            events += e
            lost += d
        if kind is None or not text or events == 0:
            bad += 1
            continue
        out.append(
            CountRecord(
                time_ns=bucket * bucket_ns + offset_ns,
                bucket_ns=bucket_ns,
                kind=kind.value,
                family=ip_version(family),
                addr=text,
                port=port,
                side="src" if side == AGG_SRC else "dst",
                reason_raw=reason,
                state_raw=state,
                flags_raw=flags,
                ip_proto=proto,
                events=events,
                detail_lost=lost,
                node=node,
                bucket_raw=bucket,
            )
        )
    return out, bad


__all__ = ["AGG_KEY", "AGG_SRC", "AGG_VALUE", "decode_aggregates", "key_bucket"]
