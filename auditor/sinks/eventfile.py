"""The packet event table written to disk: Parquet (the packet Arrow schema), JSON lines or CSV.

Writing streams record batches (bounded memory). :func:`frame_json_lines` / :func:`batch_json_lines` are the
one JSONL writer of packet events (``auditor pcap events``, the agent's event log); the files are read
back by :func:`auditor.sources.eventfile.read_events`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from typing import IO, TYPE_CHECKING, Any

from auditor.errors import AuditorError
from auditor.model.packet import PACKET_COLUMNS
from auditor.sources.eventfile import format_for

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    import pyarrow as pa


def time_texts(times: np.ndarray) -> list[str]:
    """``datetime64[ns]`` (or int64 nanoseconds) -> ``2026-01-01T12:00:00.123456789`` per value, without the
    ``Z``: the vectorized :func:`auditor.model.kube.format_time_ns` (a test holds them equal)."""
    import numpy as np

    return list(np.datetime_as_string(times.astype("datetime64[ns]"), unit="ns").tolist())


_KEYS = {name: json.dumps(name) + ":" for name in PACKET_COLUMNS}


def _json_lines(n: int, columns: dict[str, Any]) -> str:
    """The JSONL rows, keys in the packet table's column order. ``columns``: name -> ``datetime64[ns]``
    array (``time``), ``(categories, codes)`` (text; code -1 is missing, written ``""``) or an int array.

    Columns constant in the batch are formatted once; the others go through one ``%`` template per row.
    """
    import numpy as np

    if n == 0:
        return ""
    pieces: list[str] = []
    args: list[list[Any]] = []
    for name in PACKET_COLUMNS:
        key, col = _KEYS[name], columns[name]
        if name == "time":
            pieces.append(key + '"%sZ"')
            args.append(time_texts(col))
        elif isinstance(col, tuple):
            categories, codes = col
            encoded = np.asarray([*(json.dumps(str(c)) for c in categories), '""'], dtype=object)
            if (codes == codes[0]).all():
                pieces.append(key + str(encoded[codes[0]]).replace("%", "%%"))
            else:
                pieces.append(key + "%s")
                args.append(encoded[codes].tolist())
        elif (col == col[0]).all():
            pieces.append(key + str(int(col[0])))
        else:
            pieces.append(key + "%d")
            args.append(col.tolist())
    template = "{" + ",".join(pieces) + "}\n"
    if not args:
        return template * n
    return "".join([template % row for row in zip(*args, strict=True)])


JSON_CHUNK_ROWS = 8192  # rows formatted at once: the per-row Python objects peak at ~900 bytes a row


def frame_json_lines(frame: pd.DataFrame) -> str:
    """The JSONL rows of a packet table (``time`` as RFC 3339 UTC with nanoseconds)."""
    return "".join(iter_frame_json_lines(frame))


def iter_frame_json_lines(frame: pd.DataFrame, chunk_rows: int = JSON_CHUNK_ROWS) -> Iterator[str]:
    """:func:`frame_json_lines` in pieces of ``chunk_rows`` rows: what a writer streams, so that a large
    batch never holds its formatting objects (~900 bytes a row) all at once."""
    import pandas as pd

    columns: dict[str, Any] = {}
    for name in PACKET_COLUMNS:
        col = frame[name]
        if name == "time":
            columns[name] = col.to_numpy(dtype="datetime64[ns]")
        elif isinstance(col.dtype, pd.CategoricalDtype):
            columns[name] = (list(col.cat.categories), col.cat.codes.to_numpy())
        else:
            columns[name] = col.to_numpy()
    n, step = len(frame), max(1, chunk_rows)
    for start in range(0, n, step):
        part = {k: (v[0], v[1][start : start + step]) if isinstance(v, tuple) else v[start : start + step]
                for k, v in columns.items()}  # fmt: skip
        yield _json_lines(min(step, n - start), part)


def batch_json_lines(batch: pa.RecordBatch) -> str:
    """The JSONL rows of an Arrow record batch with the packet schema: the same text as
    :func:`frame_json_lines` of ``batch.to_pandas()``, without pandas."""
    import pyarrow as pa
    import pyarrow.compute as pc

    columns: dict[str, Any] = {}
    for name in PACKET_COLUMNS:
        col = batch.column(name)
        if name == "time":
            columns[name] = col.cast(pa.int64()).to_numpy(zero_copy_only=False)
        elif pa.types.is_dictionary(col.type) or pa.types.is_string(col.type):
            if not pa.types.is_dictionary(col.type):
                col = col.dictionary_encode()
            codes = pc.fill_null(col.indices, -1).to_numpy(zero_copy_only=False)
            columns[name] = (col.dictionary.to_pylist(), codes)
        else:
            columns[name] = col.to_numpy(zero_copy_only=False)
    return _json_lines(batch.num_rows, columns)


def _csv_rows(batch: pa.RecordBatch) -> list[list[Any]]:
    """The rows of a batch as Python lists, times as RFC 3339 UTC strings with nanoseconds."""
    cols: list[list[Any]] = []
    for name, col in zip(batch.schema.names, batch.columns, strict=True):
        if name == "time":
            cols.append([t + "Z" for t in time_texts(col.cast("int64").to_numpy(zero_copy_only=False))])
        else:
            cols.append(col.to_pylist())
    return [list(r) for r in zip(*cols, strict=True)]


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

    rows = 0
    writer = csv.writer(stream, lineterminator="\n") if fmt == "csv" else None
    if writer is not None:
        writer.writerow(PACKET_COLUMNS)
    for batch in batches:
        if writer is not None:
            writer.writerows(_csv_rows(batch))
        else:
            stream.write(batch_json_lines(batch))
        rows += batch.num_rows
    stream.flush()
    return rows


__all__ = ["batch_json_lines", "frame_json_lines", "time_texts", "write_events"]
