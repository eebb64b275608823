"""Event files read back: a packet event table in Parquet (the packet Arrow schema), JSON lines or CSV.

The writers are in :mod:`auditor.sinks.eventfile`; both sides tell a file's format by :func:`format_for`.
"""

from __future__ import annotations

import json
import os
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


__all__ = ["FORMATS", "SUFFIXES", "format_for", "read_events"]
