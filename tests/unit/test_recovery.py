"""The agent restarted on its log directory after a crash: the log continues (no overwrite, no name
reused), and what the crash damaged is skipped and counted by ``auditor analyze --dir``, never a failure.

The crash is simulated on the files (as the kubelet would find them after a kill -9 of a run): a
finished Parquet segment cut short, the live JSONL segment ending in a half-written line next to its
``.parquet.part``, the episodes file ending mid-line, and a summary that never became final. Rows are
counted while they are made, so the assertions compare with construction.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from auditor.agent import Agent, AgentConfig, run_agent
from auditor.model.logfiles import list_segments
from auditor.model.packet import PacketEvent
from auditor.sinks.eventlog import seal_line_file
from auditor.sources.eventfile import read_events
from tests.conftest import REPO
from tests.unit.test_agent_core import CountingSource
from tests.unit.test_analyze_dir import EXAMPLE, STAMP, example_events, run

NODE = "n1"
CRASH = f"""
import os, sys
from dataclasses import replace
from auditor.sinks.eventlog import EventLog
from tests.unit.test_analyze_dir import example_events
log = EventLog(sys.argv[1], "{NODE}", "parquet", row_group_rows=100)
log.write([replace(e, node="{NODE}") for e in example_events("{NODE}")][6000:8000])
log.flush()
os._exit(9)
"""


class ListSource(CountingSource):
    """Hands out ``events`` in batches, then nothing."""

    def __init__(self, events: list[PacketEvent], batch: int = 500) -> None:
        super().__init__(batch=batch)
        self.events, self.batch = events, batch
        self.drained = threading.Event()

    def poll(self, timeout_ms: int) -> list[PacketEvent]:
        out = self.events[self.produced : self.produced + self.batch]
        self.produced += len(out)
        if not out:
            self.drained.set()
            time.sleep(timeout_ms / 1000)
        return out


def _run(log_dir: Path, events: list[PacketEvent]) -> dict[str, Any]:
    """One agent run over ``events`` (Parquet segments of ~100 kB), stopped once they are written."""
    src = ListSource(events)
    config = AgentConfig(node=NODE, log_dir=log_dir, metrics_addr=None, flush_ms=50, rotate_bytes=100_000,
                         rss_limit_mb=0, stop_timeout_s=20)  # fmt: skip

    def started(agent: Agent) -> None:
        def stop_when_written() -> None:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and not (src.drained.is_set() and agent.written == len(events)):
                time.sleep(0.05)
            agent.request_stop()

        threading.Thread(target=stop_when_written, daemon=True).start()

    return run_agent(config, [src], on_started=started)


def _digests(d: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in d.iterdir() if p.is_file()}


@pytest.fixture(scope="module")
def events() -> list[PacketEvent]:
    return [replace(e, node=NODE) for e in example_events(NODE)]


def test_restart_continues_the_log_and_analyze_skips_the_damage(
    tmp_path: Path, events: list[PacketEvent], capsys: pytest.CaptureFixture[str]
) -> None:
    d = tmp_path / "log"
    first, crash, second = events[:6000], events[6000:8000], events[8000:]
    shutil.copy(EXAMPLE / "kube.json", d.parent / "kube.json")

    # run 1, then what a kill -9 would leave: --------------------------------------------------------
    s1 = _run(d, first)
    assert s1["clean_exit"] and s1["written"] == len(first) and len(s1["segments"]) >= 3
    shutil.copy(d.parent / "kube.json", d / f"kube-{NODE}-{STAMP}.json")
    # (a) a finished Parquet segment cut short (written, renamed, never reached the disk whole)
    victim = d / s1["segments"][1]
    lost_rows = len(read_events(victim))
    victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])
    # (b) the live segment: JSONL with complete lines + a half-written one, and its Parquet .part (a
    # writer killed after a flush, footer never written)
    proc = subprocess.run([sys.executable, "-c", CRASH, str(d)], cwd=REPO, timeout=120, capture_output=True)
    assert proc.returncode == 9, proc.stderr
    (live_jsonl,) = set(d.glob("events-*.jsonl"))
    assert len(read_events(live_jsonl)) == len(crash)
    with live_jsonl.open("a") as f:
        f.write(live_jsonl.read_text().splitlines()[-1][:40])  # the row being written when it died
    assert list(d.glob("*.parquet.part"))
    # (c) the episodes file mid-line, and a summary that never became final
    episodes = d / f"episodes-{NODE}.jsonl"
    episodes.write_text('{"pod": "web-1", "verdict": "GAP"}\n{"pod": "web-2", "ver')
    summary = json.loads((d / f"agent-{NODE}.json").read_text())
    (d / f"agent-{NODE}.json").write_text(json.dumps({**summary, "final": False, "clean_exit": None}))

    # analyze right after the crash: everything readable is read, the damage counted, exit 0 ----------
    code, out, err = run(capsys, "analyze", "--dir", str(d), "--json")
    assert code == 0, err
    doc = json.loads(out)["inputs"]
    assert doc["packet_events"] == len(first) - lost_rows + len(crash)
    assert doc["event_segments_skipped"] == 2  # the cut Parquet file and the .part
    assert doc["event_lines_skipped"] == 1
    problems = "\n".join(doc["problems"])
    assert f"{victim.name}: unreadable segment" in problems
    assert "unfinished Parquet segment" in problems and "read from its JSONL twin" in problems
    assert f"{live_jsonl.name}: 1 unreadable line(s) skipped" in problems

    # run 2 on the same directory: continues, overwrites nothing -------------------------------------
    before = _digests(d)
    s2 = _run(d, second)
    assert s2["clean_exit"] and s2["written"] == len(second)
    after = _digests(d)
    changed = {n for n in before if after.get(n) != before[n]}
    assert changed == {
        live_jsonl.with_suffix(".parquet.part").name,  # removed: its JSONL twin holds every row
        episodes.name,  # the half-written line cut before appending
        f"agent-{NODE}.json",  # rewritten, with the previous run kept (below)
    }
    assert not list(d.glob("*.part"))  # recovery removed it: its JSONL twin holds every row
    assert episodes.read_text().startswith('{"pod": "web-1", "verdict": "GAP"}\n')
    assert all(json.loads(line) for line in episodes.read_text().splitlines())
    assert s2["recovery"] == {"removed": 1, "cut_bytes": {episodes.name: len('{"pod": "web-2", "ver')}}
    (prev,) = s2["previous_runs"]
    assert prev["final"] is False and prev["started_at"] == s1["started_at"] and prev["written"] == len(first)
    new = [n for n in s2["segments"] if n not in before]
    assert new == s2["segments"] and len(new) >= 3  # new names only
    old_seqs = [int(n.rsplit("-", 1)[1].split(".")[0]) for n in before if n.startswith("events-")]
    assert min(int(n.rsplit("-", 1)[1].split(".")[0]) for n in new) > max(old_seqs)

    # analyze both runs ----------------------------------------------------------------------------
    code, out, err = run(capsys, "analyze", "--dir", str(d), "--json")
    assert code == 0, err
    doc = json.loads(out)["inputs"]
    assert doc["packet_events"] == len(first) - lost_rows + len(crash) + len(second)
    assert doc["event_segments_skipped"] == 1 and doc["event_lines_skipped"] == 1
    # and the window the agent was down, between the killed run's last summary and the restart
    assert doc["problems_count"] == 3, doc["problems"]
    (down,) = doc["agent_down"]
    assert down["node"] == "n1" and down["from"] == prev["updated_at"] and down["to"] == s2["started_at"]
    assert f"n1: the agent was down from {prev['updated_at']} to {s2['started_at']}" in "\n".join(doc["problems"])
    rows = sum(len(read_events(p)) for p in list_segments(d) if p not in (victim, live_jsonl))
    assert rows == len(first) - lost_rows + len(second)


def test_seal_cuts_only_a_half_written_tail(tmp_path: Path) -> None:
    p = tmp_path / "episodes-n1.jsonl"
    assert seal_line_file(p) == 0  # absent
    p.write_text('{"a": 1}\n{"b":')
    assert seal_line_file(p) == len('{"b":') and p.read_text() == '{"a": 1}\n'
    assert seal_line_file(p) == 0 and p.read_text() == '{"a": 1}\n'
    p.write_text('{"only half')
    assert seal_line_file(p) == len('{"only half') and p.read_text() == ""
