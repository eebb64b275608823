"""From probe timestamps to UTC.

The probes stamp events with ``bpf_ktime_get_ns()``, which reads CLOCK_MONOTONIC (it stops
during suspend; ``bpf_ktime_get_boot_ns()`` would be CLOCK_BOOTTIME). Python reads the same
clock with ``time.clock_gettime_ns(time.CLOCK_MONOTONIC)``, so ``utc = ktime + offset`` with the
offset measured here. NTP slews (or steps) CLOCK_REALTIME against it, so a long run re-measures it:
:meth:`WallClockOffset.resync`, which the agent calls periodically (``AgentConfig.clock_resync_s``).
"""

from __future__ import annotations

import time
from collections.abc import Callable

Clock = Callable[[], int]  # a clock read, in ns


def _monotonic() -> int:
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC)


def _realtime() -> int:
    return time.clock_gettime_ns(time.CLOCK_REALTIME)


def measure_clock_offset(samples: int = 7, monotonic: Clock = _monotonic, realtime: Clock = _realtime) -> int:
    """CLOCK_REALTIME - CLOCK_MONOTONIC in ns, from the tightest of a few bracketed reads.

    ``monotonic`` / ``realtime`` read the two clocks (tests pass fakes).
    """
    best_width, best_offset = None, 0
    for _ in range(max(1, samples)):
        before = monotonic()
        real = realtime()
        after = monotonic()
        width = after - before
        if best_width is None or width < best_width:
            best_width, best_offset = width, real - (before + after) // 2
    return best_offset


class WallClockOffset:
    """``utc = ktime + ns``: the CLOCK_MONOTONIC -> CLOCK_REALTIME offset one probe stamps with.

    Measured when built and again by :meth:`resync`. Readers (a poll thread, a watcher thread)
    read :attr:`ns` once per stamp; :meth:`resync` may run in another thread (one int assignment).
    """

    def __init__(self, monotonic: Clock = _monotonic, realtime: Clock = _realtime, samples: int = 7) -> None:
        self._monotonic, self._realtime, self._samples = monotonic, realtime, samples
        self.ns = self._measure()

    def _measure(self) -> int:
        return measure_clock_offset(self._samples, self._monotonic, self._realtime)

    def to_wall(self, ktime_ns: int) -> int:
        """UTC ns of a ``bpf_ktime_get_ns()`` stamp, with the offset measured last."""
        return ktime_ns + self.ns

    def resync(self) -> int:
        """Re-measure; returns the correction in ns (new offset - old: how far the wall clock moved)."""
        new = self._measure()
        drift, self.ns = new - self.ns, new
        return drift
