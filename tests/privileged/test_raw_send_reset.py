"""tcp_send_reset from its raw tracepoint (issue 11: the refusals a perf-attached program lost whenever its
softirq ran nested in another tracing program): the same events as the record-based program, attached as
raw where the kernel allows it, and its skipped runs read from fdinfo.

Traffic in a network namespace made here, loopback only: refused IPv4 and IPv6 connects (no socket, the
answered SYN's tuple swapped) and an accepted connection aborted by the server (SO_LINGER 0: a reset sent
with a socket, whose own addresses and ports the event carries).
"""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from auditor.sources.live import ProbeConfig, ProbeSet
from tests.privileged.test_probes import _skip_unless_bcc_can_load

pytestmark = pytest.mark.privileged

CLOSED, ABORTS = 7, 8125
TRAFFIC = f"""
import socket, struct
for fam, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
    for _ in range(2):
        s = socket.socket(fam)
        try:
            s.connect((host, {CLOSED}))
        except ConnectionRefusedError:
            pass
        s.close()
    l = socket.socket(fam)
    l.bind((host, {ABORTS}))
    l.listen()
    c = socket.create_connection((host, {ABORTS}))
    a, _ = l.accept()
    a.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    a.close()
    c.close()
    l.close()
"""



def _resets(raw: bool, name: str, inum: int) -> tuple[list[tuple[object, ...]], ProbeSet]:
    """The rst_sent events of TRAFFIC (time and netns left out), and the probes (closed)."""
    probes = ProbeSet(ProbeConfig(families=("tcp_reset",), raw_tracepoints=raw)).start()
    try:
        subprocess.run(["ip", "netns", "exec", name, sys.executable, "-c", TRAFFIC], check=True, timeout=30)
        got = []
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline and len(got) < 6:
            got += [e for e in probes.poll(50) if e.netns == inum and e.kind == "rst_sent"]
        skipped = probes.skipped_runs()
    finally:
        probes.close()
    assert "tcp:tcp_send_reset" in skipped  # read from the program's fdinfo (this kernel reports it)
    rows = [(e.family, e.src, e.sport, e.dst, e.dport if e.dport in (CLOSED, ABORTS) else "client", e.tcp_flags,
             e.state_raw, e.reason_raw) for e in got]  # fmt: skip
    return sorted(rows, key=str), probes


def test_raw_and_record_programs_report_the_same_resets(netns: tuple[str, int]) -> None:
    _skip_unless_bcc_can_load()
    name, inum = netns
    record, p_record = _resets(False, name, inum)
    raw, p_raw = _resets(True, name, inum)
    assert p_record.raw_attached == []
    if p_raw.raw_attached != ["tcp:tcp_send_reset"]:
        pytest.skip("this kernel or bcc has no raw tracepoints: the record-based program is used")
    # 2 refusals per family (no socket: RST/ACK answering a SYN, state 0) and one abort each (a socket)
    refusals = [r for r in raw if r[6] == 0]
    assert len(refusals) == 4 and {r[2] for r in refusals} == {CLOSED} and {r[5] for r in refusals} == {0x14}
    aborts = [r for r in raw if r[6] != 0]
    assert len(aborts) == 2 and {r[2] for r in aborts} == {ABORTS} and {r[0] for r in aborts} == {4, 6}
    assert raw == record
