"""Load the probes with bcc, read their events, count what was seen, delivered and lost.

    probes = ProbeSet(ProbeConfig(pod_cidrs=("10.244.0.0/16",))).start()
    try:
        events = probes.poll(100)
    finally:
        probes.close()

A tracepoint this kernel lacks (or lays out without a field the probe needs) disables that
signal with a warning, recorded in ``.disabled``; the rest keep running.

Besides the events, the probes count every event in in-kernel aggregates (``probes/aggregates.h``):
:meth:`ProbeSet.read_counts` returns the buckets that are over as :class:`CountRecord` and deletes
them from the map, so the counts stay exact when the ring buffer loses detail events.
"""

from __future__ import annotations

import ctypes
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from auditor.errors import AuditorError
from auditor.model.counts import CountRecord
from auditor.model.packet import PacketEvent
from auditor.sources.live.btf import load_vmlinux_btf
from auditor.sources.live.clock import WallClockOffset
from auditor.sources.live.decode import decode_event
from auditor.sources.live.decode_aggregates import AGG_KEY, AGG_VALUE, decode_aggregates, key_bucket
from auditor.sources.live.environment import BccEnvironment, prepare_bcc_environment
from auditor.sources.live.events import KIND_CODES, N_KINDS, DecodeError
from auditor.sources.live.layout import (
    FAMILIES,
    LayoutError,
    hook_cflags,
    kernel_offset_cflags,
    pack_pod_cidr,
    raw_send_reset_cflags,
)
from auditor.sources.live.maps import MapReader
from auditor.sources.live.probes_dir import PROBES_DIR, inline_local_includes
from auditor.sources.live.progstats import read_recursion_misses
from auditor.sources.live.tracefs import TracepointFormat, read_format

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ProbeConfig:
    families: tuple[str, ...] = tuple(FAMILIES)
    pod_cidrs: tuple[str, ...] = ()  # skb_drop is disabled without any
    output: str = "auto"  # "auto" | "ringbuf" | "perf"
    ringbuf_pages: int = 1024  # power of two
    wakeup_batch: int = 64  # ring buffer: wake the reader every N events per CPU
    perf_pages: int = 256  # per CPU
    # records one poll hands over at most (ring buffer): under a storm the reader would otherwise keep
    # taking what the probes keep writing, and one batch (and its decoding) could grow without bound
    max_poll_records: int = 32_768
    node: str = ""
    probes_dir: Path = PROBES_DIR
    bucket_ms: int = 100  # time resolution of the in-kernel aggregates
    # aggregate keys the map holds (keys x buckets not read yet): 16384 is ~3,000 distinct keys per
    # 100 ms bucket read every 0.25 s; beyond, events are counted per kind only (``uncounted``)
    agg_entries: int = 16384
    # tcp_send_reset from its raw tracepoint (a guard per program) rather than through perf (skipped
    # whenever another tracing program runs on the CPU); False: always through perf
    raw_tracepoints: bool = True


class ProbeSet:
    """The loaded probes of the enabled families, sharing one output channel and counter array."""

    def __init__(
        self,
        config: ProbeConfig | None = None,
        formats: Callable[[str, str], TracepointFormat | None] | None = None,
        wall_clock: WallClockOffset | None = None,
    ) -> None:
        """``formats(system, event)`` overrides the tracefs format files (tests of other layouts);
        ``wall_clock`` turns the probes' kernel times into UTC (default: the real clocks; re-measured
        by :meth:`start` and :meth:`resync_clock`)."""
        self.config = config or ProbeConfig()
        self._formats = formats
        self.disabled: dict[str, str] = {}  # "system:event" or family -> why
        self.attached: list[str] = []
        self.raw_attached: list[str] = []  # of those, attached as raw tracepoints (RAW_HOOKS)
        self.environment: BccEnvironment | None = None
        self.output = ""
        self.decode_errors = 0
        self.perf_lost = 0
        self._received = [0] * N_KINDS
        self._bpf: Any = None
        self._raw: list[bytes] = []
        self._max_batch = max(1, self.config.max_poll_records)
        self.wall_clock = wall_clock if wall_clock is not None else WallClockOffset()
        self._agg: MapReader | None = None
        self._agg_cpus = 1
        self._agg_undeleted: set[bytes] = set()  # keys reported whose delete failed: never twice
        self.counted = [0] * N_KINDS  # events read from the aggregates, per kind code
        self._prog_fds: dict[str, int] = {}  # "system:event" -> fd of the program attached there
        self._fdinfo_dir = Path("/proc/self/fdinfo")  # where those fds are described (tests: a copy)
        self.count_errors = 0  # aggregate keys that did not decode, or could not be deleted
        self.detached = False

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self) -> ProbeSet:
        if os.geteuid() != 0:
            raise AuditorError("loading eBPF probes needs root", hint="run the live agent as root")
        cfg = self.config
        unknown = [f for f in cfg.families if f not in FAMILIES]
        if unknown:
            raise AuditorError(f"unknown probe family {unknown[0]!r}", hint=f"one of {', '.join(FAMILIES)}")
        env = self.environment = prepare_bcc_environment()
        if env.tracefs is None or not env.btf:
            raise AuditorError("cannot load probes: " + "; ".join(env.notes))
        btf = load_vmlinux_btf()
        try:
            cflags = [*env.extra_cflags, *kernel_offset_cflags(btf)]
        except KeyError as exc:
            raise AuditorError(f"kernel BTF lacks a struct member the probes read: {exc}") from exc
        included: set[str] = {"common.h"}
        sources = [(cfg.probes_dir / "common.h").read_text()]
        hooks = []
        for family in cfg.families:
            if family == "skb_drop" and not cfg.pod_cidrs:
                self._disable(family, "no pod CIDRs configured (drops are filtered to pod traffic)")
                continue
            c_file, family_hooks = FAMILIES[family]
            usable = []
            for hook in family_hooks:
                if self._formats is not None:
                    fmt = self._formats(hook.system, hook.event)
                else:
                    fmt = read_format(env.tracefs, hook.system, hook.event)
                if fmt is None:
                    self._disable(f"{hook.system}:{hook.event}", "tracepoint not found on this kernel")
                    continue
                try:
                    cflags += hook_cflags(fmt, hook)
                except LayoutError as exc:
                    self._disable(f"{hook.system}:{hook.event}", str(exc))
                    continue
                usable.append(hook)
            if usable:
                sources.append(
                    inline_local_includes((cfg.probes_dir / c_file).read_text(), cfg.probes_dir, included)
                )
                hooks += usable
        if not hooks:
            raise AuditorError(
                "no probe could be loaded: " + "; ".join(f"{k}: {v}" for k, v in self.disabled.items())
            )
        cidrs = []
        try:
            cidrs = [pack_pod_cidr(c) for c in cfg.pod_cidrs[:16]]
        except ValueError as exc:
            raise AuditorError(f"bad pod CIDR: {exc}", hint="use e.g. 10.244.0.0/16") from exc
        cflags += [
            f"-DN_POD_CIDRS={len(cidrs)}",
            f"-DWAKEUP_BATCH={max(1, cfg.wakeup_batch)}",
            f"-DRINGBUF_PAGES={cfg.ringbuf_pages}",
            f"-DAGG_BUCKET_NS={self.bucket_ns}ULL",
            f"-DAGG_ENTRIES={max(64, cfg.agg_entries)}",
        ]
        # tcp_send_reset (the refusals) from its raw tracepoint where possible: see RAW_HOOKS
        raw_flags = raw_send_reset_cflags(btf) if cfg.raw_tracepoints and _raw_supported() else None
        raw_hooks = {h.fn_name: RAW_HOOKS[h.fn_name] for h in hooks if h.fn_name in RAW_HOOKS and raw_flags}
        cflags += raw_flags or []
        want_ringbuf = cfg.output == "ringbuf" or (cfg.output == "auto" and env.ringbuf)
        self._bpf = self._compile("\n".join(sources), cflags, want_ringbuf)
        try:
            table = self._bpf["aggregates"]
        except KeyError:  # probes without aggregates.h (another probes directory): no exact counts
            self._disable("aggregates", "the probes keep no in-kernel aggregates (probes/aggregates.h)")
        else:
            self._agg = MapReader(table)
            self._agg_cpus = max(1, self._agg.value_size // AGG_VALUE.size)
        if cidrs:
            table = self._bpf["pod_cidrs"]
            for i, packed in enumerate(cidrs):
                table[ctypes.c_int(i)] = table.Leaf.from_buffer_copy(packed)
        self.wall_clock.resync()  # just before the events start
        self._open_output()
        for hook in hooks:
            tp = f"{hook.system}:{hook.event}"
            fn_name = hook.fn_name
            try:
                if fn_name in raw_hooks:
                    try:
                        self._bpf.attach_raw_tracepoint(tp=hook.event, fn_name=raw_hooks[fn_name])
                        self.raw_attached.append(tp)
                        fn_name = raw_hooks[fn_name]
                    except Exception as exc:  # bcc raises plain Exception: the record-based program then
                        log.warning("raw tracepoint %s not attached (%s): attached through perf", tp, exc)
                        self._bpf.attach_tracepoint(tp=tp, fn_name=fn_name)
                else:
                    self._bpf.attach_tracepoint(tp=tp, fn_name=fn_name)
                self.attached.append(tp)
                fn = self._bpf.funcs.get(fn_name.encode())
                if fn is not None:
                    self._prog_fds[tp] = int(fn.fd)
            except Exception as exc:  # bcc raises plain Exception
                self._disable(tp, f"attach failed: {exc}")
        if not self.attached:
            self.close()
            raise AuditorError("no probe could be attached: " + "; ".join(self.disabled.values()))
        self.detached = False
        return self

    def _compile(self, text: str, cflags: list[str], ringbuf: bool) -> Any:
        from bcc import BPF  # lazily: only this package imports bcc

        attempts = [True, False] if ringbuf else [False]
        last: Exception | None = None
        for use_ringbuf in attempts:
            try:
                bpf = BPF(text=text, cflags=[*cflags, *(["-DUSE_RINGBUF=1"] if use_ringbuf else [])])
            except Exception as exc:  # compile/load errors are plain Exceptions with stderr output
                last = exc
                continue
            self.output = "ringbuf" if use_ringbuf else "perf"
            return bpf
        raise AuditorError(
            f"bcc could not compile the probes ({last})",
            where=str(self.config.probes_dir),
            hint="check kernel headers with `auditor doctor`",
        )

    def _open_output(self) -> None:
        table = self._bpf["events"]
        if self.output == "ringbuf":
            table.open_ring_buffer(self._on_event)
        else:
            table.open_perf_buffer(self._on_event, page_cnt=self.config.perf_pages, lost_cb=self._on_lost)

    def detach(self) -> None:
        """Stop the probes (nothing more is counted or sent); what they made can still be read, and
        :meth:`read_counts` then returns every bucket. Idempotent."""
        if self._bpf is None or self.detached:
            return
        for tp in list(self.attached):
            try:
                if tp in self.raw_attached:
                    self._bpf.detach_raw_tracepoint(tp=tp.split(":", 1)[1])
                else:
                    self._bpf.detach_tracepoint(tp=tp)
            except Exception as exc:  # bcc raises plain Exception
                log.warning("detaching %s: %s", tp, exc)
        self.detached = True

    def close(self) -> None:
        if self._bpf is not None:
            self._bpf.cleanup()
            self._bpf = None
            self._agg = None
            self._prog_fds.clear()

    def __enter__(self) -> ProbeSet:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- reading ---------------------------------------------------------------------------------
    def _on_event(self, _ctx: Any, data: Any, size: int) -> int:
        raw = ctypes.string_at(data, size)
        self._raw.append(raw)
        code = raw[8] if size > 8 else 0  # ev_hdr.kind (u32 LE, < 256)
        if code < len(self._received):
            self._received[code] += 1
        # a negative return ends the ring buffer's consume loop (this record is taken): a bounded batch
        return -1 if len(self._raw) >= self._max_batch else 0

    def _on_lost(self, lost: int) -> None:
        self.perf_lost += lost

    def poll_raw(self, timeout_ms: int = 100) -> list[bytes]:
        """Undecoded records (the fast path: decode later, in batches), at most ``max_poll_records``
        from the ring buffer (the rest stays there for the next poll); see :meth:`poll`."""
        if self._bpf is None:
            raise AuditorError("probes are not started", hint="call start() first")
        if self.output == "ringbuf":
            self._bpf.ring_buffer_poll(timeout_ms)
            if len(self._raw) < self._max_batch:
                self._bpf.ring_buffer_consume()
        else:
            self._bpf.perf_buffer_poll(timeout_ms)
        out, self._raw = self._raw, []
        return out

    def poll(self, timeout_ms: int = 100) -> list[PacketEvent]:
        """Events delivered within ``timeout_ms`` (plus any already waiting), oldest first per CPU.

        Undecodable records are counted in ``decode_errors`` and skipped.
        """
        events = []
        for raw in self.poll_raw(timeout_ms):
            try:
                events.append(decode_event(raw, self.wall_clock.ns, self.config.node))
            except DecodeError:
                self.decode_errors += 1
        return events

    def poll_frame(self, timeout_ms: int = 100) -> pd.DataFrame:
        """Like :meth:`poll`, as the packet event table, decoded in one batch (the fast path)."""
        return self.decode_frame(self.poll_raw(timeout_ms))

    def decode_frame(self, records: list[bytes]) -> pd.DataFrame:
        """Records from :meth:`poll_raw` as the packet event table, stamped in UTC with the offset
        measured last (:meth:`resync_clock`); undecodable ones are counted in ``decode_errors``."""
        from auditor.sources.live.decode_batch import decode_records

        frame, bad = decode_records(records, self.wall_clock.ns, self.config.node)
        self.decode_errors += bad
        return frame

    # -- the aggregates -----------------------------------------------------------------------------
    def set_poll_limit(self, records: int) -> None:
        """Change ``max_poll_records`` (the agent sizes its batches from its memory budget)."""
        self._max_batch = max(1, records)

    @property
    def bucket_ns(self) -> int:
        return max(1, self.config.bucket_ms) * 1_000_000

    def read_counts(self, final: bool = False) -> list[CountRecord]:
        """The aggregate buckets that are over (no probe writes to them any more: older than the
        current bucket and the one before), removed from the map; every bucket once the probes are
        detached, or with ``final``. Each key and bucket comes once, stamped in UTC."""
        if self._agg is None:
            return []
        keys, values = self._agg.lookup_all()
        size, per_key = AGG_KEY.size, self._agg.value_size
        now = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // self.bucket_ns
        upto = None if (final or self.detached) else now - 2
        present = [keys[i * size : (i + 1) * size] for i in range(len(keys) // size)]
        if self._agg_undeleted:  # reported before but still there: retry the delete, never report again
            self._agg_undeleted &= set(present)
            self._agg.delete(b"".join(self._agg_undeleted))
        take_k, take_v = bytearray(), bytearray()
        for i, key in enumerate(present):
            if (upto is not None and key_bucket(keys, i) > upto) or key in self._agg_undeleted:
                continue
            take_k += key
            take_v += values[i * per_key : (i + 1) * per_key]
        if not take_k:
            return []
        records, bad = decode_aggregates(
            bytes(take_k), bytes(take_v), self._agg_cpus, self.wall_clock.ns, self.bucket_ns, self.config.node
        )
        self.count_errors += bad
        if self._agg.delete(bytes(take_k)) < len(take_k) // size:
            left, _ = self._agg.lookup_all()
            still = {left[i * size : (i + 1) * size] for i in range(len(left) // size)}
            stuck = {bytes(take_k[i * size : (i + 1) * size]) for i in range(len(take_k) // size)} & still
            self.count_errors += len(stuck)
            self._agg_undeleted |= stuck
        for r in records:
            self.counted[_CODES[r.kind]] += r.events
        return records

    @property
    def received(self) -> dict[str, int]:
        """Records delivered to Python so far, per kind (decoded or not)."""
        return {kind.value: self._received[code] for code, kind in KIND_CODES.items()}

    @property
    def offset_ns(self) -> int:
        """CLOCK_REALTIME - CLOCK_MONOTONIC used to stamp events (for decoding poll_raw records)."""
        return self.wall_clock.ns

    def resync_clock(self) -> int:
        """Re-measure the monotonic -> UTC offset (NTP slews or steps the wall clock on long runs);
        returns the correction in ns. Safe from another thread than the one polling."""
        return self.wall_clock.resync()

    def skipped_runs(self) -> dict[str, int]:
        """Per attached tracepoint (``system:event``): the runs of its program the kernel skipped because
        another tracing program was running on that CPU (``recursion_misses``, see
        :mod:`auditor.sources.live.progstats`): neither the event, nor its counter, nor its aggregate
        exists. Tracepoints whose kernel does not report it are left out."""
        out: dict[str, int] = {}
        if self._bpf is None:  # closed: the fds are gone (and their numbers may be reused)
            return out
        for tp, fd in self._prog_fds.items():
            n = read_recursion_misses(fd, self._fdinfo_dir)
            if n is not None:
                out[tp] = n
        return out

    def counters(self) -> dict[str, dict[str, int]]:
        """Per kind: ``seen`` and ``lost`` (detail events the output had no room for) counted in the
        kernel, ``received`` by Python; ``counted`` read from the aggregates so far and ``uncounted``
        (the aggregate map was full); ``skipped``: runs of a program whose every run is an event of
        the kind (``tcp_send_reset``, ``tcp_receive_reset``) that the kernel skipped (no event, no
        count: see :meth:`skipped_runs`). Once every bucket is read: seen == counted + uncounted."""
        if self._bpf is None:
            raise AuditorError("probes are not started", hint="call start() first")
        table = self._bpf["counters"]
        full = self._bpf["agg_full"] if self._agg is not None else None
        skipped = self.skipped_runs()
        out: dict[str, dict[str, int]] = {}
        for code, kind in KIND_CODES.items():
            seen = sum(int(v) for v in table[ctypes.c_int(code * 2)])
            lost = sum(int(v) for v in table[ctypes.c_int(code * 2 + 1)])
            uncounted = sum(int(v) for v in full[ctypes.c_int(code)]) if full is not None else 0
            out[kind.value] = {"seen": seen, "lost": lost, "received": self._received[code],
                               "counted": self.counted[code], "uncounted": uncounted,
                               "skipped": skipped.get(EVERY_RUN_AN_EVENT.get(kind.value, ""), 0)}  # fmt: skip
        return out

    def _disable(self, what: str, why: str) -> None:
        self.disabled[what] = why
        log.warning("probe %s disabled: %s", what, why)


_CODES = {kind.value: code for code, kind in KIND_CODES.items()}
# record-based program -> the same probe on the raw tracepoint (probes/tcp_reset.c, -DSR_RAW). A perf-attached
# program is skipped when the softirq that fires it runs nested in any other tracing program (the kernel's
# per-CPU bpf_prog_active); a raw tracepoint program only inside a run of itself. tcp_send_reset is the
# refusal's evidence on the refusing pod's node: it goes raw.
RAW_HOOKS = {"on_tcp_send_reset": "on_tcp_send_reset_raw"}

# kind -> the tracepoint whose every run is one event of it (no filter in the program): a skipped run of
# that program is a lost event of that kind. (inet_sock_set_state, icmp_send and kfree_skb run for far
# more than what they record: a skipped run there is only a possible loss, see ProbeSet.skipped_runs.)
EVERY_RUN_AN_EVENT = {"rst_sent": "tcp:tcp_send_reset", "rst_received": "tcp:tcp_receive_reset"}


def _raw_supported() -> bool:
    from bcc import BPF  # lazily: only this package imports bcc

    try:
        return bool(BPF.support_raw_tracepoint())
    except Exception:  # bcc raises plain Exception
        return False
