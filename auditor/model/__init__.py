"""The event model shared by every source (captures, live probes, Kubernetes, dataplane)."""

from auditor.model.packet import (
    PACKET_COLUMNS,
    TEXT_COLUMNS,
    EventKind,
    PacketEvent,
    packet_arrow_schema,
    packet_frame,
)

__all__ = [
    "PACKET_COLUMNS",
    "TEXT_COLUMNS",
    "EventKind",
    "PacketEvent",
    "packet_arrow_schema",
    "packet_frame",
]
