"""Event files read back: a packet event table in Parquet (the packet Arrow schema), JSON lines or CSV.

The writers are in :mod:`auditor.sinks.eventfile`; both sides tell a file's format by :func:`format_for`.

:func:`read_events` reads a file the user names and fails on any damage. :func:`read_segment` reads a
segment of an agent's event log, where a crash leaves damage behind (a live JSONL segment ending in a
half-written line, a Parquet file cut short, a ``.parquet.part`` without footer): what is readable is
kept, the rest is skipped and described, never an error.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from auditor.errors import AuditorError, InputError

if TYPE_CHECKING:
    import pandas as pd

FORMATS = ("parquet", "jsonl", "csv")
SUFFIXES = {
    ".parquet": "parquet",
    ".pq": "parquet",
    ".jsonl": "jsonl",
    ".json": "jsonl",
    ".ndjson": "jsonl",
    ".csv": "csv",
}


def format_for(path: str | os.PathLike[str] | None, fmt: str | None = None) -> str:
    """The format: explicit, else from the file suffix, else jsonl (stdout)."""
    if fmt:
        if fmt not in FORMATS:
            raise AuditorError(f"unknown event file format {fmt!r}", hint=f"use one of {', '.join(FORMATS)}")
        return fmt
    if path is None or os.fspath(path) == "-":
        return "jsonl"
    suffix = os.path.splitext(os.fspath(path))[1].lower()
    if suffix not in SUFFIXES:
        raise AuditorError(
            f"cannot tell the format from the suffix {suffix or '(none)'!r}",
            os.fspath(path),
            "use .parquet, .jsonl or .csv, or give --format",
        )
    return SUFFIXES[suffix]


def read_events(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Read a Parquet, JSONL or CSV event file into the canonical packet table."""
    import pandas as pd

    from auditor.model.packet import PACKET_COLUMNS, TEXT_COLUMNS, normalize_packet_frame, packet_frame

    name = os.fspath(path)
    fmt = format_for(name)
    try:
        if fmt == "parquet":
            df = pd.read_parquet(name)
        elif fmt == "csv":
            df = pd.read_csv(name, dtype={c: str for c in TEXT_COLUMNS}, keep_default_na=False)
        else:
            with open(name, encoding="utf-8") as f:
                records = [json.loads(line) for line in f if line.strip()]
            if not records:
                return packet_frame()
            df = pd.DataFrame.from_records(records)
    except (OSError, ValueError) as exc:
        raise InputError(
            f"cannot read event file: {exc}".splitlines()[0],
            name,
            "give a file written by 'auditor pcap events'",
        ) from None
    if df.empty and "time" not in df.columns:
        return packet_frame()
    try:
        return normalize_packet_frame(df)[list(PACKET_COLUMNS)]
    except (ValueError, TypeError) as exc:
        raise InputError(
            f"not an event table: {exc}".splitlines()[0], name, "give a file written by 'auditor pcap events'"
        ) from None


@dataclass
class SegmentRead:
    """One event-log segment read leniently: its rows, the lines skipped, and whether (and why) the
    whole file was skipped."""

    frame: pd.DataFrame
    bad_lines: int = 0
    skipped: str | None = None  # why the whole segment was skipped
    notes: list[str] = field(default_factory=list)  # one line per problem, naming the file


def read_segment(path: str | os.PathLike[str]) -> SegmentRead:
    """Read an agent's event-log segment; damage is skipped and described (see module doc)."""
    from auditor.model.packet import packet_frame

    name = os.fspath(path)
    base = os.path.basename(name)
    if name.endswith(".parquet.part"):
        twin = name[: -len(".parquet.part")] + ".jsonl"
        where = "its rows are read from its JSONL twin" if os.path.exists(twin) else "its rows are lost"
        why = f"unfinished Parquet segment (the agent stopped while writing it) skipped; {where}"
        return SegmentRead(packet_frame(), skipped=why, notes=[f"{base}: {why}"])
    if format_for(name) != "jsonl":
        try:
            return SegmentRead(read_events(name))
        except (AuditorError, OSError, ValueError) as exc:  # pyarrow's errors are ValueError/OSError
            why = f"unreadable segment ({_first_line(exc)}): skipped, its rows are lost"
            return SegmentRead(packet_frame(), skipped=why, notes=[f"{base}: {why}"])
    return _read_jsonl_segment(name)


def _read_jsonl_segment(name: str) -> SegmentRead:
    import pandas as pd

    from auditor.model.packet import PACKET_COLUMNS, normalize_packet_frame, packet_frame

    base = os.path.basename(name)
    records: list[dict[str, object]] = []
    bad: list[int] = []
    try:
        with open(name, encoding="utf-8", errors="replace") as f:
            for number, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except ValueError:
                    bad.append(number)
                    continue
                if isinstance(record, dict):
                    records.append(record)
                else:
                    bad.append(number)
    except OSError as exc:
        why = f"unreadable segment ({exc.strerror or exc}): skipped"
        return SegmentRead(packet_frame(), skipped=why, notes=[f"{base}: {why}"])
    notes = []
    if bad:
        first = f"line {bad[0]}" if len(bad) == 1 else f"lines {bad[0]}..{bad[-1]}"
        notes.append(f"{base}: {len(bad)} unreadable line(s) skipped ({first}; half-written when the agent stopped?)")
    if not records:
        return SegmentRead(packet_frame(), len(bad), notes=notes)
    try:
        frame = normalize_packet_frame(pd.DataFrame.from_records(records))[list(PACKET_COLUMNS)]
    except (ValueError, TypeError, KeyError) as exc:
        why = f"not an event table ({_first_line(exc)}): skipped"
        return SegmentRead(packet_frame(), len(bad), skipped=why, notes=[*notes, f"{base}: {why}"])
    return SegmentRead(frame, len(bad), notes=notes)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:200]


__all__ = ["FORMATS", "SUFFIXES", "SegmentRead", "format_for", "read_events", "read_segment"]
