"""Read packet events from captures (pcap/pcapng) and event files (Parquet/JSONL/CSV) into one table.

Shared by ``auditor analyze`` and the notebook API. A path may be ``NODE=FILE``; otherwise the node is
the one the capture names (a pcapng interface description ``node=NAME``, written by ``auditor capture``),
else the given default or the file's stem.

Segments of an agent's event log (``events-<node>-<stamp>-<seq>.*``, :mod:`auditor.model.logfiles`,
and a ``.parquet.part`` a crash left) are read leniently (:func:`auditor.sources.eventfile.read_segment`):
a half-written last line, a Parquet file cut short or never finished is skipped and counted
(``event_segments_skipped``, ``event_lines_skipped``) with one problem line each, never an error. Any
other event file must be whole.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from auditor.errors import InputError
from auditor.model.logfiles import PART, classify_log_file
from auditor.model.packet import TEXT_COLUMNS
from auditor.sources.eventfile import SUFFIXES
from auditor.sources.pcaplive.engine import LIVE_FILE

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
    from auditor.sources.eventfile import read_events, read_segment

    frames: list[pd.DataFrame] = []
    info: dict[str, Any] = {"capture_frames": 0, "capture_skipped": 0, "captures": [], "problems": []}
    captured: set[str] = set()
    for value in paths:
        name, path = input_spec(value, default_node)
        if not path.exists():
            raise InputError("no such file", str(path), "check the capture or event file path")
        if is_log_segment(path):
            seg = read_segment(path)
            info["problems"] += seg.notes
            if seg.skipped is not None:
                info["event_segments_skipped"] = info.get("event_segments_skipped", 0) + 1
            if seg.bad_lines:
                info["event_lines_skipped"] = info.get("event_lines_skipped", 0) + seg.bad_lines
            ev = seg.frame
            if len(ev) and (ev["node"].astype(str) == "").any():
                ev["node"] = ev["node"].astype(str).replace("", name)
            if len(ev):  # an agent whose source was a packet capture (no eBPF): no kernel reasons
                live = (ev["source"].astype(str) == "pcap") & (ev["file"].astype(str) == LIVE_FILE)
                captured |= set(ev.loc[live, "node"].astype(str))
            frames.append(ev)
            continue
        if path.suffix.lower() in EVENT_SUFFIXES:
            ev = read_events(path)
            if (ev["node"].astype(str) == "").any():
                ev["node"] = ev["node"].astype(str).replace("", name)
            frames.append(ev)
            continue
        named = "=" in os.fspath(value) and not Path(os.fspath(value)).exists()  # NODE=FILE wins
        cap = read_capture(path, node=name, node_from_file=not named)
        frames.append(cap.events)
        s = cap.summary
        name = s.node if s.node and not named else name
        info["capture_frames"] += s.frames
        info["capture_skipped"] += s.skipped
        if s.dropped:  # the capturing kernel's drops (pcapng statistics): lost input
            info["capture_dropped"] = info.get("capture_dropped", 0) + s.dropped
        info["captures"].append({
            "file": str(path), "node": name, "frames": s.frames, "skipped": s.skipped,
            "truncated": any("truncated" in e for e in s.errors),  # the file ends mid-record
            "dropped": s.dropped or 0,
        })  # fmt: skip
        info["problems"] += [f"{path.name}: {e}" for e in s.errors]
    info["problems"] += [
        f"{n}: the agent recorded packets by capture (no eBPF): refusals and resets without the kernel's reasons"
        for n in sorted(captured)
    ]
    packets = pd.concat(frames, ignore_index=True) if frames else packet_frame()
    for col in TEXT_COLUMNS:
        packets[col] = packets[col].astype(str).astype("category")
    return packets, info


def is_log_segment(path: Path) -> bool:
    """An agent's event-log segment, finished, live or left unfinished (``.parquet.part``)."""
    name = path.name.removesuffix(PART) + ".parquet" if path.name.endswith(PART) else path.name
    hit = classify_log_file(name)
    return hit is not None and hit[0] == "events"


__all__ = ["EVENT_SUFFIXES", "input_spec", "is_log_segment", "read_packet_inputs"]
