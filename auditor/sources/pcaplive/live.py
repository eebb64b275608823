"""A live capture as a stream of packet tables: the engine's pcapng blocks decoded by the capture
reader's C loop (``_scan.scan_pcapng``) into the packet event table, no file in between.

Used by the agent's ``--source capture`` (``auditor.agent.sources.CaptureSource``): the same events a
capture file gives ``auditor analyze`` (SYN, SYN-ACK, RST, FIN, unreachable; ``source`` "pcap"), so
refusals and resets are found as from a capture, without the kernel's reasons (no eBPF).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from auditor.sources import _scan  # type: ignore[attr-defined]
from auditor.sources.capture import layout as L
from auditor.sources.capture.batches import BatchBuilder
from auditor.sources.pcaplive.engine import LIVE_FILE, Engine

if TYPE_CHECKING:
    import pandas as pd

_MAX_BLOCK = 16 << 20


class LiveDecoder:
    """Decodes the packet blocks of one engine (one interface, nanosecond times) into packet tables."""

    def __init__(self, engine: Engine, node: str, interface: str) -> None:
        self.engine = engine
        self.builder = BatchBuilder(LIVE_FILE, node)
        self.interfaces = [interface]
        self.table = np.zeros((1, L.IF_FIELDS), dtype=np.int64)
        self.table[0, [L.IF_LINKTYPE, L.IF_RES_KIND, L.IF_RES_EXP]] = (engine.linktype, 0, 9)
        self.counters = np.zeros(L.N_COUNTERS, dtype=np.uint64)
        self.frames = 0
        self.undecoded_bytes = 0  # a block the scanner refused (cannot happen with our own writer)

    def poll_frame(self, timeout_ms: int) -> pd.DataFrame:
        """Capture for up to ``timeout_ms`` and decode what arrived (an empty table if nothing)."""
        from auditor.model.packet import normalize_packet_frame, packet_frame

        _n, _size, data = self.engine.dispatch(max(1, timeout_ms), 0, -1)
        if not data:
            return packet_frame()
        pos, frames, raw, _status = _scan.scan_pcapng(
            data, 0, False, self.table, self.frames, _MAX_BLOCK, self.counters
        )
        self.frames += frames
        self.undecoded_bytes += len(data) - pos
        ev = np.frombuffer(raw, dtype=L.EVENT_DTYPE)
        if not len(ev):
            return packet_frame()
        batch = self.builder.build(ev, self.interfaces)
        return normalize_packet_frame(batch.to_pandas())

    def malformed(self) -> int:
        return int(self.counters[L.C_MALFORMED])
