"""Timing a child process as a whole: wall time, peak resident memory, CPU time, exit code.

Shared by the benchmarks in bench/:

    from _measure import run_measured, median_of
    m = run_measured(["tcpdump", "-r", "f.pcap", "-nn"], stdout=subprocess.DEVNULL)
    print(m.wall_s, m.peak_rss_bytes, m.returncode)

Why a launcher: Linux carries the peak RSS of the image a process replaces into its ``ru_maxrss`` at
``execve`` (``exec_mmap`` records the old mm's high-water mark). A child forked or vforked straight
from a benchmark holding 200 MB would therefore report at least 200 MB, even for ``true``. So the
command is started by a tiny launcher (a C program compiled once with gcc into bench/out/, or, without
gcc, ``python -I -S``): the launcher forks the command from its own small image, reaps it with
``wait4`` and writes the command's rusage and wall time to a pipe. The figures are the command's own
(and its waited-for descendants'); the floor is the launcher's size, about 1 MB (C) or 10 MB (Python).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

_File = int | IO[Any] | None

_LAUNCHER_C = r"""
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* usage: launcher RESULT_FD COMMAND [ARGS...]; writes "status maxrss_kb utime stime wall" to RESULT_FD */
int main(int argc, char **argv) {
    if (argc < 3) return 125;
    int fd = atoi(argv[1]);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    pid_t pid = fork();
    if (pid < 0) return 126;
    if (pid == 0) {
        close(fd);
        execvp(argv[2], argv + 2);
        _exit(127);
    }
    int status = 0;
    struct rusage ru;
    while (wait4(pid, &status, 0, &ru) < 0) {
        if (errno != EINTR) return 126;
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double wall = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    dprintf(fd, "%d %ld %ld.%06ld %ld.%06ld %.9f\n", status, ru.ru_maxrss,
            (long)ru.ru_utime.tv_sec, (long)ru.ru_utime.tv_usec,
            (long)ru.ru_stime.tv_sec, (long)ru.ru_stime.tv_usec, wall);
    return 0;
}
"""

_LAUNCHER_PY = """
import os, sys, time
fd, argv = int(sys.argv[1]), sys.argv[2:]
t0 = time.monotonic()
pid = os.fork()
if pid == 0:
    os.close(fd)
    try:
        os.execvp(argv[0], argv)
    finally:
        os._exit(127)
_, status, ru = os.wait4(pid, 0)
wall = time.monotonic() - t0
os.write(fd, f"{status} {ru.ru_maxrss} {ru.ru_utime:.6f} {ru.ru_stime:.6f} {wall:.9f}\\n".encode())
"""

_CACHE = Path(__file__).resolve().parent / "out" / ".launcher"


@dataclass(frozen=True)
class Measured:
    """One run of a child process."""

    wall_s: float
    peak_rss_bytes: int
    returncode: int  # negative: killed by that signal (as in subprocess)
    user_s: float = 0.0
    sys_s: float = 0.0
    timed_out: bool = False

    @property
    def peak_rss_mb(self) -> float:
        return self.peak_rss_bytes / 1e6


def launcher() -> list[str]:
    """The launcher's argv prefix: the compiled C one if gcc is there (built once), else Python."""
    digest = hashlib.sha256(_LAUNCHER_C.encode()).hexdigest()[:12]
    for cache in (_CACHE, Path(tempfile.gettempdir()) / "auditor-bench-launcher"):
        binary = cache / f"launcher-{digest}"
        if binary.exists():
            return [str(binary)]
        gcc = shutil.which("gcc") or shutil.which("cc")
        if gcc is None:
            break
        try:
            cache.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(dir=cache) as tmp:
                src = Path(tmp) / "launcher.c"
                src.write_text(_LAUNCHER_C)
                built = subprocess.run([gcc, "-O2", "-o", str(Path(tmp) / "launcher"), str(src)],
                                       capture_output=True, timeout=120, check=False)
                if built.returncode == 0:
                    os.replace(Path(tmp) / "launcher", binary)  # atomic: concurrent builders agree
                    return [str(binary)]
        except OSError:
            continue
    return [sys.executable, "-I", "-S", "-c", _LAUNCHER_PY]


def run_measured(
    argv: Sequence[str],
    *,
    stdout: _File = None,
    stderr: _File = None,
    stdin: _File = subprocess.DEVNULL,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    timeout_s: float | None = None,
) -> Measured:
    """Run ``argv`` to completion; return its wall time, peak RSS (ru_maxrss) and exit code.

    Do not pass ``subprocess.PIPE``: nothing reads it while the child runs; use a file or DEVNULL.
    ``timeout_s`` bounds the run: the command's process group is killed and ``timed_out`` is set.
    Raises ``FileNotFoundError`` if the program does not exist.
    """
    if not argv:
        raise ValueError("empty command")
    path = env.get("PATH") if env is not None else None
    if shutil.which(argv[0], path=path) is None and not (cwd and Path(cwd, argv[0]).is_file()):
        raise FileNotFoundError(f"no such program: {argv[0]}")
    read_fd, write_fd = os.pipe()
    try:
        proc = subprocess.Popen([*launcher(), str(write_fd), *argv], stdin=stdin, stdout=stdout,
                                stderr=stderr, env=dict(env) if env is not None else None, cwd=cwd,
                                pass_fds=(write_fd,), start_new_session=True)
    except BaseException:
        os.close(read_fd)
        os.close(write_fd)
        raise
    os.close(write_fd)
    timed_out = threading.Event()

    def kill() -> None:
        timed_out.set()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # the launcher and the command share this group

    timer = threading.Timer(timeout_s, kill) if timeout_s is not None else None
    if timer is not None:
        timer.daemon = True
        timer.start()
    try:
        with os.fdopen(read_fd, "rb") as result:
            line = result.read().decode()  # EOF when the launcher exits (or is killed)
        proc.wait()
    except BaseException:  # Ctrl-C included: the command is in its own session, do not leave it behind
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise
    finally:
        if timer is not None:
            timer.cancel()
    fields = line.split()
    if len(fields) != 5 and timed_out.is_set():
        assert timeout_s is not None
        return Measured(wall_s=timeout_s, peak_rss_bytes=0, returncode=-signal.SIGKILL, timed_out=True)
    if len(fields) != 5:
        raise RuntimeError(f"launcher failed (exit {proc.returncode}) running {argv[0]}")
    status = int(fields[0])
    return Measured(
        wall_s=float(fields[4]),
        peak_rss_bytes=int(fields[1]) * 1024,  # Linux reports kilobytes
        returncode=os.waitstatus_to_exitcode(status),
        user_s=float(fields[2]),
        sys_s=float(fields[3]),
        timed_out=timed_out.is_set(),
    )


def median_of(runs: Sequence[Measured]) -> Measured:
    """Median wall and CPU times over the runs, with the highest peak RSS and the first failure's code."""
    if not runs:
        raise ValueError("no runs")
    return Measured(
        wall_s=statistics.median(r.wall_s for r in runs),
        peak_rss_bytes=max(r.peak_rss_bytes for r in runs),
        returncode=next((r.returncode for r in runs if r.returncode != 0), 0),
        user_s=statistics.median(r.user_s for r in runs),
        sys_s=statistics.median(r.sys_s for r in runs),
        timed_out=any(r.timed_out for r in runs),
    )
