"""The agent's rotating event log: rotation, round trip through read_events, crash leftovers."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from auditor.errors import AuditorError
from auditor.model.logfiles import list_segments
from auditor.model.packet import PacketEvent
from auditor.sinks.eventlog import EventLog, recover_segments
from auditor.sources.eventfile import read_events
from tests.conftest import REPO

T0 = 1_790_000_000_000_000_000


def _events(n: int, start: int = 0) -> list[PacketEvent]:
    return [
        PacketEvent(T0 + (start + i) * 1_000_003, "refused" if i % 3 else "rst_sent", 4 if i % 5 else 6,
                    "10.0.0.1" if i % 5 else "fd00::1", 30000 + (start + i) % 30000, "10.244.1.7", 8080,
                    reason_raw=i % 7, state_raw=2, netns=4026531840 + i % 3, source="ebpf", node="n1")
        for i in range(n)
    ]  # fmt: skip


def _read_dir(d: Path) -> pd.DataFrame:
    return pd.concat([read_events(p) for p in list_segments(d)], ignore_index=True)


def _assert_same(df: pd.DataFrame, events: list[PacketEvent]) -> None:
    assert len(df) == len(events)
    df = df.sort_values("time", kind="stable").reset_index(drop=True)
    assert df["time"].astype("int64").tolist() == [e.time_ns for e in events]
    assert df["kind"].astype(str).tolist() == [e.kind for e in events]
    assert df["src"].astype(str).tolist() == [e.src for e in events]
    assert df["sport"].tolist() == [e.sport for e in events]
    assert df["netns"].tolist() == [e.netns for e in events]
    assert df["reason_raw"].tolist() == [e.reason_raw for e in events]
    assert set(df["node"].astype(str)) == {"n1"}


def test_parquet_rotation_by_size_round_trip(tmp_path: Path) -> None:
    log = EventLog(tmp_path, "n1", "parquet", rotate_bytes=30_000, row_group_rows=100)
    events = _events(1000)
    for i in range(0, 1000, 50):
        log.write(events[i : i + 50])
        log.flush()
    log.close()
    names = [p.name for p in tmp_path.iterdir()]
    assert all(n.endswith(".parquet") for n in names), names  # no .jsonl twin, no .part left
    assert len(names) == len(log.finished) > 3
    assert log.written == 1000
    _assert_same(_read_dir(tmp_path), events)


def test_jsonl_rotation_by_age(tmp_path: Path) -> None:
    now = [1000.0]
    log = EventLog(tmp_path, "n1", "jsonl", rotate_seconds=10, clock=lambda: now[0])
    events = _events(30)
    for i in range(3):
        log.write(events[i * 10 : (i + 1) * 10])
        now[0] += 11
        log.flush()  # the segment is older than 10 s: finished
    assert log.current is None and len(log.finished) == 3
    assert all(p.suffix == ".jsonl" for p in log.finished)
    _assert_same(_read_dir(tmp_path), events)


def test_live_segment_is_readable_before_close(tmp_path: Path) -> None:
    log = EventLog(tmp_path, "n1", "parquet", row_group_rows=10)
    events = _events(25)
    log.write(events)
    log.flush()
    assert log.current is not None and log.current.suffix == ".jsonl"
    assert list(tmp_path.glob("*.parquet.part"))  # row groups written, footer not yet
    assert list_segments(tmp_path) == [log.current]  # the .part is never listed
    _assert_same(read_events(log.current), events)
    log.close()
    _assert_same(_read_dir(tmp_path), events)


def test_crash_leftovers_are_settled_without_losing_rows(tmp_path: Path) -> None:
    # a writer process killed after a flush: JSONL segment complete, Parquet without footer
    code = (
        "import os, sys\n"
        "from auditor.sinks.eventlog import EventLog\n"
        "from tests.unit.test_eventlog import _events\n"
        "log = EventLog(sys.argv[1], 'n1', 'parquet', row_group_rows=5)\n"
        "log.write(_events(12)); log.flush(); os._exit(9)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)], cwd=REPO, timeout=60, capture_output=True
    )
    assert proc.returncode == 9, proc.stderr
    assert list(tmp_path.glob("*.parquet.part")) and list(tmp_path.glob("*.jsonl"))
    events = _events(12)
    # a second crash point: renamed to .parquet but the JSONL twin not yet removed
    done = EventLog(tmp_path / "b", "n1", "parquet")
    done.write(_events(3, 100))
    done.close()
    twin = done.finished[0].with_suffix(".jsonl")
    twin.write_text("garbage that must not be read\n")
    assert recover_segments(tmp_path / "b") == 1 and not twin.exists()

    again = EventLog(tmp_path, "n1", "parquet")  # recovery runs on start
    assert again.recovered == 1
    assert not list(tmp_path.glob("*.part"))
    _assert_same(_read_dir(tmp_path), events)


def test_bad_format_and_unwritable_dir(tmp_path: Path) -> None:
    with pytest.raises(AuditorError, match="format"):
        EventLog(tmp_path, "n1", "csv")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(AuditorError, match="log directory"):
        EventLog(blocker / "sub", "n1")


@pytest.mark.parametrize("fmt", ["parquet", "jsonl"])
def test_a_restart_in_the_same_second_continues_and_overwrites_nothing(tmp_path: Path, fmt: str) -> None:
    clock = lambda: 1_795_000_000.0  # noqa: E731  # both runs within one second: the same stamp
    first = EventLog(tmp_path, "n1", fmt, rotate_bytes=2_000, clock=clock)
    for i in range(3):
        first.write(_events(10, 10 * i))
    first.close()
    kept = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert len(first.finished) > 1
    # a crash leftover of the first run with a higher seq than its finished ones, and a foreign node
    (tmp_path / "events-n1-20261126T082000Z-0042.jsonl").write_text("")
    (tmp_path / "events-n1-b-20261126T082000Z-0077.jsonl").write_text("")  # node "n1-b", not ours
    second = EventLog(tmp_path, "n1", fmt, rotate_bytes=2_000, clock=clock)
    for i in range(3):
        second.write(_events(10, 1000 + 10 * i))
    second.close()
    for name, data in kept.items():
        assert (tmp_path / name).read_bytes() == data, f"{name} overwritten"
    names = [p.name for p in second.finished]
    assert not set(names) & set(kept)
    assert names[0].startswith("events-n1-20261118T") and names[0].endswith(f"-0043.{fmt}")
    _assert_same(pd.concat([read_events(p) for p in [*first.finished, *second.finished]], ignore_index=True),
                 [e for i in range(3) for e in _events(10, 10 * i)]
                 + [e for i in range(3) for e in _events(10, 1000 + 10 * i)])  # fmt: skip
