"""What ``analyze --dir`` reads from a directory: an agent's log directory, or a collection of them.

The file names and patterns are those of :mod:`auditor.model.logfiles`; this module groups the files of
one directory by node, skipping what cannot be analyzed (empty files, live segments already finished).
A ``.parquet.part`` (a segment the agent was writing when it stopped, never finished) is listed with
its node's segments, last, so that the loader reports it (skipped and counted as an input problem,
:mod:`auditor.sources.packet_inputs`) instead of it vanishing silently; it is never read.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from auditor.model.logfiles import PARQUET, PART, classify_log_file, list_parts, list_segments, superseded


@dataclass
class LogDir:
    """The analyzable files of one log directory, by node (taken from the file names)."""

    path: Path
    events: dict[str, list[Path]] = field(default_factory=dict)
    kube: list[Path] = field(default_factory=list)
    dataplane: list[Path] = field(default_factory=list)
    agents: list[Path] = field(default_factory=list)  # agent-<node>.json: when the agent ran, what it lost
    empty: int = 0  # empty files skipped (a segment opened but never written)
    unfinished: list[Path] = field(default_factory=list)  # .parquet.part: also in ``events``, reported

    @property
    def nodes(self) -> list[str]:
        return sorted(self.events)


def scan_log_dir(path: str | Path) -> LogDir:
    """Classify the files directly in ``path`` (an agent's ``--log-dir`` or one node of a collection)."""
    d = Path(path)
    out = LogDir(d)
    for seg in list_segments(d):
        hit = classify_log_file(seg.name)
        if hit is None or hit[0] != "events" or superseded(seg):
            continue
        if seg.stat().st_size == 0:
            out.empty += 1
            continue
        out.events.setdefault(hit[1], []).append(seg)
    for part in list_parts(d):
        hit = classify_log_file(part.name.removesuffix(PART) + PARQUET)
        if hit is not None and hit[0] == "events" and hit[1] in out.events:  # the node has readable segments
            out.unfinished.append(part)
            out.events[hit[1]].append(part)
    for p in sorted(d.iterdir()):
        hit = classify_log_file(p.name)
        if hit is None or hit[0] not in ("kube", "dataplane", "agent") or not p.is_file():
            continue
        if p.stat().st_size == 0:
            out.empty += 1
        elif hit[0] == "agent":
            out.agents.append(p)
        elif hit[0] == "kube":
            out.kube.append(p)
        else:
            out.dataplane.append(p)
    return out


def find_log_dirs(path: str | Path) -> list[LogDir]:
    """``path`` itself when it holds log files, else each sub-directory that does (a collection)."""
    d = Path(path)
    own = scan_log_dir(d)
    found = [own] if (own.events or own.kube or own.dataplane) else []
    for sub in sorted(p for p in d.iterdir() if p.is_dir()):
        inner = scan_log_dir(sub)
        if inner.events or inner.kube or inner.dataplane:
            found.append(inner)
    return found


__all__ = [
    "LogDir",
    "find_log_dirs",
    "scan_log_dir",
]
