"""Runs of the probes' programs that the kernel skipped: ``recursion_misses`` of each loaded program.

A program attached to a tracepoint through perf (bcc's ``attach_tracepoint``) runs under the kernel's
per-CPU ``bpf_prog_active`` guard (``trace_call_bpf``): while any kprobe or tracepoint program runs on a
CPU, another one that fires on that CPU is not run at all. That happens when a softirq -- the network
receive path, where a closed port answers a SYN with a reset -- runs on the exit of an interrupt that
arrived while a program was running in task context (``inet_sock_set_state`` on a ``connect()`` or a
``close()``, a syscall tracepoint). The skipped run leaves no event, no counter and no aggregate: only
the program's ``recursion_misses``, shown in ``/proc/<pid>/fdinfo/<prog fd>`` (counted for tracepoint
programs by recent kernels, 6.7 and later; older ones report nothing or 0). Seen in the ingress lab
(kernel 6.18): a SYN the ingress retransmitted from its retransmit timer (the old pod's TIME_WAIT socket
had answered the first with an ACK) was refused, and the pod's ``tcp_send_reset``, the ingress's
``tcp_receive_reset`` and its ``inet_sock_set_state`` runs were all skipped (2 each, two refusals lost).
A raw tracepoint program has its own guard, per program: it is skipped only inside a run of itself.

Pure except :func:`read_recursion_misses` (one small read of ``/proc/self/fdinfo``).
"""

from __future__ import annotations

from pathlib import Path


def parse_fdinfo(text: str) -> dict[str, str]:
    """``key: value`` lines of a ``/proc/<pid>/fdinfo/<fd>`` file (values stripped)."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            out[key.strip()] = value.strip()
    return out


def recursion_misses(fdinfo: str) -> int | None:
    """The program's skipped runs from its fdinfo text; None when the kernel does not report them
    (older kernels) or the value is not a number."""
    value = parse_fdinfo(fdinfo).get("recursion_misses")
    if value is None or not value.isdigit():
        return None
    return int(value)


def read_recursion_misses(fd: int, proc: Path = Path("/proc/self/fdinfo")) -> int | None:
    """:func:`recursion_misses` of program ``fd`` of this process; None when unreadable or unreported."""
    try:
        return recursion_misses((proc / str(fd)).read_text())
    except OSError:
        return None


__all__ = ["parse_fdinfo", "read_recursion_misses", "recursion_misses"]
