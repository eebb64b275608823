"""The agent's memory footprint: measure it, and give back what the probes' compilation left behind.

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
