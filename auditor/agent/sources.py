"""Packet sources the agent polls: the eBPF probes, a packet capture where they cannot load, or
anything with the same small interface."""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any, Protocol

from auditor.errors import AuditorError
from auditor.model.counts import CountRecord
from auditor.model.packet import PacketEvent

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger("auditor.agent")

SOURCE_CHOICES = ("auto", "ebpf", "capture")
NO_REASONS = (
    "packet capture (no eBPF): refusals, resets and unreachables are recorded as on the wire, without the "
    "kernel's reasons (reset reason, drop reason, socket state)"
)


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
        self._last_skipped: dict[str, int] = {}  # per tracepoint: runs the kernel skipped (last read)
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
        """Events the kernel could not aggregate (its map was full, or it skipped the probe's run: see
        ``ProbeSet.skipped_runs``), as of the last counters read."""
        return sum(c.get("uncounted", 0) + c.get("skipped", 0) for c in self._last_counters.values())

    def detach(self) -> None:
        with self._lock:
            if self._started:
                self.probes.detach()

    def lost(self) -> dict[str, int]:
        with self._lock:  # not while close() tears the maps down
            if self._started:
                self._last_counters = self.probes.counters()
                self._last_skipped = self.probes.skipped_runs()
        # a run of the probe the kernel skipped (another tracing program was running on that CPU) is an
        # event of that kind that reached neither the log nor the aggregates
        out = {kind: c["lost"] + c.get("skipped", 0) for kind, c in self._last_counters.items()}
        out["perf_buffer"] = self.probes.perf_lost
        out["decode"] = self.probes.decode_errors
        return out

    def notes(self) -> dict[str, Any]:
        return {
            "output": self.probes.output,
            "attached": list(self.probes.attached),
            "raw_tracepoints": list(self.probes.raw_attached),  # of those, attached raw (own guard)
            "disabled": dict(self.probes.disabled),
            "kernel": self._last_counters,
            # every probe's runs the kernel skipped (another tracing program ran on that CPU); for the
            # filtered ones (inet_sock_set_state, icmp_send, kfree_skb) most were no event of ours
            "skipped_runs": self._last_skipped,
            "listen_close": {"resolved": self.listeners.resolved, "unresolved": self.listeners.unresolved},
        }

    def close(self) -> None:
        with self._lock:
            if self._started:
                self.probes.detach()  # nothing counts after the last read
                self._final_counts += self.probes.read_counts(final=True)
                self._last_counters = self.probes.counters()
                self._last_skipped = self.probes.skipped_runs()
                self._started = False
            self.probes.close()


class CaptureSource:
    """A libpcap capture (:mod:`auditor.sources.pcaplive`) as a :class:`PacketSource`: for nodes where
    the eBPF probes cannot load. Its losses are the kernel's drops of matching packets (ring full)."""

    name = "capture"

    def __init__(
        self, node: str, interface: str = "any", netns: str | None = None, buffer_mb: int = 32
    ) -> None:
        from auditor.sources.pcaplive import LiveCapture
        from auditor.sources.pcaplive.live import LiveDecoder

        self.interface, self.netns = interface, netns
        self.capture = LiveCapture(interface, node, buffer_mb=buffer_mb, netns=netns)
        self.decoder = LiveDecoder(self.capture, node, interface)
        self.fallback_reason = ""  # why the probes were not used (auto)
        self._stats = (0, 0, 0)
        self._lock = threading.Lock()
        self._open = True

    def start(self) -> None:
        pass  # capturing since it was opened; the ring holds what arrived meanwhile

    def poll_frame(self, timeout_ms: int) -> pd.DataFrame:
        return self.decoder.poll_frame(timeout_ms)

    def poll(self, timeout_ms: int) -> list[PacketEvent]:
        from auditor.agent.frames import frame_events

        return frame_events(self.poll_frame(timeout_ms))

    def lost(self) -> dict[str, int]:
        with self._lock:
            if self._open:
                self._stats = self.capture.stats()
        return {"capture_kernel_drop": self._stats[1], "decode": self.decoder.malformed()}

    def notes(self) -> dict[str, Any]:
        recv, drop, ifdrop = self._stats
        return {
            "engine": self.capture.name,
            "interface": self.interface,
            "netns": self.netns or "own",
            "snaplen": self.capture.snaplen,
            "filter": self.capture.filter,
            "kernel": {"received": recv, "dropped": drop, "if_dropped": ifdrop},
            "kernel_reasons": "absent: " + NO_REASONS,
            "fallback_reason": self.fallback_reason,
        }

    def close(self) -> None:
        with self._lock:
            if self._open:
                self._stats = self.capture.stats()
                self._open = False
                self.capture.close()


class AutoSource:
    """``--source auto``: the probes, started when the agent starts its sources (where ``ebpf`` starts
    them: after the allocator is set up, before the memory budget is measured); if they cannot load,
    the capture in their place, saying why. Everything else is the chosen source's (the agent looks
    up the optional methods after start)."""

    def __init__(
        self, node: str, pod_cidrs: tuple[str, ...], netns: str | None, probe_options: dict[str, Any] | None
    ) -> None:
        self._node, self._pod_cidrs, self._netns, self._probe_options = node, pod_cidrs, netns, probe_options
        self.active: Any = None
        self.name = "ebpf"

    def start(self) -> None:
        probe: ProbeSource | None = None
        try:
            probe = ProbeSource(self._node, self._pod_cidrs, self._probe_options)
            probe.start()
            self.active = probe
            return
        except Exception as exc:  # any failure to load: the capture is the fallback
            reason = f"{type(exc).__name__}: {exc}"
            if probe is not None:
                try:
                    probe.close()
                except Exception as close_exc:
                    log.debug("closing the probes that failed to load: %s", close_exc)
        try:
            src = CaptureSource(self._node, netns=self._netns)
        except AuditorError as exc:  # neither works: say both
            raise AuditorError(
                f"the eBPF probes cannot load ({reason}) and the packet-capture fallback cannot start "
                f"({exc.line()})",
                "auditor agent",
                "run as root on a kernel with BTF (eBPF), or give the agent CAP_NET_RAW and libpcap (capture)",
            ) from None
        src.fallback_reason = reason
        log.warning(
            "the eBPF probes cannot load (%s): falling back to packet capture; %s", reason, NO_REASONS
        )
        self.active, self.name = src, src.name

    def __getattr__(self, attr: str) -> Any:  # poll_frame, read_counts, resync_clock...: the active one's
        active = self.__dict__.get("active")
        if active is None or attr.startswith("__"):
            raise AttributeError(attr)
        return getattr(active, attr)

    def poll(self, timeout_ms: int) -> list[PacketEvent]:
        events: list[PacketEvent] = self.active.poll(timeout_ms)
        return events

    def lost(self) -> dict[str, int]:
        return dict(self.active.lost()) if self.active is not None else {}

    def notes(self) -> dict[str, Any]:
        return dict(self.active.notes()) if self.active is not None else {"started": False}

    def close(self) -> None:
        if self.active is not None:
            self.active.close()


def open_packet_source(
    choice: str,
    node: str,
    pod_cidrs: tuple[str, ...] = (),
    netns: str | None = None,
    probe_options: dict[str, Any] | None = None,
) -> PacketSource:
    """The agent's packet source: ``ebpf`` (the probes), ``capture`` (libpcap on every interface of
    ``netns``, default: this one), or ``auto`` (:class:`AutoSource`: the probes, the capture when they
    cannot load)."""
    if choice == "capture":
        src = CaptureSource(node, netns=netns)
        log.warning("packet source: capture, as asked: %s", NO_REASONS)
        return src
    if choice == "ebpf":
        return ProbeSource(node, pod_cidrs, probe_options)
    return AutoSource(node, pod_cidrs, netns, probe_options)
