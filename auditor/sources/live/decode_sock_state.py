"""Decode ``struct ev_sock_state`` (probes/sock_state.c): sock:inet_sock_set_state transitions.

``refused`` (SYN_SENT -> CLOSE): the client socket, ``src`` = client, ``dst`` = the server it
tried. ``listen_close`` (LISTEN -> CLOSE): ``src`` = the listening address and port, ``dst`` is
the unspecified address with port 0. ``state_raw`` is the state before the transition.
"""

from __future__ import annotations

import struct

from auditor.model.packet import EventKind, PacketEvent
from auditor.sources.live.events import KIND_CODES, DecodeError, address_text, check_size, ip_version

# header + tuple, then u32 oldstate, u32 newstate (sizeof = 72 with padding)
SOCK_STATE = struct.Struct("<QIIIHH16s16sHHII")


def decode_sock_state(data: bytes, offset_ns: int, node: str = "") -> PacketEvent:
    check_size(data, SOCK_STATE.size, "sock_state")
    ts, code, netns, _pid, family, _pad, saddr, daddr, sport, dport, oldstate, _newstate = (
        SOCK_STATE.unpack_from(data)
    )
    kind = KIND_CODES.get(code)
    if kind not in (EventKind.REFUSED, EventKind.LISTEN_CLOSE):
        raise DecodeError(f"kind {code} is not a sock_state event")
    return PacketEvent(
        time_ns=ts + offset_ns,
        kind=kind.value,
        family=ip_version(family),
        src=address_text(family, saddr),
        sport=sport,
        dst=address_text(family, daddr),
        dport=dport,
        state_raw=oldstate & 0xFF,
        netns=netns,
        source="ebpf",
        node=node,
    )
