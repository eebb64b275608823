"""Read ``counts-<node>-<stamp>.jsonl`` (the agent's exact counts, :mod:`auditor.model.counts`)."""

from __future__ import annotations

import json
from pathlib import Path

from auditor.model.counts import CountRecord


def read_counts(path: str | Path) -> tuple[list[CountRecord], int]:
    """(records, lines that are not one: a line a crash cut short, or damage), in file order."""
    out: list[CountRecord] = []
    bad = 0
    with Path(path).open(encoding="utf-8", errors="replace") as f:
        for line in f:
            if not line.strip():
                continue
            try:
                out.append(CountRecord.from_json(json.loads(line)))
            except (ValueError, KeyError, TypeError):
                bad += 1
    return out, bad


__all__ = ["read_counts"]
