"""What the live correlator remembers: recent packet events, the Kubernetes timeline, dataplane records.

Everything is bounded in count and in age. Packet events are kept as packet tables (a deque of
frames, small poll batches merged into chunks), not one object per event: ``max_packets`` rows at
about 60 bytes each. Rows dropped by the count bound before their age are counted (``evicted_packets``).
Watch events are folded as they arrive into one :class:`~auditor.sources.kube_timeline.KubeTimeline`
(the class the offline reader uses): a pod is a few hundred bytes of facts however many versions of it
were seen, so an episode of a pod created hours ago still has its spec, and the EndpointSlices keep
their current state. Endpoint changes and Events older than the window are trimmed (and by count,
``max_kube``, counted in ``evicted_kube``); a pod is forgotten once its episode is audited.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

from auditor.agent.frames import as_packet_frame, concat_packet_frames
from auditor.model.dataplane import DataplaneRecord
from auditor.model.kube import WatchEvent
from auditor.model.packet import PacketEvent
from auditor.sources.kube_timeline import KubeTimeline

if TYPE_CHECKING:
    import pandas as pd

MERGE_FRAMES = 64  # poll batches kept apart before they are merged into one chunk
MERGE_ROWS = 32_768


class Window:
    """Bounded memory of recent inputs (not thread-safe: the correlator locks around it)."""

    def __init__(self, window_s: float = 600.0, max_packets: int = 500_000, max_kube: int = 200_000) -> None:
        self.window_ns = int(window_s * 1e9)
        self.max_packets, self.max_kube = max_packets, max_kube
        self.chunks: deque[pd.DataFrame] = deque()  # merged packet tables, oldest first
        self._tail: list[pd.DataFrame] = []  # recent poll batches, not merged yet
        self._tail_rows = 0
        self.packet_rows = 0
        self.kube = KubeTimeline()
        self.dataplane: deque[DataplaneRecord] = deque()
        self.evicted_packets = 0  # trimmed by count before their age: the window was too small
        self.evicted_kube = 0  # endpoint changes and Events trimmed by count before their age

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

    def add_kube(self, event: WatchEvent) -> None:
        self.kube.apply(event)
        rows = self.kube.endpoint_rows
        if len(rows) > self.max_kube:
            drop = len(rows) - self.max_kube // 2  # by halves: not a list copy per event
            del rows[:drop]
            self.evicted_kube += drop
        if len(self.kube.event_rows) > self.max_kube:
            keep = self.kube.event_rows[len(self.kube.event_rows) - self.max_kube // 2 :]
            self.evicted_kube += len(self.kube.event_rows) - len(keep)
            self.kube.event_rows = keep
            self.kube.event_keys = {k for r in keep if isinstance(k := r.get("_key"), tuple)}

    def add_dataplane(self, record: DataplaneRecord) -> None:
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
        self.kube.trim(cut)
        while self.dataplane and self.dataplane[0].time_ns < cut:
            self.dataplane.popleft()

    def forget_pod(self, uid: str) -> None:
        self.kube.forget_pod(uid)

    # -- what one episode needs --------------------------------------------------------------------
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

    def dataplane_for(self, ips: set[str], since_ns: int) -> list[DataplaneRecord]:
        return [r for r in self.dataplane if r.time_ns >= since_ns and r.ip in ips]
