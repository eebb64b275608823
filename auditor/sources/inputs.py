"""The one loader: every input of an audit read into :class:`~auditor.model.audit.AuditInputs`.

Used by ``auditor analyze``, ``auditor record`` (the analysis at the end of a session) and the notebook
API (:func:`auditor.analyze`). User errors (a missing file, a file with nothing readable) raise a
one-line :class:`~auditor.errors.AuditorError`; partial damage (unparsable lines, truncated captures,
skipped kinds) is kept as the inputs' ``problems`` and shown in every report.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

from auditor.model.audit import AuditInputs
from auditor.model.kube import KubeInput

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
) -> AuditInputs:
    """Read captures and event files (``[NODE=]FILE``; pcap/pcapng, Parquet/JSONL/CSV by suffix), the
    Kubernetes watch streams (or an already read :class:`KubeInput`), dataplane records and the load
    client's result. ``events``: a packet table already in memory, added to the files' events."""
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

        result = read_client_result(os.fspath(client))
    return AuditInputs(packets=packets, kube=k, dataplane=table, client=result, problems=problems, info=info)


def _concat_packets(a: pd.DataFrame, b: pd.DataFrame) -> pd.DataFrame:
    """Two packet tables as one, text columns categorical again."""
    import pandas as pd

    from auditor.model.packet import normalize_packet_frame

    if a.empty:
        return normalize_packet_frame(b)
    return normalize_packet_frame(pd.concat([a, b], ignore_index=True))
