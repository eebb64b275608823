"""Decode ``struct ev_tcp_reset`` (probes/tcp_reset.c): tcp:tcp_send_reset / tcp:tcp_receive_reset.

Direction follows the RST on the wire: ``src`` sent the RST, ``dst`` received it. For
``rst_sent`` that is the tracepoint's saddr -> daddr (this host -> peer); for ``rst_received``
the tracepoint reports the local socket (saddr = this host), so the tuple is swapped.

A reset sent without a socket carries the TCP flags of the packet it answered (``trigger_flags``,
read from the skb in the probe). ``tcp_flags`` is then the RST's own flags on the wire, as the
kernel builds them (``tcp_v4_send_reset``): RST alone when the answered packet had ACK set (a late
ACK, data for a connection already gone), RST/ACK otherwise (a SYN: a refused connection), the same
rule a capture is read with. 0 when unknown (a reset sent by a socket, or an older probe).
"""

from __future__ import annotations

import struct

from auditor.model.packet import EventKind, PacketEvent
from auditor.sources.live.events import KIND_CODES, DecodeError, address_text, check_size, ip_version

# header + tuple, then u32 state, u32 reason, u32 trigger_flags (sizeof = 72)
TCP_RESET = struct.Struct("<QIIIHH16s16sHHIII")
TCP_ACK, TCP_RST = 0x10, 0x04


def rst_wire_flags(trigger_flags: int) -> int:
    """The flags of the RST the kernel sends in answer to a packet with ``trigger_flags`` (0: unknown)."""
    if not trigger_flags:
        return 0
    return TCP_RST if trigger_flags & TCP_ACK else TCP_RST | TCP_ACK


def decode_tcp_reset(data: bytes, offset_ns: int, node: str = "") -> PacketEvent:
    check_size(data, TCP_RESET.size, "tcp_reset")
    ts, code, netns, _pid, family, _pad, saddr, daddr, sport, dport, state, reason, trigger = (
        TCP_RESET.unpack_from(data)
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
        tcp_flags=rst_wire_flags(trigger & 0xFF) if kind == EventKind.RST_SENT else 0,
        netns=netns,
        source="ebpf",
        node=node,
    )
