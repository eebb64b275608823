"""Runs of the probes the kernel skipped (``recursion_misses``): read from fdinfo, reported per kind as lost
and as uncounted (issue 11's live refusal count: a refusal whose ``tcp_send_reset`` run the kernel skipped
leaves no event, no counter and no aggregate, and the agent said "0 lost")."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from auditor.sources.live.progstats import parse_fdinfo, read_recursion_misses, recursion_misses

# /proc/<agent>/fdinfo/<fd> of the agent's tcp_send_reset program, kernel 6.18 (then edited: 3 misses)
FDINFO = (
    "pos:\t0\nflags:\t02000002\nmnt_id:\t17\nino:\t1038\nprog_type:\t5\nprog_jited:\t1\n"
    "prog_tag:\t4e760ee73e4fe179\nmemlock:\t8192\nprog_id:\t2362\nrun_time_ns:\t0\nrun_cnt:\t0\n"
    "recursion_misses:\t3\nverified_insns:\t1987\n"
)
# an older kernel (before 5.12) reports no recursion_misses at all
FDINFO_OLD = (
    "pos:\t0\nflags:\t02000002\nprog_type:\t5\nprog_jited:\t1\nprog_tag:\t4e760ee73e4fe179\nmemlock:\t8192\n"
)


def test_fdinfo_is_parsed() -> None:
    info = parse_fdinfo(FDINFO)
    assert info["prog_type"] == "5" and info["prog_id"] == "2362" and info["prog_tag"] == "4e760ee73e4fe179"
    assert recursion_misses(FDINFO) == 3


def test_a_kernel_without_the_field_reports_none() -> None:
    assert recursion_misses(FDINFO_OLD) is None
    assert recursion_misses("recursion_misses:\tn/a\n") is None


def test_read_from_a_directory(tmp_path: Path) -> None:
    (tmp_path / "7").write_text(FDINFO)
    assert read_recursion_misses(7, tmp_path) == 3
    assert read_recursion_misses(8, tmp_path) is None  # no such fd: unreadable, not 0


def test_probeset_reports_skipped_runs_per_tracepoint_and_per_kind(tmp_path: Path) -> None:
    from auditor.sources.live.probeset import EVERY_RUN_AN_EVENT, ProbeSet

    p = ProbeSet()
    assert p.skipped_runs() == {}  # not started: nothing to read
    (tmp_path / "10").write_text(FDINFO)
    (tmp_path / "11").write_text(FDINFO.replace("recursion_misses:\t3", "recursion_misses:\t40"))
    (tmp_path / "12").write_text(FDINFO_OLD)
    p._bpf = object()  # started (only the fds are read)
    p._fdinfo_dir = tmp_path
    p._prog_fds = {"tcp:tcp_send_reset": 10, "sock:inet_sock_set_state": 11, "icmp:icmp_send": 12}
    assert p.skipped_runs() == {"tcp:tcp_send_reset": 3, "sock:inet_sock_set_state": 40}
    # only a program whose every run is an event makes its skipped runs lost events of a kind
    assert EVERY_RUN_AN_EVENT == {"rst_sent": "tcp:tcp_send_reset", "rst_received": "tcp:tcp_receive_reset"}


class _Probes:
    """The parts of ProbeSet that ProbeSource.lost/uncounted read."""

    perf_lost = 0
    decode_errors = 0
    output = "ringbuf"

    def __init__(self, counters: dict[str, dict[str, int]], skipped: dict[str, int]) -> None:
        self._counters, self._skipped = counters, skipped
        self.attached = ["tcp:tcp_send_reset", "sock:inet_sock_set_state"]
        self.raw_attached = ["tcp:tcp_send_reset"]
        self.disabled: dict[str, str] = {}

    def counters(self) -> dict[str, dict[str, int]]:
        return self._counters

    def skipped_runs(self) -> dict[str, int]:
        return self._skipped


def _source(counters: dict[str, dict[str, int]], skipped: dict[str, int]) -> Any:
    from auditor.agent.sources import ProbeSource

    src = ProbeSource("lab-node")
    src.probes = _Probes(counters, skipped)  # type: ignore[assignment]
    src._started = True
    return src


def _kind(lost: int = 0, uncounted: int = 0, skipped: int = 0) -> dict[str, int]:
    return {"seen": 100, "lost": lost, "received": 100 - lost, "counted": 100, "uncounted": uncounted,
            "skipped": skipped}  # fmt: skip


def test_a_skipped_reset_is_a_lost_and_uncounted_event() -> None:
    src = _source(
        {"rst_sent": _kind(skipped=1), "refused": _kind(lost=2)},
        {"tcp:tcp_send_reset": 1, "sock:inet_sock_set_state": 9},
    )
    lost = src.lost()
    assert lost["rst_sent"] == 1 and lost["refused"] == 2  # the agent's "lost": the summary and the lab test
    assert src.uncounted() == 1  # the aggregates miss it too: counts are not exact any more
    assert src.notes()["skipped_runs"] == {"tcp:tcp_send_reset": 1, "sock:inet_sock_set_state": 9}
    assert src.notes()["raw_tracepoints"] == ["tcp:tcp_send_reset"]


def test_nothing_skipped_nothing_lost() -> None:
    src = _source({"rst_sent": _kind(), "refused": _kind()}, {"tcp:tcp_send_reset": 0})
    assert sum(src.lost().values()) == 0
    assert src.uncounted() == 0


@pytest.mark.parametrize("older", [True, False])
def test_counters_without_skipped_still_read(older: bool) -> None:
    row = _kind()
    if older:
        del row["skipped"]  # a ProbeSet-like source from before the field
    src = _source({"rst_sent": row}, {})
    assert src.lost()["rst_sent"] == 0


class _Btf:
    """member_offset of a kernel's BTF, with some members missing."""

    def __init__(self, missing: str = "") -> None:
        self.missing = missing

    def member_offset(self, struct_name: str, path: str) -> int:
        if path == self.missing:
            raise KeyError(f"{struct_name}.{path}")
        return {"skc_daddr": 0, "skc_rcv_saddr": 4, "skc_dport": 12, "skc_family": 16, "skc_v6_daddr": 56,
                "skc_v6_rcv_saddr": 72, "inet_sport": 814}[path]  # fmt: skip


def test_the_raw_send_reset_program_gets_its_offsets_or_is_not_used() -> None:
    from auditor.sources.live.layout import raw_send_reset_cflags
    from auditor.sources.live.probeset import RAW_HOOKS

    flags = raw_send_reset_cflags(_Btf())  # type: ignore[arg-type]
    assert flags is not None and flags[0] == "-DSR_RAW=1"
    assert "-DOFF_INET_SPORT=814" in flags and "-DOFF_SK_V6_DADDR=56" in flags and len(flags) == 8
    # a kernel without IPv6 in its socket (no skc_v6_daddr): the record-based program, through perf
    assert raw_send_reset_cflags(_Btf("skc_v6_daddr")) is None  # type: ignore[arg-type]
    assert RAW_HOOKS == {"on_tcp_send_reset": "on_tcp_send_reset_raw"}
