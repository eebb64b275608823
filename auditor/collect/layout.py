"""Names of the files in an agent's log directory, and what ``analyze --dir`` reads from a directory.

Every file the agent writes carries the node name (``auditor/commands/agent.py``)::

    events-<node>-<stamp>-<seq>.parquet|jsonl   event segments (the .jsonl live one is readable)
    kube-<node>-<stamp>.json                    Kubernetes watch stream with observedAt
    dataplane-<node>-<stamp>.jsonl              dataplane rule changes
    episodes-<node>.jsonl                       finished termination episodes
    agent-<node>.json                           the agent's counters

Only names matching these patterns are *log files*: the agent serves nothing else, ``collect`` writes
nothing else, and ``.parquet.part`` (a Parquet file without its footer) never matches.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

_STAMP = r"\d{8}T\d{6}Z"
_NODE = r"(?P<node>[A-Za-z0-9][A-Za-z0-9._-]*)"
PATTERNS: dict[str, re.Pattern[str]] = {
    "events": re.compile(rf"events-{_NODE}-{_STAMP}-\d+\.(?:parquet|jsonl)"),
    "kube": re.compile(rf"kube-{_NODE}-{_STAMP}\.json"),
    "dataplane": re.compile(rf"dataplane-{_NODE}-{_STAMP}\.jsonl"),
    "episodes": re.compile(rf"episodes-{_NODE}\.jsonl"),
    "agent": re.compile(rf"agent-{_NODE}\.json"),
}
# appended line by line, so the last line may be half-written: served up to the last newline
# (agent-<node>.json is rewritten whole, and Parquet segments are finished, so they are served as is)
APPENDED_KINDS = ("events", "kube", "dataplane", "episodes")
LINE_SUFFIXES = (".jsonl", ".json")


def is_appended(name: str) -> bool:
    """A log file that grows by whole lines while the agent runs."""
    hit = classify_log_file(name)
    return hit is not None and hit[0] in APPENDED_KINDS and name.endswith(LINE_SUFFIXES)


MANIFEST = "collect.json"


def classify_log_file(name: str) -> tuple[str, str] | None:
    """``events-node-a-20260101T120000Z-0001.jsonl`` -> ("events", "node-a"); anything else -> None."""
    if "/" in name or "\\" in name or name.startswith("."):
        return None
    for kind, pattern in PATTERNS.items():
        m = pattern.fullmatch(name)
        if m is not None:
            return kind, m.group("node")
    return None


def safe_node_dir(node: str) -> bool:
    """A node name usable as one directory component (Kubernetes node names always are)."""
    return bool(re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", node)) and node not in (".", "..")


@dataclass
class LogDir:
    """The analyzable files of one log directory, by node (taken from the file names)."""

    path: Path
    events: dict[str, list[Path]] = field(default_factory=dict)
    kube: list[Path] = field(default_factory=list)
    dataplane: list[Path] = field(default_factory=list)
    empty: int = 0  # empty files skipped (a segment opened but never written)

    @property
    def nodes(self) -> list[str]:
        return sorted(self.events)


def superseded(path: Path) -> bool:
    """A JSONL event segment whose finished Parquet twin is next to it (the agent rotated it after it
    was copied): the Parquet file holds every row, so reading both would count them twice."""
    return (
        path.name.startswith("events-") and path.suffix == ".jsonl" and path.with_suffix(".parquet").exists()
    )


def scan_log_dir(path: str | Path) -> LogDir:
    """Classify the files directly in ``path`` (an agent's ``--log-dir`` or one node of a collection)."""
    from auditor.sinks.eventlog import list_segments

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
    for p in sorted(d.iterdir()):
        hit = classify_log_file(p.name)
        if hit is None or hit[0] not in ("kube", "dataplane") or not p.is_file():
            continue
        if p.stat().st_size == 0:
            out.empty += 1
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
    "APPENDED_KINDS",
    "LINE_SUFFIXES",
    "MANIFEST",
    "PATTERNS",
    "LogDir",
    "classify_log_file",
    "find_log_dirs",
    "is_appended",
    "safe_node_dir",
    "scan_log_dir",
    "superseded",
]
