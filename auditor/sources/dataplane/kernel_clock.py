"""Kernel-side times of rule commits, from eBPF probes on the syscalls that write the rules.

Two probes (C in ``probes/``, sharing ``probes/dataplane.h``), both filtered in the kernel to the
watched network namespace and stamped with ``bpf_ktime_get_ns()`` when the syscall returns:

* ``iptables_replace.c``: legacy iptables' table replace, ``setsockopt(IPT_SO_SET_REPLACE)``;
  record :class:`Replace` (:func:`decode_replace`).
* ``nft_commit.c``: an nf_tables batch sent with ``sendmsg()`` (iptables-nft, nft); nfnetlink runs
  the batch, commit included, inside that call. Record :class:`Commit` (:func:`decode_commit`).

The netlink monitors (``xtables-monitor``, ``nft monitor``) print no time; their lines reach the
watcher a few ms after the commit, sometimes tens of ms on a loaded node. Each transaction ends
with a generation line naming the thread that committed it, so :class:`CommitMatcher` (pure) pairs
that line with the probe's record of the same thread, and :class:`NftCommitClock` gives the
watcher the kernel time of the commit.

This module loads nothing itself: a :class:`ProbeOpener` (by default
:func:`auditor.sources.live.commit_probes.open_commit_probe`, the only place that touches bcc) loads
a probe and returns a :class:`RecordStream` that feeds raw records to a callback. Kernel times become
UTC with a :class:`~auditor.sources.live.clock.WallClockOffset`, re-measured by ``resync`` on long
runs (the agent calls it periodically).
"""

from __future__ import annotations

import logging
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from auditor.sources.live.clock import WallClockOffset

log = logging.getLogger(__name__)


_COMMIT = struct.Struct("<QQqII")  # struct commit_event in probes/nft_commit.c
_REPLACE = struct.Struct("<QQqII")  # struct replace_event in probes/iptables_replace.c


@dataclass(frozen=True, slots=True)
class Commit:
    """One nf_tables batch sent from the watched namespace (raw kernel values)."""

    enter_ns_raw: int  # bpf_ktime_get_ns() (CLOCK_MONOTONIC) at sendmsg entry
    exit_ns_raw: int  # ... at its return: the commit is done
    ret: int  # bytes sent, or -errno (refused: nothing committed)
    pid: int  # tgid
    tid: int  # thread id (what NEWGEN / "new generation" lines name)


@dataclass(frozen=True, slots=True)
class Replace:
    """One legacy iptables table replace from the watched namespace (raw kernel values)."""

    enter_ns_raw: int
    exit_ns_raw: int
    ret: int  # 0, or -errno (the kernel refused the table)
    pid: int
    level: int  # SOL_IP (0) or SOL_IPV6 (41)


def decode_commit(raw: bytes) -> Commit:
    """``struct commit_event`` -> :class:`Commit`; ValueError if the record is short."""
    if len(raw) < _COMMIT.size:
        raise ValueError(f"commit record of {len(raw)} bytes, expected {_COMMIT.size}")
    return Commit(*_COMMIT.unpack_from(raw))


def decode_replace(raw: bytes) -> Replace:
    """``struct replace_event`` -> :class:`Replace`; ValueError if the record is short."""
    if len(raw) < _REPLACE.size:
        raise ValueError(f"replace record of {len(raw)} bytes, expected {_REPLACE.size}")
    return Replace(*_REPLACE.unpack_from(raw))


class CommitMatcher:
    """Pairs generation lines with commit records (pure; fed by :class:`NftCommitClock`).

    A generation line names the committing thread and is read at ``receipt_ns`` (CLOCK_MONOTONIC).
    Its commit is the latest successful record of that thread that entered sendmsg() no later than
    the line was read; it and that thread's older records are then consumed (a batch that changed
    nothing commits without a generation line, so records may go unmatched). Without a thread id
    (a tool that does not print it) the latest record of any thread is taken.
    """

    def __init__(self, keep_ns: int = 30_000_000_000, limit: int = 4096) -> None:
        self.keep_ns, self.limit = keep_ns, limit
        self._commits: list[Commit] = []
        self.failed = 0  # batches the kernel refused
        self.dropped = 0  # records pruned unmatched (older than keep_ns, or over the limit)

    def add(self, commit: Commit) -> None:
        if commit.ret < 0:
            self.failed += 1
            return
        self._commits.append(commit)
        if len(self._commits) > self.limit:
            self.dropped += len(self._commits) - self.limit
            del self._commits[: len(self._commits) - self.limit]

    def match(self, tid: int | None, receipt_ns: int) -> Commit | None:
        candidates = [
            c for c in self._commits if (tid is None or c.tid == tid) and c.enter_ns_raw <= receipt_ns
        ]
        best = max(candidates, key=lambda c: c.enter_ns_raw, default=None)
        if best is not None:
            chosen = best
            self._commits = [
                c
                for c in self._commits
                if not ((tid is None or c.tid == chosen.tid) and c.enter_ns_raw <= chosen.enter_ns_raw)
            ]
        return best

    def prune(self, now_ns: int) -> None:
        kept = [c for c in self._commits if now_ns - c.exit_ns_raw <= self.keep_ns]
        self.dropped += len(self._commits) - len(kept)
        self._commits = kept

    def __len__(self) -> int:
        return len(self._commits)


class RecordStream(Protocol):
    """A loaded commit probe: :meth:`poll` hands its raw records to the callback it was opened with."""

    def poll(self, timeout_ms: int = 0) -> None:
        """Deliver what the probe recorded, waiting up to ``timeout_ms`` for the first record."""
        ...

    def close(self) -> None:
        """Detach the probe (idempotent)."""
        ...


class ProbeOpener(Protocol):
    """Loads commit probe ``program`` (``nft_commit`` or ``iptables_replace``) for the namespace
    ``netns_inum``; raw records go to ``on_record``, perf-buffer losses to ``on_lost``. Raises
    AuditorError if it cannot. Tests pass fakes; the agent the bcc one (:func:`bcc_probe_opener`)."""

    def __call__(
        self,
        program: str,
        netns_inum: int,
        on_record: Callable[[bytes], None],
        on_lost: Callable[[int], None],
    ) -> RecordStream: ...


def bcc_probe_opener() -> ProbeOpener:
    """The real opener: bcc, in :mod:`auditor.sources.live.commit_probes` (imported on first use)."""
    from auditor.sources.live.commit_probes import open_commit_probe

    return open_commit_probe


class NftCommitClock:
    """The kernel time of each nf_tables commit made from one namespace (root, bcc).

    Used from one thread (the watcher's): :meth:`commit_time` polls the probe's perf buffer.
    :meth:`resync` (any thread) re-measures the kernel -> wall clock offset.
    """

    def __init__(
        self,
        netns_inum: int,
        open_probe: ProbeOpener | None = None,
        wall_clock: WallClockOffset | None = None,
    ) -> None:
        self.matcher = CommitMatcher()
        self.records = 0  # commit records received
        self.lost = 0  # records the perf buffer dropped
        self.bad = 0  # undecodable records
        opener = open_probe if open_probe is not None else bcc_probe_opener()
        self._probe: RecordStream | None = opener("nft_commit", netns_inum, self._on_commit, self._on_lost)
        self.wall_clock = wall_clock if wall_clock is not None else WallClockOffset()

    def _on_commit(self, raw: bytes) -> None:
        try:
            commit = decode_commit(raw)
        except ValueError:
            self.bad += 1
            return
        self.records += 1
        self.matcher.add(commit)

    def _on_lost(self, lost: int) -> None:
        self.lost += lost

    def poll(self, timeout_ms: int = 0) -> None:
        if self._probe is not None:
            self._probe.poll(timeout_ms)

    def commit_time(
        self,
        tid: int | None,
        receipt_ns: int,
        wait_ms: int = 250,
        clock: Callable[[], int] = time.monotonic_ns,
    ) -> int | None:
        """UTC ns of the commit a generation line read at ``receipt_ns`` (monotonic) announced.

        Waits up to ``wait_ms`` for the probe's record (sendmsg returns just after the monitor was
        notified); None if none came (the watcher then keeps the line's receipt time).
        """
        deadline = clock() + wait_ms * 1_000_000
        self.poll(0)
        while True:
            found = self.matcher.match(tid, receipt_ns)
            if found is not None:
                self.matcher.prune(receipt_ns)
                return self.wall_clock.to_wall(found.exit_ns_raw)
            remaining_ms = (deadline - clock()) // 1_000_000
            if remaining_ms <= 0:
                self.matcher.prune(receipt_ns)
                return None
            self.poll(int(min(remaining_ms, 20)))

    def resync(self) -> int:
        """Re-measure the kernel -> wall clock offset; returns the correction in ns (new - old)."""
        return self.wall_clock.resync()

    def close(self) -> None:
        if self._probe is not None:
            self._probe.close()
            self._probe = None
