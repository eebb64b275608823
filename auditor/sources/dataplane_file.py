"""Read dataplane rule-change files (JSONL, ``docs/dataplane-record.md``) into a :class:`DataplaneInput`.

A line that is not a valid record becomes an :class:`InputProblem` (file, line, why) and is skipped;
everything else is read. A file that cannot be opened, or that has lines but no valid record, raises
:class:`AuditorError`; an empty file is valid (no rule changed).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from auditor.errors import AuditorError
from auditor.model.dataplane import DataplaneInput, DataplaneRecord, dataplane_frame
from auditor.model.kube import InputProblem


def read_dataplane(paths: Sequence[str | Path]) -> DataplaneInput:
    """Read every file; records from all files in one table sorted by time."""
    records: list[DataplaneRecord] = []
    problems: list[InputProblem] = []
    skipped = 0
    for raw_path in paths:
        path = Path(raw_path)
        try:
            text = path.read_bytes().decode("utf-8", errors="replace")
        except OSError as exc:
            raise AuditorError(
                f"cannot read ({exc.strerror or exc})", str(path), "check the path given to --dataplane"
            ) from exc
        found = lines = 0
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            lines += 1
            try:
                records.append(DataplaneRecord.from_json(line))
                found += 1
            except json.JSONDecodeError as exc:
                problems.append(InputProblem(path.name, number, f"not a JSON dataplane record ({exc.msg}); skipped"))
                skipped += 1
            except ValueError as exc:
                problems.append(InputProblem(path.name, number, f"invalid dataplane record ({exc}); skipped"))
                skipped += 1
        if lines and not found:
            raise AuditorError(
                f"no valid dataplane record in {lines} line(s) (first problem: {problems[-lines].message})",
                str(path),
                "expected JSON lines as described in docs/dataplane-record.md",
            )
    return DataplaneInput(
        changes=dataplane_frame(records), problems=problems, records_read=len(records), records_skipped=skipped
    )
