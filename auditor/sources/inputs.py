"""The one loader: every input of an audit read into :class:`~auditor.model.audit.AuditInputs`.

Used by ``auditor analyze``, ``auditor record`` (the analysis at the end of a session) and the notebook
API (:func:`auditor.analyze`). User errors (a missing file, a file with nothing readable) raise a
one-line :class:`~auditor.errors.AuditorError`; partial damage (unparsable lines, truncated captures,
skipped kinds) is kept as the inputs' ``problems`` and shown in every report.
"""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from auditor.model.audit import AuditInputs, Coverage
from auditor.model.kube import KubeInput, format_time_ns, parse_time_ns

if TYPE_CHECKING:
    import pandas as pd

PathLike = str | os.PathLike[str]


def load_inputs(
    captures: Sequence[PathLike] = (),
    kube: Sequence[PathLike] | KubeInput = (),
    dataplane: Sequence[PathLike] = (),
    client: PathLike | None = None,
    node: str | None = None,
    events: pd.DataFrame | None = None,
    agents: Sequence[PathLike] = (),
    client_format: str | None = None,
    client_start: datetime | None = None,
) -> AuditInputs:
    """Read captures and event files (``[NODE=]FILE``; pcap/pcapng, Parquet/JSONL/CSV by suffix), the
    Kubernetes watch streams (or an already read :class:`KubeInput`), dataplane records and the load
    client's result. ``events``: a packet table already in memory, added to the files' events;
    ``agents``: node agents' summaries (``agent-<node>.json``): when each agent ran and what it lost;
    ``client_format``: the client file's format (one of ``CLIENT_FORMATS``; default: detected);
    ``client_start``: when the client run started, for hey's outputs (they carry no time)."""
    from auditor.sources.packet_inputs import read_packet_inputs

    if captures:
        packets, info = read_packet_inputs(list(captures), node)
    else:
        from auditor.model.packet import packet_frame

        packets, info = packet_frame(), {}
    problems: list[str] = [str(p) for p in info.pop("problems", [])]
    if events is not None:
        packets = _concat_packets(packets, events)

    if isinstance(kube, KubeInput):
        k = kube
    else:
        from auditor.sources.kube_stream import read_kube_streams

        k = read_kube_streams([os.fspath(p) for p in kube])
    info["kube_events_read"] = k.events_read
    info["kube_events_skipped"] = k.events_skipped
    if k.skipped_kinds:
        info["kube_skipped_kinds"] = dict(sorted(k.skipped_kinds.items()))
    problems += [str(p) for p in k.problems]

    table = None
    if dataplane:
        from auditor.sources.dataplane_file import read_dataplane

        d = read_dataplane([os.fspath(p) for p in dataplane])
        table = d.table
        info["dataplane_records"] = len(table)
        problems += [str(p) for p in d.problems]
    result = None
    if client is not None:
        from auditor.sources.client_result import read_client_result

        result = read_client_result(os.fspath(client), client_format, start=client_start)
        problems += [f"{result.file}: {w}" for w in result.warnings]
    coverage = capture_coverage(packets, info.get("captures", []))
    for path in agents:
        spans, problem = agent_coverage(Path(path))
        coverage += spans
        if problem:
            problems.append(problem)
        for before, after in itertools.pairwise(spans):
            if after.start_ns > before.end_ns:
                info.setdefault("agent_down", []).append({
                    "node": before.node, "from": format_time_ns(before.end_ns), "to": format_time_ns(after.start_ns),
                })  # fmt: skip
                problems.append(f"{before.node}: the agent was down from {format_time_ns(before.end_ns)} to "
                                f"{format_time_ns(after.start_ns)}: nothing was recorded then")  # fmt: skip
    return AuditInputs(
        packets=packets, kube=k, dataplane=table, client=result, problems=problems, info=info, coverage=coverage
    )


def capture_coverage(packets: pd.DataFrame, captures: list[dict[str, Any]]) -> list[Coverage]:
    """Per capture file, from its first to its last packet event (a file that ends mid-record says so)."""
    if packets.empty or not captures:
        return []
    pcap = packets.loc[packets["source"].astype(str) == "pcap", ["time", "node", "file"]]
    if pcap.empty:
        return []
    t = pcap["time"].to_numpy(dtype="datetime64[ns]").astype("int64")
    frame = pd_frame({"node": pcap["node"].astype(str).to_numpy(), "file": pcap["file"].astype(str).to_numpy(), "t": t})
    truncated = {(str(c["node"]), Path(str(c["file"])).name) for c in captures if c.get("truncated")}
    dropped = {(str(c["node"]), Path(str(c["file"])).name): int(c.get("dropped") or 0) for c in captures}
    out = []
    for (node, file), g in frame.groupby(["node", "file"], sort=True):
        key = (str(node), str(file))
        out.append(Coverage(key[0], "capture", int(g["t"].min()), int(g["t"].max()), key[1],
                            lost=dropped.get(key, 0), truncated=key in truncated))  # fmt: skip
    return out


def agent_coverage(path: Path) -> tuple[list[Coverage], str | None]:
    """When a node agent ran and what it lost: one span per run its summary (``agent-<node>.json``)
    records (``previous_runs``, then the current one). Between one run's ``updated_at`` and the next
    one's ``started_at`` the agent was down: nothing covers that gap."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(doc, dict) or not {"node", "started_at", "updated_at"} <= doc.keys():
            return [], None  # an older or partial summary: no run times, so no coverage from it
        node = str(doc["node"])
        runs = [r for r in doc.get("previous_runs") or [] if isinstance(r, dict)]
        current = {"started_at": doc["started_at"], "updated_at": doc["updated_at"],
                   "lost": sum(int(v) for v in (doc.get("lost") or {}).values())}  # fmt: skip
        spans: list[Coverage] = []
        for run in [*runs, current]:
            start, end = parse_time_ns(str(run["started_at"]))[0], parse_time_ns(str(run["updated_at"]))[0]
            span = Coverage(node, "agent", start, end, path.name, lost=int(run.get("lost") or 0))
            if span not in spans:
                spans.append(span)
    except (OSError, ValueError, TypeError, AttributeError, KeyError) as exc:
        return [], f"{path}: unreadable agent summary ({type(exc).__name__}); its coverage is unknown"
    return spans, None
def pd_frame(columns: dict[str, Any]) -> pd.DataFrame:
    import pandas as pd

    return pd.DataFrame(columns)


def _concat_packets(a: pd.DataFrame, b: pd.DataFrame) -> pd.DataFrame:
    """Two packet tables as one, text columns categorical again."""
    import pandas as pd

    from auditor.model.packet import normalize_packet_frame

    if a.empty:
        return normalize_packet_frame(b)
    return normalize_packet_frame(pd.concat([a, b], ignore_index=True))
