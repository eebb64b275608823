"""Read packet events from captures (pcap/pcapng) and event files (Parquet/JSONL/CSV) into one table.

Shared by ``auditor analyze`` and the notebook API. A path may be ``NODE=FILE``; otherwise the node is
the given default or the file's stem.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from auditor.errors import InputError
from auditor.model.packet import TEXT_COLUMNS
from auditor.sources.eventfile import SUFFIXES

if TYPE_CHECKING:
    import pandas as pd

EVENT_SUFFIXES = frozenset(SUFFIXES)  # an event file (read_events); any other file is a capture


def input_spec(value: str | os.PathLike[str], default_node: str | None) -> tuple[str, Path]:
    """``NODE=FILE`` names the node a file was recorded on; a plain FILE is named by the default or its stem."""
    text = os.fspath(value)
    if "=" in text and not Path(text).exists():
        node, _, path = text.partition("=")
        return node, Path(path)
    p = Path(text)
    return (default_node or p.stem), p


def read_packet_inputs(
    paths: Iterable[str | os.PathLike[str]], default_node: str | None = None
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """One packet table (canonical dtypes, text columns categorical) plus what was read and any damage
    (``capture_frames``, ``capture_skipped``, ``captures``, ``problems``)."""
    import pandas as pd

    from auditor.model.packet import packet_frame
    from auditor.sources.capture import read_capture
    from auditor.sources.eventfile import read_events

    frames: list[pd.DataFrame] = []
    info: dict[str, Any] = {"capture_frames": 0, "capture_skipped": 0, "captures": [], "problems": []}
    for value in paths:
        name, path = input_spec(value, default_node)
        if not path.exists():
            raise InputError("no such file", str(path), "check the capture or event file path")
        if path.suffix.lower() in EVENT_SUFFIXES:
            ev = read_events(path)
            if (ev["node"].astype(str) == "").any():
                ev["node"] = ev["node"].astype(str).replace("", name)
            frames.append(ev)
            continue
        cap = read_capture(path, node=name)
        frames.append(cap.events)
        s = cap.summary
        info["capture_frames"] += s.frames
        info["capture_skipped"] += s.skipped
        info["captures"].append({
            "file": str(path), "node": name, "frames": s.frames, "skipped": s.skipped,
            "truncated": any("truncated" in e for e in s.errors),  # the file ends mid-record
        })  # fmt: skip
        info["problems"] += [f"{path.name}: {e}" for e in s.errors]
    packets = pd.concat(frames, ignore_index=True) if frames else packet_frame()
    for col in TEXT_COLUMNS:
        packets[col] = packets[col].astype(str).astype("category")
    return packets, info


__all__ = ["EVENT_SUFFIXES", "input_spec", "read_packet_inputs"]
