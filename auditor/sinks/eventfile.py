"""The packet event table on disk: Parquet (the packet Arrow schema), JSON lines or CSV.

Writing streams record batches (bounded memory); ``read_events`` reads any of the three back into
the canonical pandas dtypes (``normalize_packet_frame``).
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Iterable
from typing import IO, TYPE_CHECKING, Any

from auditor.errors import AuditorError, InputError

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

FORMATS = ("parquet", "jsonl", "csv")
_SUFFIXES = {
    ".parquet": "parquet",
    ".pq": "parquet",
    ".jsonl": "jsonl",
    ".json": "jsonl",
    ".ndjson": "jsonl",
    ".csv": "csv",
}


def format_for(path: str | os.PathLike[str] | None, fmt: str | None = None) -> str:
    """The output format: explicit, else from the file suffix, else jsonl (stdout)."""
    if fmt:
        if fmt not in FORMATS:
            raise AuditorError(f"unknown event file format {fmt!r}", hint=f"use one of {', '.join(FORMATS)}")
        return fmt
    if path is None or os.fspath(path) == "-":
        return "jsonl"
    suffix = os.path.splitext(os.fspath(path))[1].lower()
    if suffix not in _SUFFIXES:
        raise AuditorError(
            f"cannot tell the format from the suffix {suffix or '(none)'!r}",
            os.fspath(path),
            "use .parquet, .jsonl or .csv, or give --format",
        )
    return _SUFFIXES[suffix]


def _rows(batch: pa.RecordBatch) -> tuple[list[str], list[list[Any]]]:
    """Columns of a batch as Python lists, times as ISO 8601 UTC strings with nanoseconds."""
    import numpy as np

    names = batch.schema.names
    cols: list[list[Any]] = []
    for name, col in zip(names, batch.columns, strict=True):
        if name == "time":
            ns = col.cast("int64").to_numpy(zero_copy_only=False)
            text = np.datetime_as_string(ns.astype("datetime64[ns]"), unit="ns")
            cols.append([t + "Z" for t in text.tolist()])
        else:
            cols.append(col.to_pylist())
    return names, [list(r) for r in zip(*cols, strict=True)]


def write_events(
    batches: Iterable[pa.RecordBatch], path: str | os.PathLike[str] | None, fmt: str | None = None
) -> int:
    """Write batches to ``path`` (stdout if None or '-'); returns the rows written.

    A partly written file is removed if reading the input fails.
    """
    fmt = format_for(path, fmt)
    target = None if path is None or os.fspath(path) == "-" else os.fspath(path)
    try:
        if fmt == "parquet":
            return _write_parquet(batches, target)
        stream: IO[str]
        if target is None:
            import sys

            stream = sys.stdout
            return _write_text(batches, stream, fmt)
        with open(target, "w", encoding="utf-8", newline="") as stream:
            return _write_text(batches, stream, fmt)
    except BaseException:
        if target is not None and os.path.exists(target):
            os.unlink(target)
        raise


def _write_parquet(batches: Iterable[pa.RecordBatch], target: str | None) -> int:
    import pyarrow.parquet as pq

    from auditor.model.packet import packet_arrow_schema

    if target is None:
        raise AuditorError("Parquet needs an output file", hint="give -o FILE.parquet, or --format jsonl")
    rows = 0
    with pq.ParquetWriter(target, packet_arrow_schema(), compression="snappy") as writer:
        for batch in batches:
            writer.write_batch(batch)
            rows += batch.num_rows
    return rows


def _write_text(batches: Iterable[pa.RecordBatch], stream: IO[str], fmt: str) -> int:
    import csv

    from auditor.model.packet import PACKET_COLUMNS

    rows = 0
    writer = csv.writer(stream, lineterminator="\n") if fmt == "csv" else None
    if writer is not None:
        writer.writerow(PACKET_COLUMNS)
    for batch in batches:
        names, values = _rows(batch)
        if writer is not None:
            writer.writerows(values)
        else:
            buf = io.StringIO()
            for row in values:
                buf.write(json.dumps(dict(zip(names, row, strict=True)), separators=(",", ":")))
                buf.write("\n")
            stream.write(buf.getvalue())
        rows += len(values)
    stream.flush()
    return rows


def read_events(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Read a Parquet, JSONL or CSV event file into the canonical packet table."""
    import pandas as pd

    from auditor.model.packet import PACKET_COLUMNS, normalize_packet_frame, packet_frame

    name = os.fspath(path)
    fmt = format_for(name)
    text_cols = {"kind", "src", "dst", "reporter", "encap", "source", "file", "interface", "node"}
    try:
        if fmt == "parquet":
            df = pd.read_parquet(name)
        elif fmt == "csv":
            df = pd.read_csv(name, dtype={c: str for c in text_cols}, keep_default_na=False)
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
