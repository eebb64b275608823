"""The agent's batch path: packet tables from poll to disk, the row-bounded queue, the frame window,
the memory limit that sheds it, and wildcard listeners named in a table."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import fields
from pathlib import Path
from typing import Any

import pandas as pd

from auditor.agent import Agent, AgentConfig
from auditor.agent.batchqueue import BatchQueue
from auditor.agent.frames import concat_packet_frames, frame_events, kind_counts
from auditor.agent.listeners import NetnsAddressBook
from auditor.agent.window import Window
from auditor.model.kube import format_time_ns
from auditor.model.logfiles import list_segments
from auditor.model.packet import PacketEvent, packet_arrow_schema, packet_frame
from auditor.sinks.eventfile import batch_json_lines, frame_json_lines, time_texts
from auditor.sinks.eventlog import EventLog
from auditor.sources.eventfile import read_events

T0 = 1_790_000_000_000_000_000


def _events(n: int, start: int = 0, src: str = "10.0.0.1", node: str = "n1") -> list[PacketEvent]:
    return [
        PacketEvent(T0 + (start + i) * 1_000_003, ("refused", "rst_sent", "icmp_unreachable")[i % 3],
                    4 if i % 5 else 6, src if i % 5 else "fd00::1", 30000 + (start + i) % 30000,
                    "10.244.1.7", 8080, icmp_type=3 if i % 3 == 2 else 0, reporter="10.1.1.1" if i % 3 == 2 else "",
                    reason_raw=i % 7, state_raw=2, netns=4026531840 + i % 3, source="ebpf", node=node)
        for i in range(n)
    ]  # fmt: skip


def _json_line(event: PacketEvent) -> str:
    """One event as the JSONL writer must write it: the table's column order, ``time`` RFC 3339 with ns."""
    row: dict[str, Any] = {"time": format_time_ns(event.time_ns)}
    for f in fields(PacketEvent):
        if f.name != "time_ns":
            row[f.name] = getattr(event, f.name)
    return json.dumps(row, separators=(",", ":"))


def test_frame_and_batch_json_lines_are_one_json_line_per_event() -> None:
    import pyarrow as pa

    events = _events(50)
    odd = PacketEvent(T0, "drop", 4, 'we"ird', 1, "5%d", 2, interface="eth0\u00e9", node="n1")
    for batch in (events, [odd], [odd, *events[:3]], events[:1], []):
        expected = "".join(_json_line(e) + "\n" for e in batch)
        frame = packet_frame(batch)
        assert frame_json_lines(frame) == expected
        record_batch = pa.RecordBatch.from_pandas(frame, schema=packet_arrow_schema(), preserve_index=False)
        assert batch_json_lines(record_batch) == expected


def test_time_texts_is_format_time_ns_per_value() -> None:
    import numpy as np

    times = [0, 5, T0, T0 + 999_999_999, 4_102_444_800_000_000_000]  # the epoch, 1970, 2026, 2100
    assert [t + "Z" for t in time_texts(np.asarray(times, dtype="int64"))] == [format_time_ns(t) for t in times]


def test_eventlog_takes_frames_with_different_categories(tmp_path: Path) -> None:
    log = EventLog(tmp_path, "n1", "parquet", row_group_rows=70)
    batches = [_events(40, 0, "10.0.0.1"), _events(40, 40, "10.0.0.2", "n2"), _events(40, 80, "10.0.0.3")]
    for b in batches:
        log.write(packet_frame(b))
    log.write(batches[0][:0])  # an empty batch writes nothing
    log.close()
    assert log.written == 120 and [p.suffix for p in log.finished] == [".parquet"]
    df = pd.concat([read_events(p) for p in list_segments(tmp_path)], ignore_index=True)
    every = [e for b in batches for e in b]
    assert df["time"].astype("int64").tolist() == [e.time_ns for e in every]
    assert df["src"].astype(str).tolist() == [e.src for e in every]
    assert df["node"].astype(str).tolist() == [e.node for e in every]
    assert df["reporter"].astype(str).tolist() == [e.reporter for e in every]


def test_concat_keeps_categoricals_and_rows_round_trip() -> None:
    a, b = packet_frame(_events(5, 0, "10.0.0.1")), packet_frame(_events(5, 5, "10.0.0.9"))
    both = concat_packet_frames([a, b])
    assert isinstance(both["src"].dtype, pd.CategoricalDtype) and len(both) == 10
    assert frame_events(both) == _events(5, 0, "10.0.0.1") + _events(5, 5, "10.0.0.9")
    assert kind_counts(both) == {"refused": 4, "rst_sent": 4, "icmp_unreachable": 2}


def test_window_rows_are_bounded_and_evictions_counted() -> None:
    w = Window(window_s=600, max_packets=100)
    for i in range(30):
        w.add_packets(packet_frame(_events(10, i * 10)))
    assert w.packet_rows == 100 and w.evicted_packets == 200
    kept = concat_packet_frames(w.packet_frames())
    assert len(kept) == 100
    assert kept["time"].astype("int64").min() == T0 + 200 * 1_000_003  # the newest 100 stayed
    # age: everything before the cut goes, and is not counted as evicted early
    cut = T0 + 250 * 1_000_003
    w.trim(cut + w.window_ns)
    assert w.packet_rows == 50 and w.evicted_packets == 200
    assert len(concat_packet_frames(w.packet_frames())) == 50


def test_window_packets_for_selects_by_address_and_time() -> None:
    w = Window()
    w.add_packets(_events(30, 0, "10.0.0.1"))  # a list of events is accepted too
    w.add_packets(packet_frame(_events(30, 30, "10.0.0.2")))
    got = w.packets_for({"10.0.0.2"}, T0 + 40 * 1_000_003)
    assert len(got) == len([e for e in _events(30, 30, "10.0.0.2") if e.src == "10.0.0.2"][-16:]) == 16
    assert set(got["src"].astype(str)) == {"10.0.0.2"}
    assert len(w.packets_for({"10.1.1.1"}, 0)) == 20  # ICMP reporter
    assert w.packets_for({"192.0.2.1"}, 0).empty


def test_batch_queue_bounds_rows_and_batches() -> None:
    q = BatchQueue(max_batches=10, max_rows=100)
    assert q.put("big", 500, timeout=0)  # an empty queue takes any batch
    started = time.monotonic()
    assert not q.put("more", 1, timeout=0.05)  # full by rows: refused after the wait
    assert time.monotonic() - started >= 0.04
    assert q.get(0) == (True, "big") and q.rows == 0
    assert q.put("a", 60, 0) and not q.put("b", 60, 0) and q.put("c", 40, 0)
    threading.Timer(0.05, lambda: q.get(0)).start()  # room appears while a put waits
    assert q.put("d", 60, timeout=5)
    assert q.get(0) == (True, "c") and q.get(0) == (True, "d") and q.get(0.01) == (False, None)
    assert q.peak_rows == 500


class FrameSource:
    """Serves packet tables through ``poll_frame``; ``poll`` must not be used when it exists."""

    name = "frames"

    def __init__(self, batches: int, rows: int) -> None:
        self.batches, self.rows, self.produced, self.frame_polls = batches, rows, 0, 0

    def start(self) -> None:
        return

    def poll(self, timeout_ms: int) -> list[PacketEvent]:
        raise AssertionError("the agent should use poll_frame")

    def poll_frame(self, timeout_ms: int) -> pd.DataFrame:
        self.frame_polls += 1
        if self.produced >= self.batches * self.rows:
            time.sleep(timeout_ms / 1000)
            return packet_frame([])
        now = time.time_ns() - T0
        frame = packet_frame(_events(self.rows, self.produced))
        frame["time"] = frame["time"] + pd.Timedelta(now, unit="ns")
        self.produced += self.rows
        return frame

    def lost(self) -> dict[str, int]:
        return {}

    def notes(self) -> dict[str, Any]:
        return {"produced": self.produced}

    def close(self) -> None:
        return


def test_agent_moves_frames_to_disk_and_sheds_window_near_the_memory_limit(tmp_path: Path) -> None:
    src = FrameSource(batches=40, rows=500)
    config = AgentConfig(node="n1", log_dir=tmp_path, metrics_addr=None, flush_ms=50, queue_rows=2000,
                         window_rows=8000, rss_limit_mb=100)  # fmt: skip

    agent = Agent(config, [src])
    agent.guard.rss = lambda: 90 << 20  # 90 %: above the soft line (shed), under the hard one (no pause)
    summary = agent.start().run(duration_s=3)
    assert summary["clean_exit"] is True and src.frame_polls > 40
    assert summary["received_total"] == summary["written"] == src.produced == 20_000
    assert summary["received"] == {"refused": 6680, "rst_sent": 6680, "icmp_unreachable": 6640}
    assert summary["dropped"] == 0
    disk = pd.concat([read_events(p) for p in list_segments(tmp_path)], ignore_index=True)
    assert len(disk) == 20_000
    mem = summary["memory"]
    assert mem["sheds"] >= 1 and mem["detail_pauses"] == 0 and mem["queue_peak_rows"] <= 2000
    assert mem["window_rows"] <= 8000 and mem["over_limit_ticks"] == 0 and mem["peak_rss_mb"] == 90
    evicted = summary["episodes"]["window_evicted_packets"]
    # every row that entered the window is still there or was evicted (row cap, age, or shed near the
    # limit; the shed rows are counted among the evicted ones too)
    assert evicted + mem["window_rows"] == 20_000, (evicted, mem)
    assert 0 < mem["shed_rows"] <= evicted


def test_detail_pauses_at_the_memory_limit_and_resumes_under_it(tmp_path: Path) -> None:
    src = FrameSource(batches=10_000, rows=100)
    config = AgentConfig(node="n1", log_dir=tmp_path, metrics_addr=None, flush_ms=50, rss_limit_mb=100,
                         memory_check_s=0.02)  # fmt: skip
    level = [50 << 20]
    polls: list[int] = []

    def pressure() -> None:
        time.sleep(0.5)
        level[0] = 97 << 20  # above the hard line: no detail taken
        time.sleep(0.5)
        polls.append(src.frame_polls)
        time.sleep(0.5)
        polls.append(src.frame_polls)
        level[0] = 80 << 20  # back under the soft line: detail again

    agent = Agent(config, [src])
    agent.guard.rss = lambda: level[0]
    agent.guard.child_rss = lambda: 1 << 20  # the watch process counts too
    agent.start()
    thread = threading.Thread(target=pressure)
    thread.start()
    summary = agent.run(duration_s=3)
    thread.join(10)
    mem = summary["memory"]
    assert polls[1] == polls[0] and src.frame_polls > polls[1]  # nothing polled while paused, then again
    assert mem["detail_pauses"] == 1 and 0.4 < mem["detail_paused_s"] < 2.0
    assert mem["peak_total_mb"] == 98 and mem["peak_child_rss_mb"] == 1 and mem["over_limit_ticks"] == 0
    assert summary["received_total"] == summary["written"] == src.produced  # what was taken is written


def test_memory_budget_sizes_the_window_and_the_queue(tmp_path: Path) -> None:
    from auditor.agent.core import COUNT_RECORD_BYTES, TRANSIENT_RESERVE, WINDOW_ROW_BYTES

    agent = Agent(AgentConfig(node="n1", log_dir=tmp_path, metrics_addr=None, rss_limit_mb=1000), [])
    own = 200 << 20
    agent._size_buffers(own=own)
    free = (1000 << 20) - own - TRANSIENT_RESERVE - 50_000 * COUNT_RECORD_BYTES
    budget = agent.budget
    assert budget["window_rows"] == min(500_000, free // 2 // WINDOW_ROW_BYTES) == agent.correlator.window.max_packets
    assert agent._queue.max_bytes == min(64 << 20, free // 4)
    agent.config.rss_limit_mb = 1  # below the agent's own size: the floors
    agent._size_buffers(own=own)
    assert agent.correlator.window.max_packets == 10_000 and agent._queue.max_bytes == 4 << 20
    agent.eventlog.close()


def test_memory_guard_sheds_then_pauses_then_resumes() -> None:
    from auditor.agent.memory import MemoryGuard

    now = [0.0]
    rss = [0]
    guard = MemoryGuard(1000, rss=lambda: rss[0], child_rss=lambda: 50, clock=lambda: now[0])
    rss[0] = 700
    s = guard.sample()
    assert (s.total, s.shed, s.pause) == (750, False, False)
    rss[0] = 820  # 870 > 850: shed once a second
    assert guard.sample().shed and not guard.sample().shed
    now[0] = 1.5
    rss[0] = 910  # 960 > 950: pause, and shed again
    s = guard.sample()
    assert s.shed and s.pause and guard.pauses == 1
    rss[0] = 850  # 900: still above the soft line, still paused
    assert guard.sample().pause
    rss[0] = 790  # 840: resumed
    assert not guard.sample().pause and guard.pauses == 1 and guard.peak.total == 960
    assert guard.over_limit == 0
    rss[0] = 960  # 1010: paused again, over the limit itself
    assert guard.sample().pause and guard.over_limit == 1 and guard.pauses == 2
    rss[0] = 870  # 920: between the lines; nothing left to shed, so pausing cannot help: resumed
    assert guard.sample().pause and not guard.sample(drained=True).pause
    assert not MemoryGuard(0, rss=lambda: 10**12).sample().pause  # no limit


def test_json_lines_in_pieces_are_the_same_text() -> None:
    from auditor.sinks.eventfile import iter_frame_json_lines

    frame = packet_frame(_events(100))
    pieces = list(iter_frame_json_lines(frame, chunk_rows=7))
    assert len(pieces) == 15 and "".join(pieces) == frame_json_lines(frame)
    assert list(iter_frame_json_lines(packet_frame([]))) == []


def test_wildcard_listeners_named_in_a_table(tmp_path: Path) -> None:
    book = NetnsAddressBook(proc=tmp_path / "none")  # nothing to scan: addresses set by hand
    book.addresses = {7: ("10.244.1.7", "fd00::7"), 8: ()}
    rows = [
        PacketEvent(T0 + 1, "listen_close", 4, "0.0.0.0", 8080, "0.0.0.0", 0, netns=7),
        PacketEvent(T0 + 2, "refused", 4, "10.0.0.1", 1, "10.244.1.7", 8080, netns=7),
        PacketEvent(T0 + 3, "listen_close", 6, "::", 8081, "::", 0, netns=7),
        PacketEvent(T0 + 4, "listen_close", 4, "0.0.0.0", 9090, "0.0.0.0", 0, netns=8),
    ]
    out = book.resolve_frame(packet_frame(rows))
    assert frame_events(out) == book.resolve(rows)
    assert out["src"].astype(str).tolist() == ["10.244.1.7", "10.0.0.1", "10.244.1.7", "fd00::7", "0.0.0.0"]
    plain = packet_frame(rows[1:2])
    assert book.resolve_frame(plain) is plain
