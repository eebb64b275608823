"""Packet event batches as the agent moves them: one pandas packet table per poll, never one object per event.

Helpers shared by the poll loops, the writer queue and the live window: build a batch from whatever a
source returns, count it by kind, and concatenate batches whose categoricals differ.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from auditor.model.packet import PacketEvent

if TYPE_CHECKING:
    import pandas as pd

CATEGORY_COLUMNS = ("kind", "src", "dst", "reporter", "encap", "source", "file", "interface", "node")
# what a packet table costs in memory, measured (bench: decode_records of 32,768 records): ~59 bytes a
# row (integers, categorical codes) plus ~53 KB of its own (pandas objects, one categorical per text
# column); a table being built by the batch decoder peaks at ~250 bytes a row more
FRAME_ROW_BYTES = 64
FRAME_OVERHEAD_BYTES = 56 << 10


def frame_bytes(rows: int) -> int:
    """Estimated memory of a packet table of ``rows`` rows (for the queue's byte bound)."""
    return FRAME_OVERHEAD_BYTES + rows * FRAME_ROW_BYTES


def as_packet_frame(batch: Any) -> pd.DataFrame:
    """The packet table of a batch: a DataFrame as it is, a list of :class:`PacketEvent` converted."""
    import pandas as pd

    from auditor.model.packet import packet_frame

    if isinstance(batch, pd.DataFrame):
        return batch
    return packet_frame(list(batch or []))


def kind_counts(frame: pd.DataFrame) -> dict[str, int]:
    """Rows per event kind (kinds with no row left out)."""
    if frame.empty:
        return {}
    counts = frame["kind"].value_counts(sort=False)
    return {str(k): int(n) for k, n in counts.items() if n}


def concat_packet_frames(frames: Sequence[pd.DataFrame]) -> pd.DataFrame:
    """One packet table from several (text columns stay categoricals even when their categories differ)."""
    import pandas as pd

    from auditor.model.packet import packet_frame

    frames = [f for f in frames if len(f)]
    if not frames:
        return packet_frame()
    if len(frames) == 1:
        return frames[0]
    out = pd.concat(frames, ignore_index=True)
    for name in CATEGORY_COLUMNS:
        if not isinstance(out[name].dtype, pd.CategoricalDtype):
            out[name] = out[name].astype("category")
    return out


def frame_events(frame: pd.DataFrame) -> list[PacketEvent]:
    """The rows of a packet table as events (small selections only: one object per row)."""
    from dataclasses import fields

    names = [f.name for f in fields(PacketEvent)]
    cols = [frame["time"].to_numpy(dtype="datetime64[ns]").astype("int64").tolist()]
    for name in names[1:]:
        col = frame[name]
        cols.append([str(v) for v in col] if name in CATEGORY_COLUMNS else col.tolist())
    return [PacketEvent(*row) for row in zip(*cols, strict=True)]
