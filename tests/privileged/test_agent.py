"""`auditor agent --no-kube` as root: refused connections made in the test's own network namespace
show in /metrics and in the event log; SIGTERM exits 0 quickly with everything on disk."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pandas as pd
import pytest

from auditor.model.logfiles import list_segments
from auditor.sources.eventfile import read_events
from tests.conftest import REPO
from tests.privileged.conftest import refusal_storm

pytestmark = pytest.mark.privileged

CLOSED_PORT = 7
CLIENT = f"""
import socket
for _ in range(5):
    s = socket.socket()
    s.settimeout(2)
    try:
        s.connect(("127.0.0.1", {CLOSED_PORT}))
    except ConnectionRefusedError:
        print("refused")
    s.close()
"""



def _skip_unless_bcc() -> None:
    from auditor.sources.live.environment import prepare_bcc_environment

    env = prepare_bcc_environment()
    if not env.ready:
        pytest.skip("bcc cannot compile probes here: " + "; ".join(env.notes))
    try:
        import bcc  # noqa: F401
    except ImportError as exc:
        pytest.skip(f"bcc is not importable ({exc}); .ci/install installs python3-bpfcc")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, ""
    except OSError:
        return 0, ""


def test_agent_sees_refusals_serves_metrics_and_stops_cleanly(tmp_path: Path, netns: tuple[str, int]) -> None:
    _skip_unless_bcc()
    name, inum = netns
    port = _free_port()
    log_dir = tmp_path / "log"
    cmd = [sys.executable, "-m", "auditor", "agent", "--no-kube", "--node-name", "agtest", "--log-dir",
           str(log_dir), "--metrics-addr", f"127.0.0.1:{port}", "--dataplane", "off", "--flush-ms", "200"]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 90  # compiling the probes takes a few seconds
        while _get(f"http://127.0.0.1:{port}/healthz") != (200, "ok\n"):
            assert proc.poll() is None, proc.communicate()[1]
            assert time.monotonic() < deadline, "agent not healthy in time"
            time.sleep(0.2)
        out = subprocess.run(["ip", "netns", "exec", name, sys.executable, "-c", CLIENT],
                             capture_output=True, text=True, timeout=30, check=True)  # fmt: skip
        assert out.stdout.split() == ["refused"] * 5
        metrics = ""
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            metrics = _get(f"http://127.0.0.1:{port}/metrics")[1]
            line = next((x for x in metrics.splitlines() if x.startswith('auditor_events_received_total{kind="refused"}')), "")  # fmt: skip
            if line and float(line.split()[-1]) >= 5:
                break
            time.sleep(0.2)
        else:
            pytest.fail(f"refusals not in /metrics:\n{metrics}")
        assert "auditor_events_lost_total" in metrics
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
        took = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert took < 10, f"SIGTERM -> exit took {took:.1f} s"
    summary = json.loads((log_dir / "agent-agtest.json").read_text())
    assert summary["final"] and summary["clean_exit"]
    assert summary["written"] == summary["received_total"] and summary["dropped"] == 0
    rows = pd.concat([read_events(p) for p in list_segments(log_dir)], ignore_index=True)
    assert len(rows) == summary["written"]
    mine = rows.loc[(rows["netns"] == inum) & (rows["kind"].astype(str) == "refused")]
    assert len(mine) == 5
    assert set(mine["dport"]) == {CLOSED_PORT} and set(mine["node"].astype(str)) == {"agtest"}




def test_agent_counts_a_storm_exactly_when_detail_is_lost(tmp_path: Path, netns: tuple[str, int]) -> None:
    """The agent with a 4 KiB ring buffer under a 20,000-connection refusal storm: detail events are
    lost (counted), the summary, the counts file and the metrics still hold every refusal."""
    _skip_unless_bcc()
    import random

    from auditor.agent import Agent, AgentConfig, ProbeSource
    from auditor.model.counts import failure_counts
    from auditor.model.logfiles import list_counts
    from auditor.sources.counts_file import read_counts

    name, _ = netns
    addr, count = f"127.{random.randint(1, 250)}.{random.randint(1, 250)}.{random.randint(1, 250)}", 20_000
    source = ProbeSource("agstorm", probe_options={"families": ("tcp_reset", "sock_state"), "ringbuf_pages": 1})
    agent = Agent(AgentConfig(node="agstorm", log_dir=tmp_path, metrics_addr=None, rss_limit_mb=0, flush_ms=200),
                  [source]).start()  # fmt: skip
    try:
        refused = refusal_storm(name, addr, CLOSED_PORT, count)
    finally:
        agent.request_stop()
        summary = agent.run()
    assert refused == count
    server = f"{addr}:{CLOSED_PORT}"
    counts = summary["counts"]
    assert counts["servers"][server]["refused"] == refused and counts["exact"]
    kernel = summary["sources"]["ebpf"]["kernel"]
    assert sum(kernel[k]["lost"] for k in ("rst_sent", "rst_received", "refused")) > 0  # detail was lost
    assert counts["events"]["refused"] >= refused and counts["detail_lost"]["refused"] > 0
    assert counts["note"].startswith("detail sampled: ") and counts["note"].endswith("; counts exact")
    for kind, c in kernel.items():
        assert c["seen"] == c["counted"] + c["uncounted"] == counts["events"].get(kind, 0), kind
    (path,) = list_counts(tmp_path, "agstorm")
    records, bad = read_counts(path)
    assert bad == 0 and failure_counts(records)[server].refused == refused
    metrics = agent.metrics.exposition().decode()
    line = next(x for x in metrics.splitlines() if x.startswith('auditor_failures_counted_total{failure="refused"}'))
    assert float(line.split()[-1]) >= refused  # every refusal on the node (others too: it is host-wide)
