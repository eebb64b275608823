"""The agent's memory footprint: measure it, give back what the probes' compilation left behind, keep
the heap from holding what was freed, and keep the whole under the limit (:class:`MemoryGuard`).

bcc compiles the probes with clang/LLVM inside the process: ~80 MB of their code pages stay resident
though they are never run again, plus freed heap that glibc keeps. :func:`release_unused` asks the
kernel to page those library mappings out (``MADV_PAGEOUT``: clean file pages, read back on a fault if
ever needed) and glibc to return free heap (``malloc_trim``). Linux only; elsewhere it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)

MADV_PAGEOUT = 21
COMPILER_LIBRARIES = ("libLLVM", "libclang")


def rss_bytes() -> int:
    """Resident set size of this process (0 where /proc is unreadable)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name or "libc.so.6", use_errno=True)
    except OSError:
        return None


def release_unused(maps: str = "/proc/self/maps") -> int:
    """Page out the compiler libraries' mappings and trim the heap; returns the RSS bytes given back."""
    libc = _libc()
    if libc is None:
        return 0
    before = rss_bytes()
    try:
        with open(maps, encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        lines = []
    madvise = libc.madvise
    madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    for line in lines:
        parts = line.split()
        if len(parts) < 6 or not any(lib in parts[5] for lib in COMPILER_LIBRARIES):
            continue
        start, end = (int(x, 16) for x in parts[0].split("-"))
        if madvise(start, end - start, MADV_PAGEOUT) != 0:
            log.debug("madvise(%s) failed: errno %d", parts[5], ctypes.get_errno())
    if hasattr(libc, "malloc_trim"):
        libc.malloc_trim(0)
    return max(0, before - rss_bytes())


# -- the allocator ----------------------------------------------------------------------------------
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_ARENA_MAX = -1, -3, -8  # mallopt parameters (glibc malloc.h)


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd",
                                                      "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]  # fmt: skip


def configure_allocator(arena_max: int = 2, mmap_threshold: int = 256 << 10, trim_threshold: int = 8 << 20) -> bool:
    """Make glibc give freed memory back, measured under a refusal storm (bench/README.md).

    Without it the agent's heap kept 130 MB of freed memory: each thread that decodes or writes batches
    gets its own arena (up to 8 per CPU), and glibc raises its mmap threshold to the largest block
    freed (up to 32 MB), so batch-sized arrays come from those arenas and stay there. A fixed
    threshold (arrays of 256 KiB and more are mapped and unmapped), two arenas and a trim threshold keep
    the heap near what is in use. Call before the threads start. False where it is not glibc."""
    libc = _libc()
    if libc is None or not hasattr(libc, "mallopt"):
        return False
    ok = True
    for param, value in ((M_ARENA_MAX, arena_max), (M_MMAP_THRESHOLD, mmap_threshold),
                         (M_TRIM_THRESHOLD, trim_threshold)):  # fmt: skip
        ok = bool(libc.mallopt(param, value)) and ok
    return ok


def heap_stats() -> dict[str, float]:
    """glibc's heap in MB: ``arena`` (held by the arenas), ``in_use``, ``free`` (held, not in use),
    ``mmap`` (blocks mapped on their own); {} where it is not glibc."""
    libc = _libc()
    if libc is None or not hasattr(libc, "mallinfo2"):
        return {}
    libc.mallinfo2.restype = _MallInfo2
    m = libc.mallinfo2()
    mb = 2**20
    return {"arena": round(m.arena / mb, 1), "in_use": round(m.uordblks / mb, 1),
            "free": round(m.fordblks / mb, 1), "mmap": round(m.hblkhd / mb, 1)}  # fmt: skip


def trim_heap() -> None:
    """Return the heap's free pages to the kernel (``malloc_trim``)."""
    libc = _libc()
    if libc is not None and hasattr(libc, "malloc_trim"):
        libc.malloc_trim(0)


def process_rss(pid: int) -> int:
    """Resident set size of another process (0 if it is gone or unreadable)."""
    try:
        with open(f"/proc/{pid}/statm", encoding="ascii") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


# -- the guard --------------------------------------------------------------------------------------
@dataclass
class MemoryState:
    """One sample: the agent's RSS and its watch child's, and what the guard decided."""

    rss: int = 0
    child: int = 0
    shed: bool = False  # above the soft line: shed the live window's oldest half, trim the heap
    pause: bool = False  # above the hard line (or still above the soft one after it): take no detail

    @property
    def total(self) -> int:
        return self.rss + self.child


class MemoryGuard:
    """Keeps the agent and its watch child under ``limit`` bytes together, detail before memory.

    Sampled every ~0.1 s by the agent. Above ``soft`` x limit: shed (the live window's oldest half,
    counted, and free heap back to the kernel), at most once per ``shed_every_s``. Above ``hard`` x
    limit: pause detail, i.e. the poll loops stop taking events, so the kernel's ring buffer drops them
    (counted per kind; the in-kernel aggregates still count them exactly), until the total is back
    under the soft line, or under the hard one with nothing left to shed (``drained``: the window and
    the queue are empty, so pausing cannot lower it further). ``rss`` and ``child_rss`` are read
    functions (tests pass fakes).
    """

    def __init__(
        self,
        limit: int,
        rss: Callable[[], int] = rss_bytes,
        child_rss: Callable[[], int] = lambda: 0,
        soft: float = 0.85,
        hard: float = 0.95,
        shed_every_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit = max(0, limit)
        self.rss, self.child_rss, self.clock = rss, child_rss, clock
        self.soft, self.hard = int(self.limit * soft), int(self.limit * hard)
        self.shed_every_s = shed_every_s
        self.paused = False
        self._last_shed = -1e18
        self.peak = MemoryState()
        self.over_limit = 0  # samples above the limit itself
        self.pauses = 0  # times detail was paused
        self.sheds = 0

    def sample(self, drained: bool = False) -> MemoryState:
        state = MemoryState(self.rss(), self.child_rss())
        if state.total > self.peak.total:
            self.peak = MemoryState(state.rss, state.child)
        if not self.limit:
            return state
        total = state.total
        self.over_limit += total > self.limit
        if total > self.soft and self.clock() - self._last_shed >= self.shed_every_s:
            state.shed = True
            self._last_shed = self.clock()
            self.sheds += 1
        if total > self.hard and not self.paused:
            self.paused = True
            self.pauses += 1
        elif self.paused and (total <= self.soft or (drained and total <= self.hard)):
            self.paused = False
        state.pause = self.paused
        return state
