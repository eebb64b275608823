"""The capture reader: pcap/pcapng -> packet event table (``auditor.model.packet``) + counts.

    read_capture(path, node="", node_from_file=False) -> CaptureResult  # .events (pandas), .summary
    iter_event_batches(path, node="") -> Iterator[pyarrow.RecordBatch]   # streaming, bounded memory
    summarize_capture(path) -> CaptureSummary

The per-packet loop is C (``auditor/sources/_scan.c``); this package frames files, names things
and builds Arrow batches. pandas is imported only by ``read_capture``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from auditor.sources.capture.summary import CaptureSummary

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

__all__ = ["CaptureResult", "CaptureSummary", "iter_event_batches", "read_capture", "summarize_capture"]

BATCH_ROWS = 32768


@dataclass
class CaptureResult:
    """The events of one capture and its counts."""

    events: pd.DataFrame
    summary: CaptureSummary


def iter_event_batches(
    path: str | os.PathLike[str],
    node: str = "",
    summary: CaptureSummary | None = None,
    node_from_file: bool = False,
) -> Iterator[pa.RecordBatch]:
    """Stream the event table as record batches; ``summary`` (if given) is filled as the file is read.
    ``node_from_file``: the node a pcapng interface description names (``node=NAME``, as ``auditor
    capture`` writes it) wins over ``node``.

    Raises ``InputError`` for a file that cannot be read at all (possibly after the last batch).
    """
    import numpy as np

    from auditor.sources.capture.batches import BatchBuilder
    from auditor.sources.capture.reader import scan_file

    summary = summary if summary is not None else CaptureSummary()
    builder = BatchBuilder(os.path.basename(os.fspath(path)), node)
    pending: list[np.ndarray] = []
    rows = 0
    names: list[str] = []
    for ev, names in scan_file(path, summary):
        if node_from_file and summary.node:
            builder.node = summary.node  # the interface blocks come before the packets
        pending.append(ev)
        rows += len(ev)
        if rows >= BATCH_ROWS:
            yield builder.build(np.concatenate(pending), names)
            pending, rows = [], 0
    if rows:
        yield builder.build(np.concatenate(pending), names)


def summarize_capture(path: str | os.PathLike[str]) -> CaptureSummary:
    """Only the counts (events are decoded but not kept)."""
    from auditor.sources.capture.reader import scan_file

    summary = CaptureSummary()
    for _ in scan_file(path, summary):
        pass
    return summary


def read_capture(path: str | os.PathLike[str], node: str = "", node_from_file: bool = False) -> CaptureResult:
    """The whole event table as pandas (categorical addresses, UTC ns times) plus the counts
    (``node_from_file``: see :func:`iter_event_batches`)."""
    import pyarrow as pa

    from auditor.model.packet import normalize_packet_frame, packet_arrow_schema

    summary = CaptureSummary()
    batches = list(iter_event_batches(path, node, summary, node_from_file))
    table = pa.Table.from_batches(batches, schema=packet_arrow_schema())
    return CaptureResult(normalize_packet_frame(table.to_pandas()), summary)
