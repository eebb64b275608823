"""Dataplane commit probes without root: record decoders on byte literals, and the pairing of a
monitor's generation line with the kernel's record of the commit that made it."""

from __future__ import annotations

import struct
from collections.abc import Callable

import pytest

from auditor.sources.dataplane.iptables_rules import parse_monitor_line
from auditor.sources.dataplane.kernel_clock import (
    Commit,
    CommitMatcher,
    NftCommitClock,
    decode_commit,
    decode_replace,
)
from auditor.sources.dataplane.nft_rules import parse_nft_monitor_line
from auditor.sources.live.clock import WallClockOffset

# struct commit_event {u64 enter_ns; u64 exit_ns; s64 ret; u32 pid; u32 tid;} little-endian
COMMIT_BYTES = (
    b"\x00\xe1\xf5\x05\x00\x00\x00\x00"  # enter 100,000,000
    b"\x40\x0a\x06\x06\x00\x00\x00\x00"  # exit 101,059,136
    b"\x4c\x01\x00\x00\x00\x00\x00\x00"  # ret 332 bytes
    b"\x7a\x4a\x00\x00"  # pid 19066
    b"\x7b\x4a\x00\x00"  # tid 19067
)


def test_decode_commit_reads_the_c_struct() -> None:
    c = decode_commit(COMMIT_BYTES)
    assert c == Commit(enter_ns_raw=100_000_000, exit_ns_raw=101_059_136, ret=332, pid=19066, tid=19067)


def test_decode_commit_negative_return_and_short_record() -> None:
    raw = bytearray(COMMIT_BYTES)
    raw[16:24] = (-1).to_bytes(8, "little", signed=True)  # -EPERM
    assert decode_commit(bytes(raw)).ret == -1
    assert decode_commit(COMMIT_BYTES + b"\0" * 8).tid == 19067  # perf may pad records
    with pytest.raises(ValueError, match="24 bytes"):
        decode_commit(COMMIT_BYTES[:24])


def test_decode_replace_reads_the_c_struct() -> None:
    raw = (
        (5).to_bytes(8, "little") + (9).to_bytes(8, "little") + (0).to_bytes(8, "little", signed=True)
        + (4242).to_bytes(4, "little") + (41).to_bytes(4, "little")
    )  # fmt: skip
    r = decode_replace(raw)
    assert (r.enter_ns_raw, r.exit_ns_raw, r.ret, r.pid, r.level) == (5, 9, 0, 4242, 41)
    with pytest.raises(ValueError):
        decode_replace(raw[:-1])


def test_generation_lines_name_the_committing_thread() -> None:
    gen = parse_monitor_line("NEWGEN: GENID=4 PID=19066 NAME=iptables-nft-re\n")
    assert gen is not None and gen.kind == "generation" and gen.pid == 19066
    old = parse_monitor_line("NEWGEN: GENID=4\n")
    assert old is not None and old.kind == "generation" and old.pid is None
    nft = parse_nft_monitor_line("# new generation 3 by process 30148 (nft)\n")
    assert nft is not None and nft.kind == "generation" and nft.pid == 30148


def _c(enter: int, tid: int, ret: int = 100, exit_: int | None = None) -> Commit:
    return Commit(enter, enter + 1_000 if exit_ is None else exit_, ret, tid, tid)


def test_matcher_takes_the_thread_latest_commit_entered_before_the_line() -> None:
    m = CommitMatcher()
    m.add(_c(1_000, tid=7))  # an empty batch of thread 7: committed nothing, no generation line
    m.add(_c(5_000, tid=7))
    m.add(_c(6_000, tid=8))
    m.add(_c(9_000, tid=7))  # entered after the line was read: a later commit
    found = m.match(7, receipt_ns=8_000)
    assert found == _c(5_000, tid=7)
    assert sorted(c.enter_ns_raw for c in m._commits) == [6_000, 9_000]  # 7's older ones consumed
    assert m.match(8, receipt_ns=8_000) == _c(6_000, tid=8)
    assert m.match(8, receipt_ns=8_000) is None  # each commit is used once
    assert m.match(7, receipt_ns=10_000) == _c(9_000, tid=7)
    assert len(m) == 0


def test_matcher_ignores_refused_batches_and_prunes_old_records() -> None:
    m = CommitMatcher(keep_ns=10_000, limit=3)
    m.add(_c(1_000, tid=7, ret=-22))  # EINVAL: the kernel refused it, no commit
    assert m.failed == 1 and len(m) == 0 and m.match(7, 2_000) is None
    for enter in (1_000, 2_000, 3_000, 4_000):
        m.add(_c(enter, tid=enter))
    assert len(m) == 3 and m.dropped == 1  # over the limit: the oldest goes
    m.prune(now_ns=14_500)  # 2_000 and 3_000 exited more than 10 us before
    assert [c.enter_ns_raw for c in m._commits] == [4_000] and m.dropped == 3


def test_matcher_without_a_thread_id_takes_the_latest_of_any() -> None:
    m = CommitMatcher()
    m.add(_c(1_000, tid=1))
    m.add(_c(2_000, tid=2))
    assert m.match(None, receipt_ns=3_000) == _c(2_000, tid=2)
    assert len(m) == 0


def _encode(c: Commit) -> bytes:
    """The bytes of ``struct commit_event`` (what the probe hands on)."""
    return struct.pack("<QQqII", c.enter_ns_raw, c.exit_ns_raw, c.ret, c.pid, c.tid)


class _FakeProbe:
    """A ``ProbeOpener`` and the ``RecordStream`` it opens: records arrive at set (fake) monotonic times."""

    def __init__(self, arrivals: list[tuple[int, Commit]]) -> None:
        self.now = 0
        self.arrivals = arrivals  # (monotonic ns at which the record reaches Python, record)
        self.opened: list[tuple[str, int]] = []
        self.closed = False
        self._on_record: Callable[[bytes], None] | None = None

    def __call__(
        self,
        program: str,
        netns_inum: int,
        on_record: Callable[[bytes], None],
        on_lost: Callable[[int], None],
    ) -> _FakeProbe:
        self.opened.append((program, netns_inum))
        self._on_record = on_record
        return self

    def poll(self, timeout_ms: int = 0) -> None:
        self.now += timeout_ms * 1_000_000
        while self.arrivals and self.arrivals[0][0] <= self.now:
            self.deliver(_encode(self.arrivals.pop(0)[1]))

    def deliver(self, raw: bytes) -> None:
        assert self._on_record is not None, "not opened"
        self._on_record(raw)

    def close(self) -> None:
        self.closed = True

    def tick(self) -> int:
        return self.now


OFFSET = 1_700_000_000_000_000_000  # realtime - monotonic of the fake clocks below


def _clock(probe: _FakeProbe) -> NftCommitClock:
    """The real NftCommitClock on a fake probe, with wall clocks frozen at ``OFFSET`` apart."""
    wall = WallClockOffset(monotonic=lambda: 0, realtime=lambda: OFFSET)
    return NftCommitClock(4026531840, open_probe=probe, wall_clock=wall)


def test_commit_clock_opens_the_nft_commit_probe_and_decodes_its_records() -> None:
    probe = _FakeProbe([(0, _c(1_000, tid=5))])
    clock = _clock(probe)
    assert probe.opened == [("nft_commit", 4026531840)]
    probe.deliver(b"short")  # an undecodable record
    clock.poll(0)
    assert clock.records == 1 and clock.bad == 1 and len(clock.matcher) == 1
    clock.close()
    assert probe.closed


def test_commit_time_waits_for_the_record_then_falls_back() -> None:
    late = _c(1_000, tid=5)
    probe = _FakeProbe([(30_000_000, late)])  # the sendmsg exit reaches Python 30 ms after the line
    clock = _clock(probe)
    t = clock.commit_time(5, receipt_ns=2_000, wait_ms=250, clock=probe.tick)
    assert t == late.exit_ns_raw + OFFSET
    assert probe.now >= 30_000_000
    never = _FakeProbe([])
    assert _clock(never).commit_time(5, receipt_ns=2_000, wait_ms=100, clock=never.tick) is None
    assert 100_000_000 <= never.now <= 120_000_000  # bounded wait
