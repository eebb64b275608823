"""Decode ``struct ev_drop`` (probes/skb_drop.c): skb:kfree_skb with a drop reason.

The tuple and TCP flags come from the dropped packet's own IP/TCP headers (so ``src`` sent it).
``reason_raw`` is the ``enum skb_drop_reason`` value (names: formatters.drop_reason_name).
The kernel text address of the drop (``location``) is returned by :func:`drop_location`.
"""

from __future__ import annotations

import struct

from auditor.model.packet import EventKind, PacketEvent
from auditor.sources.live.events import KIND_CODES, DecodeError, address_text, check_size, ip_version

# header + tuple, u32 reason, u16 ethertype, u8 ip_proto, u8 tcp_flags, 4 pad, u64 location (80)
SKB_DROP = struct.Struct("<QIIIHH16s16sHHIHBB4xQ")


def decode_skb_drop(data: bytes, offset_ns: int, node: str = "") -> PacketEvent:
    check_size(data, SKB_DROP.size, "skb_drop")
    ts, code, netns, _pid, family, _pad, saddr, daddr, sport, dport, reason, _eth, _proto, flags, _loc = (
        SKB_DROP.unpack_from(data)
    )
    if KIND_CODES.get(code) != EventKind.DROP:
        raise DecodeError(f"kind {code} is not a skb_drop event")
    return PacketEvent(
        time_ns=ts + offset_ns,
        kind=EventKind.DROP.value,
        family=ip_version(family),
        src=address_text(family, saddr),
        sport=sport,
        dst=address_text(family, daddr),
        dport=dport,
        tcp_flags=flags,
        reason_raw=reason,
        netns=netns,
        source="ebpf",
        node=node,
    )


def drop_location(data: bytes) -> tuple[int, int]:
    """(IP protocol, kernel text address of the drop) of a skb_drop event."""
    check_size(data, SKB_DROP.size, "skb_drop")
    fields = SKB_DROP.unpack_from(data)
    return int(fields[12]), int(fields[14])
