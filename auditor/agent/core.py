"""The agent: packet sources -> bounded queue -> writer (event log + live window); kube and dataplane
inputs; episodes audited as they finish; metrics; a bounded, lossless shutdown.

Threads: one poll loop per packet source, the writer, the counts reader, the memory guard, the kube
watcher's, the dataplane watcher's, the metrics HTTP server; the caller's thread runs :meth:`Agent.run`
(episodes, loss counters, summary, and every ``clock_resync_s`` the kernel -> wall clock offsets of the
probes and of the dataplane watcher, re-measured: :mod:`auditor.agent.clocksync`).
On :meth:`Agent.request_stop` (SIGTERM): sources stop and are drained, the writer empties the queue and
finishes the log segment, then ``agent-<node>.json`` records received / written / lost. Every event a
poll loop received is either written or counted as ``queue_full`` (``received == written + dropped``).

Events move in batches: one packet table (pandas) per poll (``poll_frame`` where the source has it),
through a queue bounded in batches and rows, to the event log and the live window (bounded in rows).
Memory (``rss_limit_mb``, the agent and its watch child together): the allocator is set to give freed
memory back (:func:`~auditor.agent.memory.configure_allocator`); after start the buffers are sized from
what the limit leaves above the agent's own size (:meth:`Agent._size_buffers`: the live window's rows,
the queue's bytes); a memory thread samples both processes every ``memory_check_s``
(:class:`~auditor.agent.memory.MemoryGuard`): above 85 % of the limit the window sheds its oldest half
(counted in ``window_evicted_packets`` and ``memory.shed_rows``), above 95 % the poll loops take no
detail until it is back under 85 % (``memory.detail_paused_s``): the kernel's ring buffer drops the
events, counted per kind, while the in-kernel aggregates keep counting them. Detail is a budget, the
counts are not.

Counts are exact whatever detail was lost: the counts thread reads the sources' in-kernel aggregates
every ``counts_interval_s`` (:mod:`auditor.agent.counts`), appends them to ``counts-<node>-<stamp>.jsonl``
and keeps them for the summary (``counts``: events per kind, failures per server address and port,
"detail sampled: X of Y events; counts exact"), the metrics (``events_counted_total``,
``failures_counted_total``) and the episodes: a finished episode is counted from the records of the
pod's addresses (its JSON line's ``counts``, its log line's ``counts=(...)``); where detail was lost,
the failures the detail missed are added to ``connection_failures_total`` with ``cause="detail_lost"``.

Restarted by the kubelet (after a crash, an OOM kill, an upgrade) on the same ``log_dir``, the agent
continues the log (:mod:`auditor.sinks.eventlog`): leftovers settled, files it appends to cut back to
their last whole line, new segments after the old ones, and the previous runs of ``agent-<node>.json``
(when each ran, whether it ended cleanly) kept in its ``previous_runs``: the agent was down from one
run's ``updated_at`` to the next one's ``started_at``.
``/logs`` is served to whom ``logs_auth`` and the reviewer allow (:mod:`auditor.sinks.logauth`).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from auditor.agent.batchqueue import BatchQueue
from auditor.agent.clocksync import ClockResync
from auditor.agent.correlator import LOOKBACK_NS, EpisodeReport, LiveCorrelator
from auditor.agent.counts import CountsFile, CountStore, PodAddresses
from auditor.agent.frames import (
    FRAME_ROW_BYTES,
    as_packet_frame,
    concat_packet_frames,
    frame_bytes,
    kind_counts,
)
from auditor.agent.inputs import DataplaneInput, KubeInput
from auditor.agent.memory import (
    MemoryGuard,
    MemoryState,
    configure_allocator,
    heap_stats,
    process_rss,
    release_unused,
    rss_bytes,
    trim_heap,
)
from auditor.agent.sources import NO_REASONS, PacketSource
from auditor.model.access import node_proxy_permission
from auditor.model.counts import CountRecord
from auditor.model.kube import format_time_ns
from auditor.model.logfiles import (
    counts_name,
    dataplane_name,
    episodes_name,
    kube_stream_name,
    segment_stamp,
    summary_name,
)
from auditor.model.packet import PacketEvent
from auditor.sinks.eventlog import EventLog, seal_line_file
from auditor.sinks.logauth import AccessReviewer, LogsAccess
from auditor.sinks.metrics import AgentMetrics, MetricsServer

log = logging.getLogger("auditor.agent")

_STOP = object()
# memory budget (measured with bench/bench_agent.py and a profile of the episode audit, bench/README.md)
CHILD_ALLOWANCE = 64 << 20  # the watch process: ~46 MB imported, ~60-70 MB watching a cluster
TRANSIENT_RESERVE = 48 << 20  # a poll batch being decoded, a JSON chunk and a Parquet row group being written
WINDOW_ROW_BYTES = 330  # a live-window row: ~85 bytes held, ~240 more while an episode's audit copies it
COUNT_RECORD_BYTES = 300  # an aggregate record kept for the episodes (a slotted object, its address text)
BATCH_RECORD_BYTES = 1024  # a poll's event, decoded, queued and written (the first 32,768: +37 MB)
MAX_POLL_RECORDS = 32_768
MIN_POLL_RECORDS = 1_024
MIN_WINDOW_ROWS = 10_000
MIN_QUEUE_BYTES = 4 << 20
PREVIOUS_RUNS_KEPT = 50  # runs remembered in agent-<node>.json (a crash loop must not grow it forever)


# a capture has no in-kernel aggregates: its counts are the captured packets, its drops counted as lost
CAPTURE_COUNTS: dict[str, Any] = {
    "exact": False,
    "note": "no in-kernel counts: packets by capture, failures counted from the captured packets "
    "(the capture's kernel drops are lost input)",
}


@dataclass
class AgentConfig:
    node: str
    log_dir: Path
    metrics_addr: str | None = ":9808"  # None: no HTTP server
    log_format: str = "parquet"
    rotate_bytes: int = 64 << 20
    rotate_seconds: float = 300.0
    flush_ms: int = 1000
    settle_s: float = 10.0
    window_s: float = 600.0
    queue_batches: int = 4096  # poll batches waiting for the writer
    queue_rows: int = 262_144  # events waiting for the writer (about 60 bytes each)
    window_rows: int = 500_000  # packet events the live window keeps (its age bound: window_s)
    rss_limit_mb: int = 512  # the agent and its watch child together (DaemonSet limit minus headroom); 0: none
    memory_check_s: float = 0.1  # how often the memory guard samples both processes
    queue_bytes: int = 64 << 20  # the queue's byte bound (the memory budget may lower it)
    queue_wait_s: float = 1.0  # a poll loop waits this long for room, then counts the batch lost
    stop_timeout_s: float = 10.0
    dataplane: str = "off"  # off | auto | iptables-nft | iptables-legacy | nftables
    dataplane_netns: str | None = None  # the rules' network namespace (name or path); None: our own
    clock_resync_s: float = 60.0  # re-measure the kernel -> wall clock offsets this often (NTP); 0: never
    clock_drift_log_ms: float = 1.0  # log a resync whose correction exceeds this
    logs_auth: bool = True  # /logs only to bearer tokens the API server allows; False only for labs
    counts_interval_s: float = 0.25  # read the in-kernel aggregates this often (buckets of 100 ms)
    counts_records: int = 50_000  # aggregate records kept for episodes (~300 bytes each; age bound: window_s)
    extra: dict[str, Any] = field(default_factory=dict)  # copied into the summary


class Agent:
    """Build with the inputs, :meth:`start`, :meth:`run` until stopped; :meth:`run` returns the summary."""

    def __init__(
        self,
        config: AgentConfig,
        sources: list[PacketSource],
        kube_client: Any = None,
        metrics: AgentMetrics | None = None,
        on_episode: Callable[[EpisodeReport], None] | None = None,
        log_reviewer: AccessReviewer | None = None,
    ) -> None:
        self.config = config
        self.sources = sources
        self.metrics = metrics or AgentMetrics()
        self.on_episode = on_episode or (lambda r: log.info("%s", r.line))
        self.stop_event = threading.Event()
        self.correlator = LiveCorrelator(
            config.node, settle_s=config.settle_s, window_s=config.window_s, max_packets=config.window_rows
        )
        self.started_ns = time.time_ns()
        self.correlator.started_ns = self.started_ns
        self.correlator.lost_total = lambda: sum(self.lost().values())
        stamp = segment_stamp(self.started_ns / 1e9)
        self.dir = Path(config.log_dir)
        permission = node_proxy_permission(config.node)  # what a reader of /logs must hold
        self.log_access = LogsAccess(log_reviewer, permission, enabled=config.logs_auth)
        self.eventlog = EventLog(
            self.dir, config.node, config.log_format, config.rotate_bytes, config.rotate_seconds
        )
        self.summary_path = self.dir / summary_name(config.node)
        self.episodes_path = self.dir / episodes_name(config.node)
        self.previous_runs = previous_runs(self.summary_path)
        self.counts = CountStore(config.window_s, config.counts_records)
        self.pod_addresses = PodAddresses()
        self.counts_file = CountsFile(self.dir / counts_name(config.node, stamp))
        # files this run appends to: a crash may have left them ending mid-line
        appended = [self.episodes_path, self.dir / kube_stream_name(config.node, stamp),
                    self.dir / dataplane_name(config.node, stamp), self.counts_file.path]  # fmt: skip
        cut = {p.name: n for p in appended if (n := seal_line_file(p))}
        self.recovery = {"removed": self.eventlog.recovered, "cut_bytes": cut}
        if self.eventlog.recovered or cut:
            log.warning("log directory recovered after an unclean stop: %d leftover file(s) removed, "
                        "half-written lines cut %s", self.eventlog.recovered, cut or "none")  # fmt: skip
        self.kube: KubeInput | None = None
        if kube_client is not None:
            path = self.dir / kube_stream_name(config.node, stamp)
            self.kube = KubeInput(kube_client, path, self.correlator, on_pod=self.pod_addresses.observe)
        self.dataplane: DataplaneInput | None = None
        self.dataplane_note = "off"
        if config.dataplane != "off":
            self.dataplane = DataplaneInput(
                config.node,
                config.dataplane,
                self.dir / dataplane_name(config.node, stamp),
                self.correlator,
                netns=config.dataplane_netns,
            )
        self._queue = BatchQueue(config.queue_batches, config.queue_rows, config.queue_bytes)
        self.guard = MemoryGuard(config.rss_limit_mb << 20, rss_bytes, self._child_rss)
        self._detail_paused = threading.Event()  # set by the memory guard: poll loops take nothing
        self.detail_paused_s = 0.0
        self.budget: dict[str, Any] = {}
        self._sized = (0, 0)  # (own, child) bytes the budget was computed from
        self.memory_state = MemoryState()
        self._lock = threading.Lock()
        self.received: Counter[str] = Counter()
        self.dropped = 0
        self.written = 0
        self.episode_verdicts: Counter[str] = Counter()
        self.rss_shed_rows = 0  # window rows shed for memory (also in window_evicted_packets)
        self.released_bytes = 0  # given back by release_unused (compiler pages, free heap)
        self._pollers: list[threading.Thread] = []
        self._writer = threading.Thread(target=self._write_loop, name="agent-writer", daemon=True)
        self._counter = threading.Thread(target=self._counts_loop, name="agent-counts", daemon=True)
        self._memory = threading.Thread(target=self._memory_loop, name="agent-memory", daemon=True)
        self._counts_lock = threading.Lock()  # one reader of the sources' aggregates at a time
        self._server: MetricsServer | None = None
        self._source_errors: dict[str, str] = {}
        self._clean = True
        self.clock_resync = ClockResync(config.clock_resync_s, int(config.clock_drift_log_ms * 1e6))

    # -- lifecycle ---------------------------------------------------------------------------------
    def start(self) -> Agent:
        from auditor.errors import AuditorError

        configure_allocator()  # before the threads (and their heap arenas) exist
        if self.config.metrics_addr:
            self._server = MetricsServer(
                self.metrics, self.config.metrics_addr, self.health,
                log_dir=self.dir, log_access=self.log_access,
            ).start()  # /logs: read by `auditor collect`, checked by self.log_access  # fmt: skip
        started: list[PacketSource] = []
        try:
            for src in self.sources:
                src.start()
                started.append(src)
        except BaseException:
            for src in started:
                src.close()
            if self._server:
                self._server.stop()
            raise
        if self.dataplane is not None:
            try:
                self.dataplane.start()
                self.dataplane_note = f"on ({self.config.dataplane})"
            except AuditorError as exc:
                if self.config.dataplane != "auto":
                    self.stop_event.set()
                    self._stop_inputs(0.0)
                    raise
                log.warning("dataplane recording disabled: %s", exc.line())
                self.dataplane_note = f"disabled: {exc.line()}"
                self.dataplane = None
        if self.kube is not None:
            self.kube.start()
        for src in self.sources:
            resync = getattr(src, "resync_clock", None)  # optional, like poll_frame
            if resync is not None:
                self.clock_resync.add(src.name, resync)
        if self.dataplane is not None:
            self.clock_resync.add("dataplane", self.dataplane.resync_clock)
        _warm_up()  # the batch path's libraries in memory before the budget is measured
        self.released_bytes = release_unused()  # what compiling the probes left resident
        self._size_buffers()
        self._check_memory()  # already at the limit: the poll loops start paused
        self._writer.start()
        self._counter.start()
        self._memory.start()
        for src in self.sources:
            t = threading.Thread(target=self._poll_loop, args=(src,), name=f"poll-{src.name}", daemon=True)
            self._pollers.append(t)
            t.start()
        return self

    def request_stop(self) -> None:
        """Ask :meth:`run` to return (safe from a signal handler)."""
        self.stop_event.set()

    def health(self) -> tuple[bool, str]:
        problems = [f"source {n}: {e}" for n, e in self._source_errors.items()]
        if not self._writer.is_alive():
            problems.append("writer stopped")
        if any(not t.is_alive() for t in self._pollers) and not self.stop_event.is_set():
            problems.append("a packet source stopped")
        if self.stop_event.is_set():
            problems.append("stopping")
        return (not problems, "; ".join(problems) or "ok")

    def run(self, duration_s: float | None = None) -> dict[str, Any]:
        """Serve until :meth:`request_stop` (or ``duration_s``), then shut down; returns the summary."""
        start = time.monotonic()
        next_tick = next_summary = 0.0
        try:
            while not self.stop_event.is_set():
                if duration_s is not None and time.monotonic() - start >= duration_s:
                    break
                now = time.monotonic()
                if now >= next_tick:
                    next_tick = now + 1.0
                    self._tick()
                self.clock_resync.run_if_due()
                if now >= next_summary:
                    next_summary = now + 10.0
                    self._write_summary(final=False)
                self.stop_event.wait(0.2)
        finally:
            summary = self.shutdown()
        return summary

    def shutdown(self) -> dict[str, Any]:
        """Stop inputs, drain, flush, close; bounded by ``stop_timeout_s``. Idempotent enough to call once."""
        self.stop_event.set()
        deadline = time.monotonic() + self.config.stop_timeout_s
        for t in self._pollers:
            t.join(max(0.0, deadline - time.monotonic() - 2.0))
        self._stop_inputs(max(0.5, min(3.0, deadline - time.monotonic() - 2.0)))
        if self._counter.is_alive():
            self._counter.join(max(0.1, min(2.0, deadline - time.monotonic() - 1.0)))
        self._read_counts(final=True)  # what the sources read when they closed
        self.counts_file.close()
        if self._writer.is_alive():
            self._queue.put_always(_STOP)
            self._writer.join(max(0.1, deadline - time.monotonic()))
        if self._writer.is_alive() or any(t.is_alive() for t in self._pollers):
            self._clean = False
            log.error(
                "shutdown did not finish within %.0f s; summary may be incomplete", self.config.stop_timeout_s
            )
        self._tick()
        summary = self._write_summary(final=True)
        if self._server is not None:
            self._server.stop()
        return summary

    def _stop_inputs(self, timeout: float) -> None:
        if self.kube is not None:
            self.kube.stop(timeout)
        if self.dataplane is not None:
            self.dataplane.stop()

    # -- threads -----------------------------------------------------------------------------------
    def _poll_loop(self, src: PacketSource) -> None:
        poll_frame = getattr(src, "poll_frame", None)  # the batch path, where the source has it

        def poll(timeout_ms: int) -> Any:
            return poll_frame(timeout_ms) if poll_frame is not None else src.poll(timeout_ms)

        try:
            while not self.stop_event.is_set():
                if self._detail_paused.is_set():  # over the memory limit: the ring buffer drops detail
                    started = time.monotonic()
                    self.stop_event.wait(0.02)
                    with self._lock:
                        self.detail_paused_s += time.monotonic() - started
                    continue
                self._enqueue(poll(100))
            detach = getattr(src, "detach", None)  # nothing new after this: the drain can finish
            if detach is not None:
                detach()
            for _ in range(100):  # drain what is already waiting (bounded)
                batch = poll(0)
                if len(batch) == 0:
                    break
                self._enqueue(batch)
        except Exception as exc:
            self._source_errors[src.name] = f"{type(exc).__name__}: {exc}"
            log.error("packet source %s failed: %s", src.name, self._source_errors[src.name])
        finally:
            try:
                src.close()
            except Exception as exc:
                log.warning("closing source %s: %s", src.name, exc)

    def _enqueue(self, batch: Any) -> None:
        """Count a poll's batch (packet table or event list) and queue it for the writer."""
        if len(batch) == 0:
            return
        frame = as_packet_frame(batch)
        kinds = kind_counts(frame)
        with self._lock:
            self.received.update(kinds)
        for kind, n in kinds.items():
            self.metrics.count_received(kind, n)
        if not self._queue.put(frame, len(frame), timeout=self.config.queue_wait_s, nbytes=frame_bytes(len(frame))):
            with self._lock:
                self.dropped += len(frame)

    def _write_loop(self) -> None:
        flush_s = max(0.01, self.config.flush_ms / 1000)
        last_flush = time.monotonic()
        stopping = False
        while True:
            got, item = self._queue.get(0.0 if stopping else flush_s)
            if not got and stopping:
                break
            if item is _STOP:
                stopping = True  # keep taking what poll loops put before they ended
                continue
            if item is not None and len(item):
                try:
                    self.eventlog.write(item)
                except Exception as exc:
                    self._clean = False
                    log.error("event log write failed: %s: %s", type(exc).__name__, exc)
                    with self._lock:
                        self.dropped += len(item)
                    continue
                with self._lock:
                    self.written += len(item)
                self.metrics.count_written(len(item))
                self.correlator.add_packets(item)
            if time.monotonic() - last_flush >= flush_s:
                self.eventlog.flush()
                last_flush = time.monotonic()
        self.eventlog.close()

    def _counts_loop(self) -> None:
        interval = max(0.01, self.config.counts_interval_s)
        while not self.stop_event.wait(interval):
            self._read_counts(final=False)

    def _read_counts(self, final: bool) -> None:
        """Take the finished buckets of every source's aggregates: counts file, store, metrics."""
        with self._counts_lock:
            for src in self.sources:
                read = getattr(src, "read_counts", None)  # optional, like poll_frame
                if read is None:
                    continue
                try:
                    records: list[CountRecord] = read(final)
                except Exception as exc:
                    self._source_errors.setdefault(f"{src.name} counts", f"{type(exc).__name__}: {exc}")
                    continue
                uncounted = getattr(src, "uncounted", None)
                if uncounted is not None:
                    self.counts.set_uncounted(int(uncounted()), time.time_ns())
                if not records:
                    continue
                self.counts_file.write(records)
                self.counts.add(records)
                self.metrics.count_counted(records)

    # -- memory ------------------------------------------------------------------------------------
    def _child_rss(self) -> int:
        pid = getattr(getattr(self.kube, "watcher", None), "pid", None)  # the isolated watch's process
        return process_rss(pid) if isinstance(pid, int) else 0

    def _size_buffers(self, own: int | None = None, child: int | None = None) -> None:
        """Size the live window and the queue from what the limit leaves above the agent's own size
        after start (bcc, the libraries) and its watch child's (measured when running, else the size
        measured under load, :data:`CHILD_ALLOWANCE`), minus :data:`TRANSIENT_RESERVE`: half of the rest
        for the window (:data:`WINDOW_ROW_BYTES` a row: held, and copied by an episode's audit), a
        quarter for the queue; the rest is slack for the allocator. Sized again (from the same own
        size) when the watch child outgrows what was assumed for it (a large cluster listed)."""
        limit = self.config.rss_limit_mb << 20
        if not limit:
            return
        own = rss_bytes() if own is None else own
        if child is None:
            child = max(self._child_rss(), CHILD_ALLOWANCE) if self.kube is not None else 0
        self._sized = (own, child)
        free = limit - own - child - TRANSIENT_RESERVE - self.config.counts_records * COUNT_RECORD_BYTES
        window = min(self.config.window_rows, max(MIN_WINDOW_ROWS, free // 2 // WINDOW_ROW_BYTES))
        queue = min(self.config.queue_bytes, max(MIN_QUEUE_BYTES, free // 4))
        # a poll's batch, decoded and written, peaks at ~1 KB an event: smaller batches when the room is small
        poll = int(max(MIN_POLL_RECORDS, min(MAX_POLL_RECORDS, free // BATCH_RECORD_BYTES)))
        for src in self.sources:
            set_limit = getattr(src, "set_poll_limit", None)
            if set_limit is not None:
                set_limit(poll)
        self.correlator.window.max_packets = int(window)
        self._queue.max_bytes = int(queue)
        self._queue.max_rows = max(1, min(self.config.queue_rows, int(queue) // FRAME_ROW_BYTES))
        self.budget = {"own_mb": round(own / 2**20, 1), "child_mb": round(child / 2**20, 1),
                       "free_mb": round(free / 2**20, 1), "window_rows": int(window),
                       "queue_mb": round(queue / 2**20, 1), "poll_records": poll}  # fmt: skip
        if free < MIN_WINDOW_ROWS * WINDOW_ROW_BYTES + MIN_QUEUE_BYTES:
            log.warning(
                "memory limit %d MB leaves %.0f MB above the agent's own %.0f MB (+ %.0f MB watch process): "
                "detail will often be paused (counts stay exact); raise --memory-limit-mb",
                self.config.rss_limit_mb, free / 2**20, own / 2**20, child / 2**20,
            )  # fmt: skip

    def _memory_loop(self) -> None:
        interval = max(0.01, self.config.memory_check_s)
        next_resize = time.monotonic() + 5.0
        while not self.stop_event.wait(interval):
            self._check_memory()
            if time.monotonic() >= next_resize:
                next_resize = time.monotonic() + 5.0
                own, child = self._sized
                if own and self.memory_state.child > child + (child >> 3):  # the child grew past its share
                    self._size_buffers(own, self.memory_state.child)

    def _check_memory(self) -> None:
        """One sample of the guard: shed the window's oldest half and trim the heap above the soft line,
        pause detail above the hard one (see :class:`~auditor.agent.memory.MemoryGuard`)."""
        drained = self.correlator.window.packet_rows == 0 and self._queue.rows == 0
        state = self.memory_state = self.guard.sample(drained)
        if state.shed:
            trim_heap()
            shed = self.correlator.shed_packets(0.5)
            self.rss_shed_rows += shed
            if shed:
                log.warning(
                    "RSS %.0f MB (+ %.0f MB watch process) near the %d MB limit: shed %d packet events from "
                    "the live window", state.rss / 2**20, state.child / 2**20, self.config.rss_limit_mb, shed,
                )  # fmt: skip
        if state.pause and not self._detail_paused.is_set():
            self._detail_paused.set()
            log.warning("RSS %.0f MB (+ %.0f MB watch process) at the %d MB limit: detail paused (the ring "
                        "buffer drops events, counted; counts stay exact)", state.rss / 2**20,
                        state.child / 2**20, self.config.rss_limit_mb)  # fmt: skip
        elif not state.pause and self._detail_paused.is_set():
            self._detail_paused.clear()
            log.info("RSS %.0f MB: detail resumed", state.total / 2**20)

    # -- periodic ----------------------------------------------------------------------------------
    def _tick(self) -> None:
        if not self._memory.is_alive():  # not started (tests) or stopped: sample here
            self._check_memory()
        for kind, total in self.lost().items():
            self.metrics.set_lost_total(kind, total)
        for report in self.correlator.run_due():
            self._report(report)
        self.counts.trim(time.time_ns())

    def _episode_counts(self, report: EpisodeReport) -> dict[str, Any] | None:
        """Exact counts of the episode's pod addresses over the episode's window (the correlator's:
        ``LOOKBACK_NS`` before the deletion was seen, until now); None without its addresses."""
        pod = self.pod_addresses.take(report.uid)
        if pod is None or not pod[0] or not pod[1]:
            return None
        ips, deleted_ns = pod
        return self.counts.episode(ips, deleted_ns - LOOKBACK_NS, time.time_ns())

    def _report(self, report: EpisodeReport) -> None:
        counts = self._episode_counts(report)
        extra: dict[str, Any] = {}
        if counts is not None and sum(counts["events"].values()):
            extra["counts"] = counts
            report.line += (
                f" counts=(refused {counts['refused']}, reset {counts['reset']}, unreachable "
                f"{counts['unreachable']}; {counts['note']})"
            )
            if counts["detail_lost"]:  # the failures the sampled detail could not name a cause for
                detail = Counter[str]()
                for (failure, _), n in report.failures.items():
                    detail[failure] += n
                for failure in ("refused", "reset", "unreachable"):
                    missed = counts[failure] - detail[failure]
                    if missed > 0:
                        self.metrics.count_failures(report.namespace, report.pod, failure, "detail_lost", missed)
        if self._packets_by_capture():  # every report says what the capture cannot tell
            report.line += " (packet capture: no kernel reasons)"
            extra["kernel_reasons"] = "absent: " + NO_REASONS
        self.episode_verdicts[report.verdict] += 1
        self.metrics.count_episode(report.verdict)
        for (failure, cause), n in report.failures.items():
            self.metrics.count_failures(report.namespace, report.pod, failure, cause, n)
        for node, delay in report.node_delays.items():
            self.metrics.observe_delay(delay, "kube-proxy", node)
        for kind, consumer, delay in report.consumer_delays:
            if kind != "kube-proxy":  # kube-proxy's delay is its node's, above
                self.metrics.observe_delay(delay, kind, consumer)
        for gap in report.node_gaps.values():
            self.metrics.observe_gap(gap)
        try:
            with self.episodes_path.open("a", encoding="utf-8") as f:
                f.write(json.dumps({**report.as_dict(), **extra}, separators=(",", ":")) + "\n")
        except OSError as exc:
            log.warning("cannot append to %s: %s", self.episodes_path, exc.strerror)
        self.on_episode(report)

    def _packets_by_capture(self) -> bool:
        """Are the packet events a capture's (``--source capture``, or ``auto`` after its fallback)?"""
        return any(s.name == "capture" for s in self.sources)

    def lost(self) -> dict[str, int]:
        """Running loss totals from every input, plus events dropped at the writer queue."""
        out: Counter[str] = Counter()
        for src in self.sources:
            try:
                out.update(src.lost())
            except Exception as exc:
                log.debug("lost counters of %s unavailable: %s", src.name, exc)
        for side in (self.kube, self.dataplane):
            if side is not None:
                out.update(side.lost())
        with self._lock:
            out["queue_full"] = self.dropped
        return dict(out)

    def summary(self) -> dict[str, Any]:
        with self._lock:
            received, written, dropped = dict(self.received), self.written, self.dropped
        c = self.correlator
        return {
            "node": self.config.node,
            "started_at": format_time_ns(self.started_ns),
            "updated_at": format_time_ns(time.time_ns()),
            "received": received,
            "received_total": sum(received.values()),
            "written": written,
            "dropped": dropped,
            "lost": self.lost(),
            "log_format": self.config.log_format,
            "segments": [p.name for p in self.eventlog.finished],
            "live_segment": self.eventlog.current.name if self.eventlog.current else None,
            "episodes": {
                "finished": c.finished,
                "skipped": c.skipped,
                "errors": c.errors,
                "unfinished": c.pending,
                "by_verdict": dict(self.episode_verdicts),
                "window_evicted_packets": c.window.evicted_packets,
            },
            "memory": {
                "rss_mb": round(self.memory_state.rss / 2**20, 1),
                "child_rss_mb": round(self.memory_state.child / 2**20, 1),
                "peak_rss_mb": round(self.guard.peak.rss / 2**20, 1),
                "peak_total_mb": round(self.guard.peak.total / 2**20, 1),  # the agent and its watch child
                "peak_child_rss_mb": round(self.guard.peak.child / 2**20, 1),
                "limit_mb": self.config.rss_limit_mb,
                "budget": self.budget,
                "over_limit_ticks": self.guard.over_limit,
                "shed_rows": self.rss_shed_rows,
                "sheds": self.guard.sheds,
                "detail_pauses": self.guard.pauses,
                "detail_paused_s": round(self.detail_paused_s, 2),
                "released_mb": round(self.released_bytes / 2**20, 1),
                "heap": heap_stats(),
                "queue_peak_rows": self._queue.peak_rows,
                "queue_peak_mb": round(self._queue.peak_bytes / 2**20, 1),
                "window_rows": c.window.packet_rows,
            },
            "counts": {
                **self.counts.notes(written),
                "file": self.counts_file.path.name,
                "write_errors": self.counts_file.errors,
                **(CAPTURE_COUNTS if self._packets_by_capture() else {}),
            },
            "clock": self.clock_resync.notes(),
            "kube": self.kube.notes() if self.kube is not None else "off",
            "dataplane": self.dataplane.notes() if self.dataplane is not None else self.dataplane_note,
            "sources": {s.name: _safe_notes(s) for s in self.sources},
            "source_errors": dict(self._source_errors),
            "logs_auth": self.log_access.mode,
            "recovery": self.recovery,
            "previous_runs": self.previous_runs,
            **self.config.extra,
        }

    def _write_summary(self, final: bool) -> dict[str, Any]:
        data = self.summary()
        data["final"] = final
        data["clean_exit"] = self._clean if final else None
        tmp = self.summary_path.with_name(self.summary_path.name + ".tmp")
        try:
            tmp.write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")
            os.replace(tmp, self.summary_path)
        except OSError as exc:
            log.warning("cannot write %s: %s", self.summary_path, exc.strerror)
        return data

    @property
    def clean(self) -> bool:
        return self._clean


def _warm_up() -> None:
    """Run the batch path once on one event (a packet table, its JSON lines, an Arrow batch written as
    Parquet to memory): pandas and pyarrow are loaded, and the code pages they run resident, before
    the memory budget measures the agent's own size (else they come with the first events, ~50 MB
    the budget would not have counted)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from auditor.model.packet import packet_arrow_schema, packet_frame
    from auditor.sinks.eventfile import frame_json_lines

    frame = packet_frame([PacketEvent(time.time_ns(), "refused", 4, "10.0.0.1", 1, "10.0.0.2", 2, node="warm-up")])
    frame_json_lines(frame)
    concat_packet_frames([frame, frame])
    batch = pa.RecordBatch.from_pandas(frame, schema=packet_arrow_schema(), preserve_index=False)
    with pq.ParquetWriter(pa.BufferOutputStream(), packet_arrow_schema(), compression="snappy") as writer:
        writer.write_table(pa.Table.from_batches([batch]))


def previous_runs(summary_path: Path) -> list[dict[str, Any]]:
    """The runs an ``agent-<node>.json`` left by earlier agents on this directory records, oldest first
    (its own run last), at most :data:`PREVIOUS_RUNS_KEPT`; [] when there is none or it is unreadable.
    A run whose ``final`` is not true ended without its shutdown (killed, crashed): the log has a gap
    from its ``updated_at`` (at most 10 s after its last summary) to the next run's ``started_at``."""
    try:
        doc = json.loads(summary_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    if not isinstance(doc, dict):
        return []
    runs = [r for r in doc.get("previous_runs") or [] if isinstance(r, dict)]
    if "started_at" in doc:
        lost: dict[str, Any] = doc["lost"] if isinstance(doc.get("lost"), dict) else {}
        runs.append({
            "started_at": doc.get("started_at"), "updated_at": doc.get("updated_at"),
            "final": doc.get("final") is True, "clean_exit": doc.get("clean_exit"),
            "written": doc.get("written"), "lost": sum(v for v in lost.values() if isinstance(v, int)),
        })  # fmt: skip
    return runs[-PREVIOUS_RUNS_KEPT:]


def _safe_notes(src: PacketSource) -> dict[str, Any]:
    try:
        return src.notes()
    except Exception as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}
