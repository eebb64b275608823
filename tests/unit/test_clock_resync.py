"""Long runs: the kernel -> wall clock offsets are re-derived, and a drift of the wall clock is corrected.

The clocks are fakes passed in (no global monkeypatching): CLOCK_MONOTONIC frozen where the test puts
it, CLOCK_REALTIME = monotonic + an offset the test steps by 50 ms, as NTP would. Every expected time
below is built from those constants.
"""

from __future__ import annotations

import logging
import struct
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from auditor.agent import Agent, AgentConfig
from auditor.agent.clocksync import ClockResync
from auditor.model.logfiles import list_segments
from auditor.sources.dataplane.endpoints import Endpoint
from auditor.sources.dataplane.iptables_legacy import SOL_IP, LegacyReplaceWatcher
from auditor.sources.dataplane.kernel_clock import NftCommitClock
from auditor.sources.eventfile import read_events
from auditor.sources.live import ProbeConfig, ProbeSet
from auditor.sources.live.clock import WallClockOffset, measure_clock_offset

BASE = 1_700_000_000_000_000_000  # CLOCK_REALTIME - CLOCK_MONOTONIC when the agent starts
STEP = 50_000_000  # NTP moves the wall clock 50 ms forward
NETNS = 4026531840


class FakeClocks:
    """CLOCK_MONOTONIC and CLOCK_REALTIME for :class:`WallClockOffset`; the test moves them."""

    def __init__(self, monotonic_ns: int = 5_000_000_000, offset_ns: int = BASE) -> None:
        self.monotonic_ns, self.offset_ns = monotonic_ns, offset_ns

    def monotonic(self) -> int:
        return self.monotonic_ns

    def realtime(self) -> int:
        return self.monotonic_ns + self.offset_ns

    def wall_clock(self) -> WallClockOffset:
        return WallClockOffset(monotonic=self.monotonic, realtime=self.realtime)


def test_measure_clock_offset_takes_the_tightest_bracket() -> None:
    """Injected clocks: the narrowest monotonic bracket around a realtime read gives the offset."""
    mono = iter([100, 180, 1_000, 1_010, 2_000, 2_400])  # brackets of 80, 10 and 400 ns
    real = iter([BASE + 150, BASE + 1_005 + 7, BASE + 2_200])
    offset = measure_clock_offset(3, monotonic=lambda: next(mono), realtime=lambda: next(real))
    assert offset == BASE + 1_005 + 7 - (1_000 + 1_010) // 2  # the 10 ns bracket wins


def test_wall_clock_offset_resync_returns_the_correction() -> None:
    clocks = FakeClocks()
    wall = clocks.wall_clock()
    assert wall.ns == BASE and wall.to_wall(7) == BASE + 7
    clocks.monotonic_ns += 3_600_000_000_000  # an hour later, nothing moved: no correction
    assert wall.resync() == 0
    clocks.offset_ns -= STEP  # stepped back this time
    assert wall.resync() == -STEP
    assert wall.ns == BASE - STEP and wall.to_wall(7) == BASE - STEP + 7


def _refused(ktime_ns: int, sport: int) -> bytes:
    """One ``refused`` probe record (kind 3, 72 bytes) stamped ``ktime_ns`` by bpf_ktime_get_ns()."""
    head = struct.pack(
        "<QIIIHH16s16sHH", ktime_ns, 3, NETNS, 4242, 2, 0, bytes([10, 0, 0, 1]) + bytes(12),
        bytes([10, 244, 1, 7]) + bytes(12), sport, 8080,
    )  # fmt: skip
    return head + struct.pack("<II4x", 2, 0)


def test_probe_set_stamps_records_with_the_resynced_offset() -> None:
    clocks = FakeClocks()
    probes = ProbeSet(ProbeConfig(node="n1"), wall_clock=clocks.wall_clock())  # not started: no bcc
    before = probes.decode_frame([_refused(1_000, 40000)])
    clocks.offset_ns += STEP
    assert probes.resync_clock() == STEP
    after = probes.decode_frame([_refused(2_000, 40001)])
    assert before["time"].iloc[0].value == 1_000 + BASE
    assert after["time"].iloc[0].value == 2_000 + BASE + STEP
    assert probes.offset_ns == BASE + STEP and probes.decode_errors == 0


class _FakeCommitProbe:
    """A ``ProbeOpener`` and its ``RecordStream``: the test pushes commit records in."""

    def __init__(self) -> None:
        self.pending: list[bytes] = []
        self.programs: list[str] = []
        self._on_record: Callable[[bytes], None] | None = None

    def __call__(
        self,
        program: str,
        netns_inum: int,
        on_record: Callable[[bytes], None],
        on_lost: Callable[[int], None],
    ) -> _FakeCommitProbe:
        self.programs.append(program)
        self._on_record = on_record
        return self

    def poll(self, timeout_ms: int = 0) -> None:
        while self.pending and self._on_record is not None:
            self._on_record(self.pending.pop(0))

    def close(self) -> None:
        return


def _record(enter_ns: int, exit_ns: int, ret: int, pid: int, last: int) -> bytes:
    """``struct commit_event`` / ``struct replace_event``: u64 enter, u64 exit, s64 ret, u32 pid, u32
    tid (commit) or level (replace)."""
    return struct.pack("<QQqII", enter_ns, exit_ns, ret, pid, last)


def test_nft_commit_clock_resync_corrects_later_commits() -> None:
    clocks = FakeClocks()
    probe = _FakeCommitProbe()
    clock = NftCommitClock(NETNS, open_probe=probe, wall_clock=clocks.wall_clock())
    probe.pending.append(_record(10_000, 12_000, 100, 7, 7))
    assert clock.commit_time(7, receipt_ns=20_000, wait_ms=0) == 12_000 + BASE
    clocks.offset_ns += STEP
    assert clock.resync() == STEP
    probe.pending.append(_record(30_000, 31_000, 100, 7, 7))
    assert clock.commit_time(7, receipt_ns=40_000, wait_ms=0) == 31_000 + BASE + STEP


class _NoTable(LegacyReplaceWatcher):
    """The legacy watcher on a fake probe, without iptables-legacy-save: each replace adds one endpoint."""

    def _read(self, level: int, quiet: bool = False) -> None:
        return

    def _endpoints(self) -> set[Endpoint]:
        n = self.counters.events  # replaces seen so far
        return {Endpoint(f"10.244.0.{i}", 8080, "TCP", "default/web", None) for i in range(n)}


def test_legacy_watcher_resync_corrects_later_replaces() -> None:
    clocks = FakeClocks()
    probe = _FakeCommitProbe()
    watcher = _NoTable("n1", open_probe=probe, wall_clock=clocks.wall_clock())
    times: list[int] = []
    watcher.start(lambda record: times.append(record.time_ns))
    try:
        assert probe.programs == ["iptables_replace"]
        probe.pending.append(_record(1_000, 2_000, 0, 42, SOL_IP))
        _wait(lambda: len(times) == 1)
        clocks.offset_ns += STEP
        assert watcher.resync_clock() == STEP
        probe.pending.append(_record(5_000, 6_000, 0, 42, SOL_IP))
        _wait(lambda: len(times) == 2)
    finally:
        watcher.stop()
    assert times == [2_000 + BASE, 6_000 + BASE + STEP]


def _wait(cond: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


class RecordSource:
    """A packet source shaped like ``ProbeSource``: raw probe records decoded by a (not started)
    ``ProbeSet`` with the fake clocks, and its ``resync_clock``; records are released by the test."""

    name = "ebpf"

    def __init__(self, probes: ProbeSet) -> None:
        self.probes = probes
        self.pending: list[bytes] = []
        self._lock = threading.Lock()

    def emit(self, raw: bytes) -> None:
        with self._lock:
            self.pending.append(raw)

    def start(self) -> None:
        return

    def poll(self, timeout_ms: int) -> list[Any]:
        raise AssertionError("the agent uses poll_frame")

    def poll_frame(self, timeout_ms: int) -> pd.DataFrame:
        with self._lock:
            raws, self.pending = self.pending, []
        if not raws:
            time.sleep(timeout_ms / 1000)
        return self.probes.decode_frame(raws)

    def resync_clock(self) -> int:
        return self.probes.resync_clock()

    def lost(self) -> dict[str, int]:
        return {}

    def notes(self) -> dict[str, Any]:
        return {}

    def close(self) -> None:
        return


def test_agent_resyncs_and_events_after_it_carry_the_corrected_time(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clocks = FakeClocks()
    src = RecordSource(ProbeSet(ProbeConfig(node="n1"), wall_clock=clocks.wall_clock()))
    config = AgentConfig(node="n1", log_dir=tmp_path, metrics_addr=None, flush_ms=50, rss_limit_mb=0,
                         clock_resync_s=0.1, clock_drift_log_ms=1.0)  # fmt: skip
    agent = Agent(config, [src]).start()
    summaries: list[dict[str, Any]] = []
    runner = threading.Thread(target=lambda: summaries.append(agent.run()))
    drift = agent.clock_resync.drift
    with caplog.at_level(logging.INFO, logger="auditor.agent"):
        runner.start()
        try:
            src.emit(_refused(1_000_000, 40000))  # stamped with the start-time offset
            _wait(lambda: agent.written == 1)
            _wait(lambda: drift["ebpf"].resyncs >= 2)  # resyncs that found nothing to correct
            assert drift["ebpf"].logged == 0 and drift["ebpf"].max_abs_ns == 0
            clocks.offset_ns += STEP  # NTP steps the wall clock
            _wait(lambda: drift["ebpf"].logged == 1)
            src.emit(_refused(2_000_000, 40001))  # stamped after the resync
            _wait(lambda: agent.written == 2)
        finally:
            agent.request_stop()
            runner.join(20)
    (summary,) = summaries
    rows = pd.concat([read_events(p) for p in list_segments(tmp_path)]).sort_values("sport")
    assert [t.value for t in rows["time"]] == [1_000_000 + BASE, 2_000_000 + BASE + STEP]
    clock = summary["clock"]
    assert clock["interval_s"] == 0.1 and clock["logged"] == 1 and clock["max_drift_ms"] == 50.0
    assert clock["inputs"]["ebpf"]["max_drift_ms"] == 50.0 and clock["inputs"]["ebpf"]["errors"] == 0
    lines = [r.getMessage() for r in caplog.records if "clock resync" in r.getMessage()]
    assert len(lines) == 1 and "ebpf" in lines[0] and "+50.000 ms" in lines[0]


def test_clock_resync_schedule_threshold_and_failures(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    resync = ClockResync(interval_s=60.0, log_threshold_ns=1_000_000, monotonic=lambda: now[0])
    corrections = iter([400_000, -2_500_000])  # 0.4 ms: counted, not logged; -2.5 ms: logged
    resync.add("ebpf", lambda: next(corrections))
    resync.add("dataplane", lambda: None)  # stamps by receipt: nothing to resync

    def broken() -> int:
        raise OSError("gone")

    resync.add("other", broken)
    with caplog.at_level(logging.INFO, logger="auditor.agent"):
        resync.run_if_due()
        assert resync.drift["ebpf"].resyncs == 0  # not due before 60 s
        now[0] = 60.0
        resync.run_if_due()
        now[0] = 90.0
        resync.run_if_due()  # 30 s after: not due
        now[0] = 120.0
        resync.run_if_due()
    ebpf = resync.drift["ebpf"]
    assert (ebpf.resyncs, ebpf.logged, ebpf.last_ns, ebpf.max_abs_ns) == (2, 1, -2_500_000, 2_500_000)
    assert resync.drift["dataplane"].resyncs == 0 and resync.drift["other"].errors == 2
    notes = resync.notes()
    assert notes["resyncs"] == 2 and notes["logged"] == 1 and notes["max_drift_ms"] == 2.5
    logged = [r.getMessage() for r in caplog.records if "clock resync:" in r.getMessage()]
    assert len(logged) == 1 and "-2.500 ms" in logged[0] and "over the last 60 s" in logged[0]
    assert ClockResync(interval_s=0, monotonic=lambda: 1e9).due() is False  # 0: never
