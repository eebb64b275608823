"""Packet sources the agent polls: the eBPF probes, or anything with the same small interface."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any, Protocol

from auditor.model.counts import CountRecord
from auditor.model.packet import PacketEvent

if TYPE_CHECKING:
    import pandas as pd


class PacketSource(Protocol):
    """What the agent needs from a packet source (tests use fakes).

    A source may also offer ``poll_frame(timeout_ms) -> pandas.DataFrame`` (the packet table of one
    poll): the agent then uses it instead of :meth:`poll` (the batch path, no object per event), and
    ``resync_clock() -> int | None`` (re-measure the clock offset it stamps events with, return the
    correction in ns): the agent calls it every ``AgentConfig.clock_resync_s``;
    ``read_counts(final: bool) -> list[CountRecord]`` (exact counts: the finished buckets of its
    aggregates, each once; the agent's counts thread calls it every ``counts_interval_s``, and once more
    after :meth:`close`, which must keep what was left for it) with ``uncounted() -> int`` (events it
    could not aggregate); ``detach() -> None`` (stop producing; what is buffered can still be
    polled): the poll loop calls it before its last drain; and ``set_poll_limit(records: int)`` (at most
    that many events per poll): the agent's memory budget sets it.
    """

    name: str

    def start(self) -> None: ...

    def poll(self, timeout_ms: int) -> list[PacketEvent]:
        """Events that arrived within ``timeout_ms`` (empty list if none)."""
        ...

    def lost(self) -> dict[str, int]:
        """Running totals of events lost before they reached :meth:`poll`, by kind or stage."""
        ...

    def notes(self) -> dict[str, Any]:
        """Anything worth keeping in the agent summary (disabled signals, output channel...)."""
        ...

    def close(self) -> None: ...


class ProbeSource:
    """:class:`auditor.sources.live.ProbeSet` as a :class:`PacketSource`; wildcard ``listen_close``
    addresses are named by their namespace's addresses (:mod:`auditor.agent.listeners`)."""

    name = "ebpf"

    def __init__(
        self, node: str, pod_cidrs: tuple[str, ...] = (), probe_options: dict[str, Any] | None = None
    ) -> None:
        """``probe_options``: more :class:`~auditor.sources.live.ProbeConfig` fields (ring buffer size...)."""
        from auditor.agent.listeners import NetnsAddressBook
        from auditor.sources.live import ProbeConfig, ProbeSet

        self.listeners = NetnsAddressBook()
        self.probes = ProbeSet(ProbeConfig(pod_cidrs=pod_cidrs, node=node, **(probe_options or {})))
        self._last_counters: dict[str, dict[str, int]] = {}
        self._started = False
        self._lock = threading.Lock()  # read_counts (counts thread) vs close (poll thread)
        self._final_counts: list[CountRecord] = []  # what close() read last, for the next read_counts

    def start(self) -> None:
        self.probes.start()
        self._started = True

    def poll(self, timeout_ms: int) -> list[PacketEvent]:
        return self.listeners.resolve(self.probes.poll(timeout_ms))

    def poll_frame(self, timeout_ms: int) -> pd.DataFrame:
        """The events of one poll as the packet table, decoded in one batch."""
        return self.listeners.resolve_frame(self.probes.poll_frame(timeout_ms))

    def resync_clock(self) -> int:
        """Re-measure the kernel -> wall clock offset of the probes; the correction in ns."""
        return self.probes.resync_clock()

    def read_counts(self, final: bool = False) -> list[CountRecord]:
        """Finished buckets of the probes' aggregates (every one with ``final``); after close(), what it
        read last (once)."""
        with self._lock:
            if not self._started:
                out, self._final_counts = self._final_counts, []
                return out
            return self.probes.read_counts(final)

    def set_poll_limit(self, records: int) -> None:
        """At most ``records`` events per poll (the agent's memory budget decides)."""
        self.probes.set_poll_limit(records)

    def uncounted(self) -> int:
        """Events the kernel could not aggregate (its map was full), as of the last counters read."""
        return sum(c.get("uncounted", 0) for c in self._last_counters.values())

    def detach(self) -> None:
        with self._lock:
            if self._started:
                self.probes.detach()

    def lost(self) -> dict[str, int]:
        with self._lock:  # not while close() tears the maps down
            if self._started:
                self._last_counters = self.probes.counters()
        out = {kind: c["lost"] for kind, c in self._last_counters.items()}
        out["perf_buffer"] = self.probes.perf_lost
        out["decode"] = self.probes.decode_errors
        return out

    def notes(self) -> dict[str, Any]:
        return {
            "output": self.probes.output,
            "attached": list(self.probes.attached),
            "disabled": dict(self.probes.disabled),
            "kernel": self._last_counters,
            "listen_close": {"resolved": self.listeners.resolved, "unresolved": self.listeners.unresolved},
        }

    def close(self) -> None:
        with self._lock:
            if self._started:
                self.probes.detach()  # nothing counts after the last read
                self._final_counts += self.probes.read_counts(final=True)
                self._last_counters = self.probes.counters()
                self._started = False
            self.probes.close()
