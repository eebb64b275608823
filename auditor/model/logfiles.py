"""The agent's log directory: the one place that names its files.

Every file the agent writes (``--log-dir``, ``auditor record --out``) carries the node name::

    events-<node>-<stamp>-<seq>.parquet       finished event segments (parquet mode)
    events-<node>-<stamp>-<seq>.jsonl         the live segment: complete lines, readable at any time
                                              (and the finished segments in jsonl mode)
    events-<node>-<stamp>-<seq>.parquet.part  Parquet being written (no footer yet): never read or served
    kube-<node>-<stamp>.json                  pods, EndpointSlices, Events as a watch stream with observedAt
    dataplane-<node>-<stamp>.jsonl            dataplane rule changes (docs/dataplane-record.md)
    counts-<node>-<stamp>.jsonl               exact event counts per server address, kind and 100 ms bucket,
                                              from the probes' in-kernel aggregates (model/counts.py): complete
                                              where the events' detail was sampled (ring buffer full)
    episodes-<node>.jsonl                     one JSON object per finished termination episode
    agent-<node>.json                         counters: received / written / lost by kind (final at exit)

``<stamp>`` is UTC, sortable and safe in file names (:func:`segment_stamp`), ``<seq>`` four digits (or
more) and never reused in a directory: a restarted agent continues after the highest one it finds
(:func:`last_segment_seq`), so its segments neither overwrite nor repeat the previous run's names.
A collection (``auditor collect --out DIR``) holds one such directory per node, ``DIR/<node>/``, next to
:data:`MANIFEST`. Only names matching :data:`PATTERNS` are *log files*: the agent serves nothing else,
``collect`` writes nothing else, and a ``.parquet.part`` never matches.

Names and patterns only; the one I/O here is listing a directory (and asking whether a twin exists).
"""

from __future__ import annotations

import re
import time
from pathlib import Path

MANIFEST = "collect.json"  # a collection's record of what each ``auditor collect`` run got per node

JSONL, PARQUET, PART = ".jsonl", ".parquet", ".parquet.part"
SEGMENT_SUFFIXES = (PARQUET, JSONL)

_STAMP = r"\d{8}T\d{6}Z"
_NODE_NAME = r"[A-Za-z0-9][A-Za-z0-9._-]*"
_NODE = rf"(?P<node>{_NODE_NAME})"
PATTERNS: dict[str, re.Pattern[str]] = {
    "events": re.compile(rf"events-{_NODE}-{_STAMP}-\d+\.(?:parquet|jsonl)"),
    "kube": re.compile(rf"kube-{_NODE}-{_STAMP}\.json"),
    "dataplane": re.compile(rf"dataplane-{_NODE}-{_STAMP}\.jsonl"),
    "counts": re.compile(rf"counts-{_NODE}-{_STAMP}\.jsonl"),
    "episodes": re.compile(rf"episodes-{_NODE}\.jsonl"),
    "agent": re.compile(rf"agent-{_NODE}\.json"),
}
# appended line by line, so the last line may be half-written: served up to the last newline
# (agent-<node>.json is rewritten whole, and Parquet segments are finished, so they are served as is)
APPENDED_KINDS = ("events", "kube", "dataplane", "counts", "episodes")
LINE_SUFFIXES = (JSONL, ".json")


# -- names ---------------------------------------------------------------------------------------------
def segment_stamp(now_s: float) -> str:
    """``20260101T120000Z``: UTC, sortable, safe in file names."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now_s))


def segment_base(node: str, stamp: str, seq: int) -> str:
    """An event segment's name without its suffix (add :data:`JSONL`, :data:`PARQUET` or :data:`PART`)."""
    return f"events-{node}-{stamp}-{seq:04d}"


def kube_stream_name(node: str, stamp: str) -> str:
    return f"kube-{node}-{stamp}.json"


def dataplane_name(node: str, stamp: str) -> str:
    return f"dataplane-{node}-{stamp}.jsonl"


def counts_name(node: str, stamp: str) -> str:
    return f"counts-{node}-{stamp}.jsonl"


def episodes_name(node: str) -> str:
    return f"episodes-{node}.jsonl"


def summary_name(node: str) -> str:
    return f"agent-{node}.json"


# -- classifying -------------------------------------------------------------------------------------
def classify_log_file(name: str) -> tuple[str, str] | None:
    """``events-node-a-20260101T120000Z-0001.jsonl`` -> ("events", "node-a"); anything else -> None."""
    if "/" in name or "\\" in name or name.startswith("."):
        return None
    for kind, pattern in PATTERNS.items():
        m = pattern.fullmatch(name)
        if m is not None:
            return kind, m.group("node")
    return None


def is_appended(name: str) -> bool:
    """A log file that grows by whole lines while the agent runs."""
    hit = classify_log_file(name)
    return hit is not None and hit[0] in APPENDED_KINDS and name.endswith(LINE_SUFFIXES)


def safe_node_dir(node: str) -> bool:
    """A node name usable as one directory component (Kubernetes node names always are)."""
    return bool(re.fullmatch(_NODE_NAME, node)) and node not in (".", "..")


def superseded(path: Path) -> bool:
    """A JSONL event segment whose finished Parquet twin is next to it (the agent rotated it after it
    was copied): the Parquet file holds every row, so reading both would count them twice."""
    return path.name.startswith("events-") and path.suffix == JSONL and path.with_suffix(PARQUET).exists()


def last_segment_seq(directory: str | Path, node: str) -> int:
    """The highest ``<seq>`` of ``node``'s event segments in ``directory`` (finished, live or ``.part``);
    0 when there are none."""
    pattern = re.compile(rf"events-{re.escape(node)}-{_STAMP}-(\d+)(?:\.parquet|\.jsonl|\.parquet\.part)")
    best = 0
    for path in _glob(directory, "events", node, ""):
        m = pattern.fullmatch(path.name)
        if m is not None:
            best = max(best, int(m.group(1)))
    return best


# -- listing -----------------------------------------------------------------------------------------
def _glob(directory: str | Path, prefix: str, node: str | None, suffix: str) -> list[Path]:
    pattern = f"{prefix}-{node}-*{suffix}" if node else f"{prefix}-*{suffix}"
    return list(Path(directory).glob(pattern))


def list_segments(directory: str | Path, node: str | None = None) -> list[Path]:
    """Finished and live event segments (of ``node``, or of every node), oldest first; ``.part`` excluded."""
    files = [p for suffix in SEGMENT_SUFFIXES for p in _glob(directory, "events", node, suffix)]
    return sorted(files, key=lambda p: p.name)


def list_parts(directory: str | Path) -> list[Path]:
    """Parquet segments still being written (or left by a crash), by name."""
    return sorted(_glob(directory, "events", None, PART), key=lambda p: p.name)


def list_kube_streams(directory: str | Path, node: str | None = None) -> list[Path]:
    """``kube-<node>-<stamp>.json`` files, by name."""
    return sorted(_glob(directory, "kube", node, ".json"), key=lambda p: p.name)


def list_dataplane_records(directory: str | Path, node: str | None = None) -> list[Path]:
    """``dataplane-<node>-<stamp>.jsonl`` files, by name."""
    return sorted(_glob(directory, "dataplane", node, JSONL), key=lambda p: p.name)


def list_counts(directory: str | Path, node: str | None = None) -> list[Path]:
    """``counts-<node>-<stamp>.jsonl`` files, by name."""
    return sorted(_glob(directory, "counts", node, JSONL), key=lambda p: p.name)


__all__ = [
    "APPENDED_KINDS",
    "JSONL",
    "LINE_SUFFIXES",
    "MANIFEST",
    "PARQUET",
    "PART",
    "PATTERNS",
    "SEGMENT_SUFFIXES",
    "classify_log_file",
    "counts_name",
    "dataplane_name",
    "episodes_name",
    "is_appended",
    "kube_stream_name",
    "last_segment_seq",
    "list_counts",
    "list_dataplane_records",
    "list_kube_streams",
    "list_parts",
    "list_segments",
    "safe_node_dir",
    "segment_base",
    "segment_stamp",
    "summary_name",
    "superseded",
]
