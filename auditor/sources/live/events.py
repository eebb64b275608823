"""The event header every probe writes first (``struct ev_hdr`` in probes/common.h) and the kinds."""

from __future__ import annotations

import socket
import struct

from auditor.model.packet import EventKind

# K_* in probes/common.h
KIND_CODES: dict[int, EventKind] = {
    1: EventKind.RST_SENT,
    2: EventKind.RST_RECEIVED,
    3: EventKind.REFUSED,
    4: EventKind.LISTEN_CLOSE,
    5: EventKind.ICMP_UNREACHABLE,
    6: EventKind.DROP,
}
N_KINDS = 7

# u64 ts_ns, u32 kind, u32 netns, u32 pid, u16 family, u16 pad; then struct ev_tuple:
# u8 saddr[16], u8 daddr[16], u16 sport, u16 dport
HEADER = struct.Struct("<QIIIHH")
HEADER_TUPLE = struct.Struct("<QIIIHH16s16sHH")

AF_INET, AF_INET6 = 2, 10


class DecodeError(ValueError):
    """Bytes that are not a well-formed event (counted by the reader, never raised to the user)."""


def address_text(family: int, raw: bytes) -> str:
    """``"10.0.0.1"`` / ``"fd00::1"`` from the 16-byte address slot; "" for an unknown family."""
    if family == AF_INET:
        return socket.inet_ntop(socket.AF_INET, raw[:4])
    if family == AF_INET6:
        return socket.inet_ntop(socket.AF_INET6, raw[:16])
    return ""


def ip_version(family: int) -> int:
    return 6 if family == AF_INET6 else 4


def check_size(data: bytes, size: int, what: str) -> None:
    if len(data) < size:
        raise DecodeError(f"{what} event of {len(data)} bytes, expected at least {size}")


def event_kind_code(data: bytes) -> int:
    check_size(data, HEADER.size, "probe")
    return int(HEADER.unpack_from(data)[1])
