"""Re-derive the agent's kernel -> wall clock offsets on long runs, and say how far they drifted.

The probes stamp events with ``bpf_ktime_get_ns()`` (CLOCK_MONOTONIC); each input turns that into
UTC with an offset (CLOCK_REALTIME - CLOCK_MONOTONIC) measured when it started. NTP slews the wall
clock (up to 500 ppm: 30 ms an hour) or steps it, so an agent that runs for days would stamp with a
stale offset. :class:`ClockResync` calls each input's ``resync_clock()`` every ``interval_s``; each
returns the correction it applied (new offset - old). Events stamped after a resync carry the
corrected time; those stamped during the interval before it are off by at most that correction.
A correction above ``log_threshold_ns`` is logged (one line); all are counted for the summary.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("auditor.agent")

Resync = Callable[[], int | None]  # re-measure; the correction in ns, None if nothing to do


@dataclass(slots=True)
class ClockDrift:
    """What the resyncs of one input found."""

    resyncs: int = 0
    logged: int = 0  # corrections above the log threshold
    errors: int = 0
    last_ns: int = 0  # the last correction (signed)
    max_abs_ns: int = 0  # the largest correction, in absolute value

    def as_dict(self) -> dict[str, Any]:
        return {
            "resyncs": self.resyncs,
            "logged": self.logged,
            "errors": self.errors,
            "last_drift_ms": round(self.last_ns / 1e6, 3),
            "max_drift_ms": round(self.max_abs_ns / 1e6, 3),
        }


class ClockResync:
    """Every ``interval_s`` (0: never), re-measure the offsets of the registered inputs."""

    def __init__(
        self,
        interval_s: float = 60.0,
        log_threshold_ns: int = 1_000_000,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.interval_s = interval_s
        self.log_threshold_ns = log_threshold_ns
        self._monotonic = monotonic
        self._inputs: dict[str, Resync] = {}
        self.drift: dict[str, ClockDrift] = {}
        self._next = monotonic() + interval_s
        self._last = monotonic()

    def add(self, name: str, resync: Resync) -> None:
        """Register an input's ``resync_clock``."""
        self._inputs[name] = resync
        self.drift.setdefault(name, ClockDrift())

    def due(self) -> bool:
        return self.interval_s > 0 and self._monotonic() >= self._next

    def run_if_due(self) -> None:
        if self.due():
            self.run()

    def run(self) -> None:
        """Resync every input now; log each correction above the threshold."""
        now = self._monotonic()
        since_s, self._last = now - self._last, now
        self._next = now + self.interval_s
        for name, resync in self._inputs.items():
            stats = self.drift[name]
            try:
                drift = resync()
            except Exception as exc:  # a resync must never stop the agent
                stats.errors += 1
                log.warning("clock resync of %s failed: %s: %s", name, type(exc).__name__, exc)
                continue
            if drift is None:
                continue
            stats.resyncs += 1
            stats.last_ns = drift
            stats.max_abs_ns = max(stats.max_abs_ns, abs(drift))
            if abs(drift) > self.log_threshold_ns:
                stats.logged += 1
                log.info(
                    "clock resync: %s kernel->wall offset corrected by %+.3f ms over the last %.0f s "
                    "(the wall clock was slewed or stepped); events from now on carry the corrected time",
                    name, drift / 1e6, since_s,
                )  # fmt: skip

    def notes(self) -> dict[str, Any]:
        """For the agent summary: the interval, totals and the per-input figures."""
        return {
            "interval_s": self.interval_s,
            "log_threshold_ms": self.log_threshold_ns / 1e6,
            "resyncs": sum(d.resyncs for d in self.drift.values()),
            "logged": sum(d.logged for d in self.drift.values()),
            "max_drift_ms": round(max((d.max_abs_ns for d in self.drift.values()), default=0) / 1e6, 3),
            "inputs": {name: d.as_dict() for name, d in self.drift.items()},
        }
