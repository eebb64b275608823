"""Packet sources the agent polls: the eBPF probes, or anything with the same small interface."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from auditor.model.packet import PacketEvent

if TYPE_CHECKING:
    import pandas as pd


class PacketSource(Protocol):
    """What the agent needs from a packet source (tests use fakes).

    A source may also offer ``poll_frame(timeout_ms) -> pandas.DataFrame`` (the packet table of one
    poll): the agent then uses it instead of :meth:`poll` (the batch path, no object per event), and
    ``resync_clock() -> int | None`` (re-measure the clock offset it stamps events with, return the
    correction in ns): the agent calls it every ``AgentConfig.clock_resync_s``.
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

    def __init__(self, node: str, pod_cidrs: tuple[str, ...] = ()) -> None:
        from auditor.agent.listeners import NetnsAddressBook
        from auditor.sources.live import ProbeConfig, ProbeSet

        self.listeners = NetnsAddressBook()
        self.probes = ProbeSet(ProbeConfig(pod_cidrs=pod_cidrs, node=node))
        self._last_counters: dict[str, dict[str, int]] = {}
        self._started = False

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

    def lost(self) -> dict[str, int]:
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
        if self._started:
            self._last_counters = self.probes.counters()
            self._started = False
        self.probes.close()
