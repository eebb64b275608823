"""Counts of one capture read: what was read, what was decoded, what went wrong."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(slots=True)
class CaptureSummary:
    """Per-file counters; ``errors`` are one-line messages about damage (the rest was still read)."""

    file: str = ""
    frames: int = 0  # records read
    tcp: int = 0  # frames whose first TCP header was reached
    tcp_rst: int = 0
    tcp_syn: int = 0  # SYN without ACK
    tcp_fin: int = 0
    icmp_unreachable: int = 0
    skipped: int = 0  # records that could not be decoded (unsupported link type, damage, malformed)
    malformed: int = 0  # of which: an IP or TCP header contradicting itself or the frame (not decoded)
    link_types: dict[str, int] = field(default_factory=dict)
    # pcapng: the node an interface description names (``node=NAME``, written by ``auditor capture``)
    node: str = ""
    # pcapng interface statistics (ISB, last per interface, summed): packets the capturing kernel dropped
    # (isb_osdrop: ring full) and the interfaces dropped (isb_ifdrop); None: the file says nothing
    dropped: int | None = None
    if_dropped: int | None = None
    writer: str = ""  # pcapng shb_userappl of the first section
    errors: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict (the ``pcap summary --json`` object)."""
        return asdict(self)
