"""The agent side of ``auditor collect``: its log directory, read-only, as an HTTP listing and files.

Served by the agent's metrics server (:mod:`auditor.sinks.metrics`) on its port (9808), to a caller
whose bearer token the API server authenticates and authorizes (:mod:`auditor.sinks.logauth`); the
client side is :mod:`auditor.collect.fetch`::

    GET /logs          {"files": [{"name", "size", "mtime"}...]}: log files only (auditor.model.logfiles)
    GET /logs/<name>   the first ``size`` bytes of a listed file, streamed; anything else is 404

Files appended line by line (event JSONL segments, kube streams, dataplane records, episodes) are
listed and served up to their last newline, so a live one is always handed out as whole lines; a ``.parquet.part`` never matches a
log file name and is never served. The name is looked up in the listing, never joined blindly, so
``..``, ``/`` and encoded variants cannot leave the directory.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from auditor.model.logfiles import classify_log_file, is_appended

CHUNK = 1 << 16


@dataclass(frozen=True)
class LogFile:
    """A servable file: ``size`` is what will be served (whole lines for line files)."""

    name: str
    size: int
    mtime: float

    def as_dict(self) -> dict[str, object]:
        return {"name": self.name, "size": self.size, "mtime": round(self.mtime, 3)}


def complete_length(path: Path, size: int) -> int:
    """Bytes of ``path`` up to and including its last newline within the first ``size`` bytes."""
    if size <= 0:
        return 0
    with path.open("rb") as f:
        end = size
        while end > 0:
            start = max(0, end - CHUNK)
            f.seek(start)
            block = f.read(end - start)
            cut = block.rfind(b"\n")
            if cut >= 0:
                return start + cut + 1
            end = start
    return 0


def list_log_files(directory: str | Path) -> list[LogFile]:
    """The log files of ``directory`` by name; files that vanish while listing are left out."""
    d = Path(directory)
    out: list[LogFile] = []
    try:
        entries = sorted(os.scandir(d), key=lambda e: e.name)
    except OSError:
        return out
    for entry in entries:
        if classify_log_file(entry.name) is None:
            continue
        try:
            if not entry.is_file(follow_symlinks=False):
                continue
            st = entry.stat(follow_symlinks=False)
            size = st.st_size
            if is_appended(entry.name):
                size = complete_length(Path(entry.path), size)
        except OSError:
            continue  # rotated away between scandir and stat
        out.append(LogFile(entry.name, size, st.st_mtime))
    return out


def find_log_file(directory: str | Path, name: str) -> LogFile | None:
    """The listed file called ``name`` (exact match), else None."""
    if classify_log_file(name) is None:
        return None
    for f in list_log_files(directory):
        if f.name == name:
            return f
    return None


def read_log_file(directory: str | Path, f: LogFile) -> Iterator[bytes]:
    """Chunks of the first ``f.size`` bytes (the file may keep growing; it is not read further)."""
    with (Path(directory) / f.name).open("rb") as src:
        left = f.size
        while left > 0:
            block = src.read(min(CHUNK, left))
            if not block:
                raise OSError(f"{f.name} shrank while being served")
            left -= len(block)
            yield block


__all__ = ["LogFile", "complete_length", "find_log_file", "list_log_files", "read_log_file"]
