"""The agent core with fake packet sources: lossless SIGTERM, counters, metrics, the CLI's user errors."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from click.testing import CliRunner

from auditor.agent import Agent, AgentConfig, run_agent
from auditor.cli import cli
from auditor.model.logfiles import list_segments
from auditor.model.packet import PacketEvent
from auditor.sources.eventfile import read_events
from tests.conftest import REPO


class CountingSource:
    """Emits ``batch`` events per poll (``limit`` in all), and counts what it handed out."""

    name = "fake"

    def __init__(self, batch: int = 50, limit: int | None = None, lost: int = 0) -> None:
        self.batch, self.limit, self._lost = batch, limit, lost
        self.produced = 0
        self.closed = False

    def start(self) -> None:
        return

    def poll(self, timeout_ms: int) -> list[PacketEvent]:
        n = self.batch if self.limit is None else min(self.batch, self.limit - self.produced)
        if n <= 0:
            time.sleep(timeout_ms / 1000)
            return []
        time.sleep(0.002)
        base = time.time_ns()
        out = [
            PacketEvent(base + i, "refused" if (self.produced + i) % 2 else "rst_sent", 4, "10.0.0.1",
                        (self.produced + i) % 60000 + 1, "10.244.1.7", 8080, source="ebpf", node="n1")
            for i in range(n)
        ]  # fmt: skip
        self.produced += n
        return out

    def lost(self) -> dict[str, int]:
        return {"refused": self._lost, "decode": 0}

    def notes(self) -> dict[str, Any]:
        return {"produced": self.produced}

    def close(self) -> None:
        self.closed = True


def _disk_rows(d: Path) -> pd.DataFrame:
    return pd.concat([read_events(p) for p in list_segments(d)], ignore_index=True)


def test_bounded_session_writes_everything_and_counts(tmp_path: Path) -> None:
    src = CountingSource(batch=100, limit=5000, lost=3)
    config = AgentConfig(node="n1", log_dir=tmp_path, metrics_addr="127.0.0.1:0", flush_ms=50, rss_limit_mb=0,
                         rotate_bytes=200_000)  # fmt: skip
    scraped: list[str] = []

    def scrape(agent: Agent) -> None:  # runs next to the agent's main loop
        deadline = time.monotonic() + 10
        while src.produced < 5000 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(1.5)  # one metrics tick
        assert agent._server is not None
        for path in ("/metrics", "/healthz"):
            with urllib.request.urlopen(f"http://127.0.0.1:{agent._server.port}{path}", timeout=5) as r:
                scraped.append(r.read().decode())

    threads: list[threading.Thread] = []

    def started(agent: Agent) -> None:
        threads.append(threading.Thread(target=scrape, args=(agent,)))
        threads[0].start()

    summary = run_agent(config, [src], duration_s=4, on_started=started)
    threads[0].join(20)
    assert src.closed and summary["clean_exit"] is True
    assert summary["received_total"] == summary["written"] == src.produced == 5000
    assert summary["lost"]["refused"] == 3 and summary["dropped"] == 0
    assert len(summary["segments"]) > 1 and summary["live_segment"] is None
    assert len(_disk_rows(tmp_path)) == 5000
    on_disk = json.loads((tmp_path / "agent-n1.json").read_text())
    assert on_disk["final"] is True and on_disk["written"] == 5000
    metrics, health = scraped
    assert 'auditor_events_received_total{kind="refused"} 2500.0' in metrics
    assert "auditor_events_written_total 5000.0" in metrics
    assert 'auditor_events_lost_total{kind="refused"} 3.0' in metrics
    assert health == "ok\n"


SIGTERM_SCRIPT = """
import sys, time
from pathlib import Path
from auditor.agent import AgentConfig, configure_logging, run_agent
configure_logging()
from tests.unit.test_agent_core import CountingSource

src = CountingSource(batch=200)
config = AgentConfig(node="n1", log_dir=Path(sys.argv[1]), metrics_addr=None, flush_ms=200,
                     rotate_bytes=1_000_000, stop_timeout_s=10)
def started(agent):
    print("started", flush=True)
summary = run_agent(config, [src], on_started=started)
print("produced", src.produced, flush=True)
sys.exit(0 if summary["clean_exit"] else 1)
"""


@pytest.mark.parametrize("fmt", ["parquet", "jsonl"])
def test_sigterm_mid_stream_loses_nothing(tmp_path: Path, fmt: str) -> None:
    script = SIGTERM_SCRIPT.replace("flush_ms=200,", f'flush_ms=200, log_format="{fmt}",')
    proc = subprocess.Popen([sys.executable, "-c", script, str(tmp_path)], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 60)
        assert ready and proc.stdout.readline().strip() == "started"
        time.sleep(1.5)  # mid-stream: events keep coming
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
        took = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert took < 10, f"exit took {took:.1f} s"
    produced = int(out.split("produced")[1].split()[0])
    summary = json.loads((tmp_path / "agent-n1.json").read_text())
    assert summary["final"] and summary["clean_exit"]
    assert summary["received_total"] == produced > 1000
    assert summary["dropped"] == 0
    assert summary["written"] == produced
    rows = _disk_rows(tmp_path)
    assert len(rows) == produced  # every acknowledged event is on disk, readable
    assert not list(tmp_path.glob("*.part"))
    assert {p.suffix for p in list_segments(tmp_path)} == {f".{fmt}"}
    assert "SIGTERM" in err


def test_full_queue_is_counted_not_hidden(tmp_path: Path) -> None:
    src = CountingSource(batch=10, limit=200)
    agent = Agent(
        AgentConfig(
            node="n1", log_dir=tmp_path, metrics_addr=None, queue_batches=1, queue_wait_s=0.01, rss_limit_mb=0
        ),
        [src],
    )
    agent._writer = _NeverStarted()  # type: ignore[assignment]  # nobody drains the queue
    agent.start()
    deadline = time.monotonic() + 30
    while src.produced < 200 and time.monotonic() < deadline:
        time.sleep(0.05)
    agent.stop_event.set()
    for t in agent._pollers:
        t.join(10)
    assert agent.received.total() == 200
    assert agent.dropped == 200 - 10  # one batch fits the queue
    assert agent.lost()["queue_full"] == 190
    agent.eventlog.close()


class _NeverStarted:
    def start(self) -> None:
        return

    def is_alive(self) -> bool:
        return False

    def join(self, timeout: float | None = None) -> None:
        return


def test_cli_user_errors_are_one_line(tmp_path: Path) -> None:
    runner = CliRunner()
    res = runner.invoke(cli, ["record", "--duration", "soon", "--out", str(tmp_path), "--no-kube"])
    assert res.exit_code != 0 and "bad duration" in str(res.exception or res.output)
    res = runner.invoke(cli, ["agent", "--help"])
    assert res.exit_code == 0 and "--log-dir" in res.output and "--metrics-addr" in res.output
    env = {**os.environ, "KUBECONFIG": str(tmp_path / "missing.yaml")}
    proc = subprocess.run(
        [sys.executable, "-m", "auditor", "record", "--duration", "1s", "--out", str(tmp_path / "o"),
         "--kubeconfig", str(tmp_path / "missing.yaml")],
        cwd=REPO, capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "kubeconfig file not found" in proc.stderr


class CountsSource(CountingSource):
    """Also hands out aggregate records: ``refusals`` refused connections to 10.244.1.7:8080 per read,
    as the server's RSTs, of which the detail of ``lost`` never came (no detail events at all here)."""

    def __init__(self, refusals: int = 1000, lost: int = 900, reads: int = 3) -> None:
        super().__init__(batch=10, limit=10)
        self.refusals, self.lost_detail, self.reads_left = refusals, lost, reads
        self.final_reads = 0

    def read_counts(self, final: bool = False) -> list[Any]:
        from auditor.model.counts import CountRecord

        self.final_reads += final
        if self.reads_left <= 0:
            return []
        self.reads_left -= 1
        t = time.time_ns() - 5 * 10**9
        return [CountRecord(t, 100_000_000, "rst_sent", 4, "10.244.1.7", 8080, "src", 1, 0, 0x02, 6,
                            self.refusals, self.lost_detail, "n1")]  # fmt: skip

    def uncounted(self) -> int:
        return 0


def test_counts_go_to_the_counts_file_the_summary_the_metrics_and_the_episodes(tmp_path: Path) -> None:
    from auditor.agent.correlator import EpisodeReport
    from auditor.model.logfiles import list_counts
    from auditor.sources.counts_file import read_counts

    src = CountsSource(reads=3)
    lines: list[str] = []
    config = AgentConfig(node="n1", log_dir=tmp_path, metrics_addr=None, rss_limit_mb=0, counts_interval_s=0.05)
    agent = Agent(config, [src], on_episode=lambda r: lines.append(r.line)).start()
    deadline = time.monotonic() + 10
    while src.reads_left and time.monotonic() < deadline:
        time.sleep(0.05)
    # a terminating pod at 10.244.1.7 was deleted; its episode is counted from the aggregates
    pod = {"metadata": {"uid": "u1", "name": "web-1", "namespace": "default"}, "status": {"podIP": "10.244.1.7"}}
    agent.pod_addresses.observe("DELETED", pod, time.time_ns())
    report = EpisodeReport("default", "web-1", "u1", "n1", "n1", "GAP", {"propagation_gap": 2})
    report.failures[("refused", "propagation_gap")] = 2  # what the sampled detail explained
    report.line = "episode default/web-1 verdict=GAP failed=2"
    agent._report(report)
    agent.request_stop()
    summary = agent.run()
    assert src.final_reads >= 1
    counts = summary["counts"]
    assert counts["failures"] == {"refused": 3000, "reset": 0, "unreachable": 0}
    assert counts["servers"]["10.244.1.7:8080"]["refused"] == 3000 and counts["exact"]
    assert counts["events"] == {"rst_sent": 3000} and counts["detail_lost"] == {"rst_sent": 2700}
    assert counts["note"] == "detail sampled: 10 of 3,000 events; counts exact"  # 10 detail events written
    (path,) = list_counts(tmp_path, "n1")
    records, bad = read_counts(path)
    assert bad == 0 and sum(r.events for r in records) == 3000
    assert lines == ["episode default/web-1 verdict=GAP failed=2 counts=(refused 3000, reset 0, unreachable 0; "
                     "detail sampled: 300 of 3,000 events; counts exact)"]  # fmt: skip
    episode = json.loads((tmp_path / "episodes-n1.jsonl").read_text())
    assert episode["counts"]["refused"] == 3000 and episode["failures"][0]["count"] == 2
    metrics = agent.metrics.exposition().decode()
    assert 'auditor_failures_counted_total{failure="refused"} 3000.0' in metrics
    assert ('auditor_connection_failures_total{cause="detail_lost",failure="refused",namespace="default",'
            'pod="web-1"} 2998.0') in metrics  # fmt: skip


def test_a_capture_source_says_in_every_report_what_it_cannot_tell(tmp_path: Path) -> None:
    """Packets by capture (``--source capture``, or ``auto`` after its fallback): no kernel reasons and no
    in-kernel counts, said in the episode line, the episode record and the summary's counts."""
    from auditor.agent.correlator import EpisodeReport

    class CaptureLike(CountingSource):
        name = "capture"

    lines: list[str] = []
    config = AgentConfig(node="n1", log_dir=tmp_path, metrics_addr=None, rss_limit_mb=0)
    agent = Agent(config, [CaptureLike(limit=10)], on_episode=lambda r: lines.append(r.line)).start()
    report = EpisodeReport("default", "web-1", "u1", "n1", "n1", "GAP", {"propagation_gap": 2})
    report.line = "episode default/web-1 verdict=GAP failed=2"
    agent._report(report)
    agent.request_stop()
    summary = agent.run()
    assert lines == ["episode default/web-1 verdict=GAP failed=2 (packet capture: no kernel reasons)"]
    episode = json.loads((tmp_path / "episodes-n1.jsonl").read_text())
    assert episode["kernel_reasons"].startswith("absent: packet capture")
    assert summary["counts"]["exact"] is False
    assert summary["counts"]["note"].startswith("no in-kernel counts: packets by capture")
