"""The agent's rotating event log: segments of the packet event table in one directory.

A segment is ``events-<node>-<stamp>-<seq>`` plus ``.jsonl`` (the live one, and finished ones in jsonl
mode), ``.parquet`` (finished, parquet mode) or ``.parquet.part`` (Parquet being written: never read);
the names, and the listing ``auditor analyze --dir`` reads, are in :mod:`auditor.model.logfiles`.

Why two files per segment in Parquet mode: a Parquet file is unreadable until its footer is written,
so a live Parquet file would be lost entirely if the process died. Every event therefore goes first to
the JSONL segment (whole lines, flushed every ``flush()``, readable at any moment), and also into a
``.parquet.part`` written in large row groups. When the segment is finished (rotation by size or age,
or ``close()`` on SIGTERM) the Parquet footer is written, the file renamed to ``.parquet`` and only
then the JSONL copy removed (the Parquet file is fsynced before its rename, so a finished name never
holds a file the disk has only half). :func:`recover_segments` (run on start) settles what a crash left
behind: a ``.part`` is deleted (its JSONL twin holds every row), a JSONL next to its finished Parquet
twin too.

A restarted agent continues the log: new segments take the next ``<seq>`` after the highest in the
directory (:func:`~auditor.model.logfiles.last_segment_seq`) and are created exclusively, so no run
overwrites or repeats another's segment, even when both start within the same second. What the
crashed run left is not rewritten: a live JSONL segment ending in a half-written line stays as it is
(the reader skips that line and counts it), a truncated Parquet file too (the reader skips it and
counts it). Files the new run appends to (``episodes-<node>.jsonl``, and a kube or dataplane file of
the same second) lose their half-written last line first (:func:`seal_line_file`), so a new line is
never glued to it.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from auditor.errors import AuditorError
from auditor.model.logfiles import (
    JSONL,
    PARQUET,
    PART,
    last_segment_seq,
    list_parts,
    list_segments,
    segment_base,
    segment_stamp,
)
from auditor.model.packet import PacketEvent
from auditor.sinks.eventfile import iter_frame_json_lines
from auditor.sinks.logserve import complete_length

if TYPE_CHECKING:
    import pandas as pd

LOG_FORMATS = ("parquet", "jsonl")


def _record_batch(frame: pd.DataFrame) -> Any:
    import pyarrow as pa

    from auditor.model.packet import packet_arrow_schema

    return pa.RecordBatch.from_pandas(frame, schema=packet_arrow_schema(), preserve_index=False)


class EventLog:
    """Append events to rotating segments; ``close()`` leaves every received event in a finished file.

    Not thread-safe: one writer thread owns it.
    """

    def __init__(
        self,
        directory: str | Path,
        node: str,
        fmt: str = "parquet",
        rotate_bytes: int = 64 << 20,
        rotate_seconds: float = 300.0,
        row_group_rows: int = 65_536,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if fmt not in LOG_FORMATS:
            raise AuditorError(
                f"unknown event log format {fmt!r}", hint=f"use one of {', '.join(LOG_FORMATS)}"
            )
        self.directory = Path(directory)
        self.node = node or "node"
        self.fmt = fmt
        self.rotate_bytes = max(1, rotate_bytes)
        self.rotate_seconds = rotate_seconds
        self.row_group_rows = max(1, row_group_rows)
        self.clock = clock
        self.written = 0  # rows in files (JSONL lines written)
        self.finished: list[Path] = []  # segments closed so far
        self._seq = 0
        self._base: Path | None = None  # current segment without suffix
        self._jsonl: IO[str] | None = None
        self._parquet: Any = None
        self._pending: list[Any] = []  # Arrow record batches for the next row group
        self._pending_rows = 0
        self._bytes = 0
        self._opened_at = 0.0
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise AuditorError(
                f"cannot create the log directory ({exc.strerror})", str(directory), "check --log-dir"
            ) from None
        self.recovered = recover_segments(self.directory)
        self._seq = last_segment_seq(self.directory, self.node)  # a restart continues after the last one

    # -- writing -----------------------------------------------------------------------------------
    def write(self, events: pd.DataFrame | Sequence[PacketEvent]) -> None:
        """Append a batch: a packet table (the fast path) or events (buffered until :meth:`flush`);
        rotates when the segment is too big."""
        import pandas as pd

        from auditor.model.packet import packet_frame

        if len(events) == 0:
            return
        frame = events if isinstance(events, pd.DataFrame) else packet_frame(list(events))
        if self._jsonl is None:
            self._open()
        assert self._jsonl is not None
        for text in iter_frame_json_lines(frame):  # in pieces: bounded formatting memory
            self._jsonl.write(text)
            self._bytes += len(text)
        self.written += len(frame)
        if self.fmt == "parquet":
            self._pending.append(_record_batch(frame))
            self._pending_rows += len(frame)
            if self._pending_rows >= self.row_group_rows:
                self._write_row_group()
        if self._bytes >= self.rotate_bytes:
            self.rotate()

    def flush(self) -> None:
        """Make everything written so far readable on disk (JSONL); rotate an old segment."""
        if self._jsonl is not None:
            self._jsonl.flush()
            if self.clock() - self._opened_at >= self.rotate_seconds:
                self.rotate()

    def rotate(self) -> Path | None:
        """Finish the current segment (if any); the next write opens a new one. Returns the file."""
        if self._jsonl is None or self._base is None:
            return None
        self._jsonl.flush()
        with contextlib.suppress(OSError):
            os.fsync(self._jsonl.fileno())
        self._jsonl.close()
        self._jsonl = None
        jsonl = self._base.with_name(self._base.name + JSONL)
        done = jsonl
        if self.fmt == "parquet":
            self._write_row_group()
            if self._parquet is not None:
                self._parquet.close()
                self._parquet = None
            part = self._base.with_name(self._base.name + PART)
            done = self._base.with_name(self._base.name + PARQUET)
            _fsync(part)  # on disk before the name says "finished"
            os.replace(part, done)
            _fsync(self.directory)
            jsonl.unlink()
        self.finished.append(done)
        self._base = None
        return done

    def close(self) -> None:
        """Finish the current segment; the log may be written again (a new segment opens)."""
        self.rotate()

    @property
    def current(self) -> Path | None:
        """The live JSONL segment, if one is open."""
        return None if self._base is None else self._base.with_name(self._base.name + JSONL)

    # -- internals ---------------------------------------------------------------------------------
    def _open(self) -> None:
        now = self.clock()
        # names already taken (another writer's; one writer per node is the rule) are skipped, boundedly
        for _ in range(10_000):
            self._seq += 1
            base = self.directory / segment_base(self.node, segment_stamp(now), self._seq)
            if base.with_name(base.name + PART).exists() or base.with_name(base.name + PARQUET).exists():
                continue
            try:
                self._jsonl = open(base.with_name(base.name + JSONL), "x", encoding="utf-8")  # noqa: SIM115
            except FileExistsError:
                continue  # never overwrite a segment
            except OSError as exc:
                raise AuditorError(
                    f"cannot write the event log ({exc.strerror})", str(base), "check --log-dir"
                ) from None
            self._base, self._bytes, self._opened_at = base, 0, now
            return
        raise AuditorError("no free event segment name", str(self.directory), "check --log-dir")

    def _write_row_group(self) -> None:
        if not self._pending or self._base is None:
            return
        import pyarrow.parquet as pq

        from auditor.model.packet import packet_arrow_schema

        if self._parquet is None:
            part = self._base.with_name(self._base.name + PART)
            self._parquet = pq.ParquetWriter(part, packet_arrow_schema(), compression="snappy")
        import pyarrow as pa

        table = pa.Table.from_batches(self._pending, schema=packet_arrow_schema())
        self._parquet.write_table(table, row_group_size=max(self.row_group_rows, table.num_rows))
        self._pending, self._pending_rows = [], 0


def _fsync(path: Path) -> None:
    """Flush a file's (or a directory's) data to disk; best effort."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def seal_line_file(path: str | Path) -> int:
    """Cut a line file (JSONL, a kube stream) back to its last complete line before appending to it:
    what a crash left half-written is unreadable, and a new line written after it would be glued to it.
    Returns the bytes removed (0 when the file is whole or absent)."""
    p = Path(path)
    try:
        size = p.stat().st_size
        keep = complete_length(p, size)
        if keep < size:
            os.truncate(p, keep)
    except OSError:
        return 0
    return size - keep


def recover_segments(directory: str | Path) -> int:
    """Settle what a crashed writer left; returns how many files it removed (never removes data)."""
    removed = 0
    for part in list_parts(directory):
        part.unlink()  # unfinished Parquet: its JSONL twin holds every row
        removed += 1
    for done in list_segments(directory):
        twin = done.with_suffix(JSONL)
        if done.suffix == PARQUET and twin.exists():  # died between rename and unlink: Parquet is complete
            twin.unlink()
            removed += 1
    return removed


__all__ = ["LOG_FORMATS", "EventLog", "recover_segments", "seal_line_file"]
