"""The dataplane's rule-commit probes, loaded with bcc for one network namespace.

``probes/nft_commit.c`` (an nf_tables batch sent with ``sendmsg()``) and
``probes/iptables_replace.c`` (legacy ``setsockopt(IPT_SO_SET_REPLACE)``), both compiled with
``probes/dataplane.h``. This module only loads a program and hands its raw perf-buffer records to a
callback: decoding and matching are :mod:`auditor.sources.dataplane.kernel_clock`'s, which receives
:func:`open_commit_probe` as its ``ProbeOpener`` (only ``auditor.sources.live`` imports bcc).
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from pathlib import Path
from typing import Any

from auditor.errors import AuditorError
from auditor.sources.live.probes_dir import PROBES_DIR

# program name -> (C file in probes/, its perf output table)
PROGRAMS = {
    "nft_commit": ("nft_commit.c", "commits"),
    "iptables_replace": ("iptables_replace.c", "replaces"),
}


def load_program(c_file: str, netns_inum: int, probes_dir: Path = PROBES_DIR) -> Any:
    """Compile ``probes/dataplane.h`` + ``probes/<c_file>`` for one namespace with bcc."""
    from auditor.sources.live.btf import load_vmlinux_btf
    from auditor.sources.live.environment import prepare_bcc_environment

    env = prepare_bcc_environment()
    if not env.ready:
        raise AuditorError(f"cannot load the {c_file} probe: " + "; ".join(env.notes))
    btf = load_vmlinux_btf()
    try:
        cflags = [
            f"-DOFF_TASK_NSPROXY={btf.member_offset('task_struct', 'nsproxy')}",
            f"-DOFF_NSPROXY_NET_NS={btf.member_offset('nsproxy', 'net_ns')}",
            f"-DOFF_NET_NS_INUM={btf.member_offset('net', 'ns.inum')}",
            f"-DNETNS_INUM={netns_inum}u",
        ]
    except KeyError as exc:
        raise AuditorError(f"kernel BTF lacks a member the {c_file} probe reads: {exc}") from exc
    text = (probes_dir / "dataplane.h").read_text() + "\n" + (probes_dir / c_file).read_text()
    try:
        from bcc import BPF  # lazily: only this package imports bcc

        return BPF(text=text, cflags=[*env.extra_cflags, *cflags])
    except Exception as exc:  # bcc raises plain Exception on compile/load errors
        raise AuditorError(f"cannot load the {c_file} probe: {str(exc).splitlines()[0]}") from exc


class CommitProbe:
    """One loaded commit probe: :meth:`poll` hands each raw record to ``on_record``, in the caller's
    thread, and perf-buffer losses to ``on_lost``. Satisfies ``kernel_clock.RecordStream``."""

    def __init__(
        self,
        program: str,
        netns_inum: int,
        on_record: Callable[[bytes], None],
        on_lost: Callable[[int], None],
        probes_dir: Path = PROBES_DIR,
    ) -> None:
        if program not in PROGRAMS:
            raise AuditorError(f"unknown commit probe {program!r}", hint=f"one of {', '.join(PROGRAMS)}")
        c_file, table = PROGRAMS[program]
        self._on_record = on_record
        self._bpf: Any = load_program(c_file, netns_inum, probes_dir)
        try:
            self._bpf[table].open_perf_buffer(self._on_raw, page_cnt=16, lost_cb=on_lost)
        except Exception as exc:  # bcc raises plain Exception
            self.close()
            raise AuditorError(f"cannot open the {program} probe's buffer: {exc}") from exc

    def _on_raw(self, _cpu: int, data: Any, size: int) -> None:
        self._on_record(ctypes.string_at(data, size))

    def poll(self, timeout_ms: int = 0) -> None:
        if self._bpf is not None:
            self._bpf.perf_buffer_poll(timeout_ms)

    def close(self) -> None:
        if self._bpf is not None:
            self._bpf.cleanup()
            self._bpf = None


def open_commit_probe(
    program: str, netns_inum: int, on_record: Callable[[bytes], None], on_lost: Callable[[int], None]
) -> CommitProbe:
    """Load ``program`` (a key of :data:`PROGRAMS`) for the namespace ``netns_inum``; AuditorError if
    bcc, BTF or the kernel refuse it."""
    return CommitProbe(program, netns_inum, on_record, on_lost)
