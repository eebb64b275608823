"""Decode ``struct ev_icmp`` (probes/icmp_send.c): icmp:icmp_send, destination unreachable.

The tuple is the quoted datagram's in its original direction (``src`` = who sent the packet
that could not be delivered). ``reporter`` stays empty: the tracepoint fires before the ICMP
error's source address is chosen.
"""

from __future__ import annotations

import struct

from auditor.model.packet import EventKind, PacketEvent
from auditor.sources.live.events import KIND_CODES, DecodeError, address_text, check_size, ip_version

# header + tuple, then u32 type, u32 code, u8 ip_proto, u8 tcp_flags (sizeof = 80 with padding)
ICMP_SEND = struct.Struct("<QIIIHH16s16sHHIIBB")


def decode_icmp_send(data: bytes, offset_ns: int, node: str = "") -> PacketEvent:
    check_size(data, ICMP_SEND.size, "icmp_send")
    ts, code, netns, _pid, family, _pad, saddr, daddr, sport, dport, icmp_type, icmp_code, _proto, flags = (
        ICMP_SEND.unpack_from(data)
    )
    if KIND_CODES.get(code) != EventKind.ICMP_UNREACHABLE:
        raise DecodeError(f"kind {code} is not an icmp_send event")
    return PacketEvent(
        time_ns=ts + offset_ns,
        kind=EventKind.ICMP_UNREACHABLE.value,
        family=ip_version(family),
        src=address_text(family, saddr),
        sport=sport,
        dst=address_text(family, daddr),
        dport=dport,
        tcp_flags=flags,
        icmp_type=icmp_type & 0xFF,
        icmp_code=icmp_code & 0xFF,
        netns=netns,
        source="ebpf",
        node=node,
    )
