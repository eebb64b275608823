"""Decode ``struct ev_tcp_reset`` (probes/tcp_reset.c): tcp:tcp_send_reset / tcp:tcp_receive_reset.

Direction follows the RST on the wire: ``src`` sent the RST, ``dst`` received it. For
``rst_sent`` that is the tracepoint's saddr -> daddr (this host -> peer); for ``rst_received``
the tracepoint reports the local socket (saddr = this host), so the tuple is swapped.
"""

from __future__ import annotations

import struct

from auditor.model.packet import EventKind, PacketEvent
from auditor.sources.live.events import KIND_CODES, DecodeError, address_text, check_size, ip_version

# header + tuple, then u32 state, u32 reason (sizeof = 72 with padding)
TCP_RESET = struct.Struct("<QIIIHH16s16sHHII")


def decode_tcp_reset(data: bytes, offset_ns: int, node: str = "") -> PacketEvent:
    check_size(data, TCP_RESET.size, "tcp_reset")
    ts, code, netns, _pid, family, _pad, saddr, daddr, sport, dport, state, reason = TCP_RESET.unpack_from(
        data
    )
    kind = KIND_CODES.get(code)
    if kind not in (EventKind.RST_SENT, EventKind.RST_RECEIVED):
        raise DecodeError(f"kind {code} is not a tcp_reset event")
    local, peer = address_text(family, saddr), address_text(family, daddr)
    if kind == EventKind.RST_RECEIVED:
        src, sport_, dst, dport_ = peer, dport, local, sport
    else:
        src, sport_, dst, dport_ = local, sport, peer, dport
    return PacketEvent(
        time_ns=ts + offset_ns,
        kind=kind.value,
        family=ip_version(family),
        src=src,
        sport=sport_,
        dst=dst,
        dport=dport_,
        reason_raw=reason,
        state_raw=state & 0xFF,
        netns=netns,
        source="ebpf",
        node=node,
    )
