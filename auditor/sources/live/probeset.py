"""Load the probes with bcc, read their events, count what was seen, delivered and lost.

    probes = ProbeSet(ProbeConfig(pod_cidrs=("10.244.0.0/16",))).start()
    try:
        events = probes.poll(100)
    finally:
        probes.close()

A tracepoint this kernel lacks (or lays out without a field the probe needs) disables that
signal with a warning, recorded in ``.disabled``; the rest keep running.
"""

from __future__ import annotations

import ctypes
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from auditor.errors import AuditorError
from auditor.model.packet import PacketEvent
from auditor.sources.live.btf import load_vmlinux_btf
from auditor.sources.live.clock import WallClockOffset
from auditor.sources.live.decode import decode_event
from auditor.sources.live.environment import BccEnvironment, prepare_bcc_environment
from auditor.sources.live.events import KIND_CODES, N_KINDS, DecodeError
from auditor.sources.live.layout import (
    FAMILIES,
    LayoutError,
    hook_cflags,
    kernel_offset_cflags,
    pack_pod_cidr,
)
from auditor.sources.live.probes_dir import PROBES_DIR
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
    node: str = ""
    probes_dir: Path = PROBES_DIR


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
        self.environment: BccEnvironment | None = None
        self.output = ""
        self.decode_errors = 0
        self.perf_lost = 0
        self._received = [0] * N_KINDS
        self._bpf: Any = None
        self._raw: list[bytes] = []
        self.wall_clock = wall_clock if wall_clock is not None else WallClockOffset()

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
                sources.append((cfg.probes_dir / c_file).read_text())
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
        ]
        want_ringbuf = cfg.output == "ringbuf" or (cfg.output == "auto" and env.ringbuf)
        self._bpf = self._compile("\n".join(sources), cflags, want_ringbuf)
        if cidrs:
            table = self._bpf["pod_cidrs"]
            for i, packed in enumerate(cidrs):
                table[ctypes.c_int(i)] = table.Leaf.from_buffer_copy(packed)
        self.wall_clock.resync()  # just before the events start
        self._open_output()
        for hook in hooks:
            try:
                self._bpf.attach_tracepoint(tp=f"{hook.system}:{hook.event}", fn_name=hook.fn_name)
                self.attached.append(f"{hook.system}:{hook.event}")
            except Exception as exc:  # bcc raises plain Exception
                self._disable(f"{hook.system}:{hook.event}", f"attach failed: {exc}")
        if not self.attached:
            self.close()
            raise AuditorError("no probe could be attached: " + "; ".join(self.disabled.values()))
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

    def close(self) -> None:
        if self._bpf is not None:
            self._bpf.cleanup()
            self._bpf = None

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
        return 0

    def _on_lost(self, lost: int) -> None:
        self.perf_lost += lost

    def poll_raw(self, timeout_ms: int = 100) -> list[bytes]:
        """Undecoded records (the fast path: decode later, in batches); see :meth:`poll`."""
        if self._bpf is None:
            raise AuditorError("probes are not started", hint="call start() first")
        if self.output == "ringbuf":
            self._bpf.ring_buffer_poll(timeout_ms)
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

    def counters(self) -> dict[str, dict[str, int]]:
        """Per kind: ``seen`` and ``lost`` counted in the kernel, ``received`` by Python."""
        if self._bpf is None:
            raise AuditorError("probes are not started", hint="call start() first")
        table = self._bpf["counters"]
        out: dict[str, dict[str, int]] = {}
        for code, kind in KIND_CODES.items():
            seen = sum(int(v) for v in table[ctypes.c_int(code * 2)])
            lost = sum(int(v) for v in table[ctypes.c_int(code * 2 + 1)])
            out[kind.value] = {"seen": seen, "lost": lost, "received": self._received[code]}
        return out

    def _disable(self, what: str, why: str) -> None:
        self.disabled[what] = why
        log.warning("probe %s disabled: %s", what, why)
