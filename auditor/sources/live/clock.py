"""From probe timestamps to UTC.

The probes stamp events with ``bpf_ktime_get_ns()``, which reads CLOCK_MONOTONIC (it stops
during suspend; ``bpf_ktime_get_boot_ns()`` would be CLOCK_BOOTTIME). Python reads the same
clock with ``time.clock_gettime_ns(time.CLOCK_MONOTONIC)``, so ``utc = ktime + offset`` with the
offset measured here. NTP slewing moves CLOCK_REALTIME against it: re-measure on long runs.
"""

from __future__ import annotations

import time


def measure_clock_offset(samples: int = 7) -> int:
    """CLOCK_REALTIME - CLOCK_MONOTONIC in ns, from the tightest of a few bracketed reads."""
    best_width, best_offset = None, 0
    for _ in range(max(1, samples)):
        before = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
        real = time.clock_gettime_ns(time.CLOCK_REALTIME)
        after = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
        width = after - before
        if best_width is None or width < best_width:
            best_width, best_offset = width, real - (before + after) // 2
    return best_offset
