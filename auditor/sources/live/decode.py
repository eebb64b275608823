"""Dispatch raw probe events to the decoder of their family, by the kind in the header."""

from __future__ import annotations

from auditor.model.packet import PacketEvent
from auditor.sources.live.decode_icmp_send import decode_icmp_send
from auditor.sources.live.decode_skb_drop import decode_skb_drop
from auditor.sources.live.decode_sock_state import decode_sock_state
from auditor.sources.live.decode_tcp_reset import decode_tcp_reset
from auditor.sources.live.events import DecodeError, event_kind_code


def decode_event(data: bytes, offset_ns: int, node: str = "") -> PacketEvent:
    """Decode any probe event; DecodeError for short data or an unknown kind.

    ``offset_ns`` turns the probe's CLOCK_MONOTONIC timestamp into UTC (see clock.py).
    """
    code = event_kind_code(data)
    if code in (1, 2):
        return decode_tcp_reset(data, offset_ns, node)
    if code in (3, 4):
        return decode_sock_state(data, offset_ns, node)
    if code == 5:
        return decode_icmp_send(data, offset_ns, node)
    if code == 6:
        return decode_skb_drop(data, offset_ns, node)
    raise DecodeError(f"unknown event kind {code}")
