"""What the live correlator remembers: recent packet events, recent watch events, dataplane records.

Everything is bounded in count and in age. Packet events are kept as packet tables (a deque of
frames, small poll batches merged into chunks), not one object per event: ``max_packets`` rows at
about 60 bytes each. Rows dropped by the count bound before their age are counted (``evicted_packets``). Watch events that age out are not forgotten entirely: the
last version of every live pod and EndpointSlice stays as its *base*, so an episode of a pod created
hours ago still sees the pod's spec and the slice state before the window.
"""

from __future__ import annotations

import json
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from auditor.agent.frames import as_packet_frame, concat_packet_frames
from auditor.model.kube import format_time_ns
from auditor.model.packet import PacketEvent

if TYPE_CHECKING:
    import pandas as pd

MERGE_FRAMES = 64  # poll batches kept apart before they are merged into one chunk
MERGE_ROWS = 32_768


@dataclass(frozen=True, slots=True)
class KubeItem:
    """One watch event as the correlator keeps it."""

    kind: str  # "Pod" | "EndpointSlice" | ...
    type: str
    obj: dict[str, Any]
    observed_ns: int
    relisted: bool = False  # learnt by a relist: observed_ns only bounds when it happened

    @property
    def key(self) -> str:
        meta = self.obj.get("metadata") or {}
        if self.kind == "Pod":
            return str(meta.get("uid") or "")
        return f"{meta.get('namespace') or ''}/{meta.get('name') or ''}"

    def line(self, type_: str | None = None) -> str:
        doc: dict[str, Any] = {
            "type": type_ or self.type,
            "object": self.obj,
            "observedAt": format_time_ns(self.observed_ns),
        }
        if self.relisted:
            doc["relisted"] = True
        return json.dumps(doc, separators=(",", ":"))


def slice_addresses(obj: dict[str, Any]) -> set[str]:
    out: set[str] = set()
    for ep in obj.get("endpoints") or []:
        if isinstance(ep, dict):
            out.update(str(a) for a in ep.get("addresses") or [])
    return out


class Window:
    """Bounded memory of recent inputs (not thread-safe: the correlator locks around it)."""

    def __init__(self, window_s: float = 600.0, max_packets: int = 500_000, max_kube: int = 200_000) -> None:
        self.window_ns = int(window_s * 1e9)
        self.max_packets, self.max_kube = max_packets, max_kube
        self.chunks: deque[pd.DataFrame] = deque()  # merged packet tables, oldest first
        self._tail: list[pd.DataFrame] = []  # recent poll batches, not merged yet
        self._tail_rows = 0
        self.packet_rows = 0
        self.kube: deque[KubeItem] = deque()
        self.dataplane: deque[Any] = deque()  # DataplaneRecord
        self.base: dict[tuple[str, str], KubeItem] = {}  # (kind, key) -> last version aged out
        # per pod uid, the aged-out versions that matter: first seen, first deleting, last
        self.pod_base: dict[str, dict[str, KubeItem]] = {}
        self.evicted_packets = 0  # trimmed by count before their age: the window was too small

    def add_packets(self, events: pd.DataFrame | list[PacketEvent]) -> None:
        frame = as_packet_frame(events)
        if frame.empty:
            return
        self._tail.append(frame)
        self._tail_rows += len(frame)
        self.packet_rows += len(frame)
        if len(self._tail) >= MERGE_FRAMES or self._tail_rows >= MERGE_ROWS:
            self._merge_tail()
        if self.packet_rows > self.max_packets:
            self.evicted_packets += self.drop_oldest(self.packet_rows - self.max_packets)

    def _merge_tail(self) -> None:
        if self._tail:
            self.chunks.append(concat_packet_frames(self._tail))
            self._tail, self._tail_rows = [], 0

    def drop_oldest(self, rows: int) -> int:
        """Forget the ``rows`` oldest packet events (at least); returns how many went."""
        self._merge_tail()
        dropped = 0
        while self.chunks and dropped < rows:
            first = self.chunks[0]
            if len(first) <= rows - dropped:
                dropped += len(self.chunks.popleft())
            else:
                keep = len(first) - (rows - dropped)
                self.chunks[0] = first.iloc[len(first) - keep :].reset_index(drop=True)
                dropped += len(first) - keep
        self.packet_rows -= dropped
        return dropped

    def packet_frames(self) -> list[pd.DataFrame]:
        """Every packet table held, oldest first."""
        return [*self.chunks, *self._tail]

    def add_kube(self, item: KubeItem) -> None:
        self.kube.append(item)
        while len(self.kube) > self.max_kube:
            self._age_out(self.kube.popleft())

    def add_dataplane(self, record: Any) -> None:
        self.dataplane.append(record)
        while len(self.dataplane) > self.max_kube:
            self.dataplane.popleft()

    def trim(self, now_ns: int) -> None:
        """Forget what is older than the window."""
        cut = now_ns - self.window_ns
        self._merge_tail()
        while self.chunks:
            times = self.chunks[0]["time"].to_numpy(dtype="datetime64[ns]").astype("int64")
            old = int((times < cut).sum())
            if old == 0:
                break
            first = self.chunks.popleft()
            if old < len(first):
                self.chunks.appendleft(first.loc[times >= cut].reset_index(drop=True))
            self.packet_rows -= old
            if old < len(first):
                break
        while self.kube and self.kube[0].observed_ns < cut:
            self._age_out(self.kube.popleft())
        while self.dataplane and self.dataplane[0].time_ns < cut:
            self.dataplane.popleft()

    def _age_out(self, item: KubeItem) -> None:
        key = (item.kind, item.key)
        if item.kind == "Pod":
            if item.type == "DELETED":
                self.pod_base.pop(item.key, None)
                return
            marks = self.pod_base.setdefault(item.key, {"first": item})
            if "deleting" not in marks and (item.obj.get("metadata") or {}).get("deletionTimestamp"):
                marks["deleting"] = item
            marks["last"] = item
            return
        if item.type == "DELETED":
            self.base.pop(key, None)
        else:
            self.base[key] = item

    def forget_pod(self, uid: str) -> None:
        self.pod_base.pop(uid, None)

    def pod_versions(self, uid: str) -> list[KubeItem]:
        """Aged-out milestones then recent events of one pod, oldest first."""
        marks = self.pod_base.get(uid, {})
        kept: list[KubeItem] = []
        for name in ("first", "deleting", "last"):
            it = marks.get(name)
            if it is not None and all(it is not k for k in kept):
                kept.append(it)
        return kept + [it for it in self.kube if it.kind == "Pod" and it.key == uid]

    # -- what one episode needs --------------------------------------------------------------------
    def kube_lines(self, uid: str, ips: set[str]) -> list[str]:
        """The watch stream of one pod and of the EndpointSlices that ever listed its addresses."""
        slices = {
            k
            for (kind, k), it in self.base.items()
            if kind == "EndpointSlice" and slice_addresses(it.obj) & ips
        }
        slices |= {it.key for it in self.kube if it.kind == "EndpointSlice" and slice_addresses(it.obj) & ips}
        marks = self.pod_base.get(uid, {})
        aged = [it for it in self.pod_versions(uid) if any(it is m for m in marks.values())]
        lines = [it.line("ADDED" if i == 0 else "MODIFIED") for i, it in enumerate(aged)]
        for (kind, key), it in self.base.items():
            if kind == "EndpointSlice" and key in slices:
                lines.append(it.line("ADDED"))
        for it in self.kube:
            if (it.kind == "Pod" and it.key == uid) or (it.kind == "EndpointSlice" and it.key in slices):
                lines.append(it.line())
        return lines

    def packets_for(self, ips: set[str], since_ns: int) -> pd.DataFrame:
        """The packet events touching ``ips`` since ``since_ns``, as one packet table."""
        import pandas as pd

        since = pd.Timestamp(since_ns, unit="ns", tz="UTC")
        wanted = list(ips)
        picked = []
        for f in self.packet_frames():
            mask = (f["time"] >= since) & (
                f["dst"].isin(wanted) | f["src"].isin(wanted) | f["reporter"].isin(wanted)
            )
            if mask.any():
                picked.append(f.loc[mask])
        return concat_packet_frames(picked).reset_index(drop=True)

    def dataplane_for(self, ips: set[str], since_ns: int) -> list[Any]:
        return [r for r in self.dataplane if r.time_ns >= since_ns and r.ip in ips]
