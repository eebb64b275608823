"""Issue 14 item 3 in the lab, one rollout (preStop 0, 1 s delay) for both checks:

* ``auditor capture`` runs on the node next to the lab's tcpdump (same interface, ``--filter`` = tcpdump's
  expression): the refusals it captured equal tcpdump's, counted by tcpdump -r in both files and by
  ``auditor analyze`` of each (the pcapng needs no ``NODE=``: its interface description names the node);
  its statistics block says the kernel dropped nothing.
* ``auditor agent --source capture`` (no eBPF probes) audits the same rollout with the counts the eBPF
  agent's lab test asserts (tests/lab/test_agent_lab.py ``_check_gap``: refusals and resets per old pod
  equal the RSTs tcpdump counted), and every report says the kernel's reasons are absent.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO, require_root, require_tool
from tests.lab import LabConfig, LabRun, run_rollout
from tests.lab.client import count_packets

pytestmark = [pytest.mark.lab, pytest.mark.privileged, pytest.mark.slow]

NODE = "lab-node"


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabRun]:
    require_root()
    require_tool("hey", "tcpdump", "ip", "nsenter", "iptables-nft-restore", "xtables-monitor")
    from auditor.sources.pcaplive import engine_available

    ok, why = engine_available()
    if not ok:
        pytest.skip(f"auditor capture needs libpcap: {why}")
    cfg = LabConfig(agent=True, agent_source="capture", capture=True, prestop=0, delay=1.0)
    yield run_rollout(cfg, tmp_path_factory.mktemp("capture-lab"))


def _analyze(*args: str) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "auditor", "analyze", "--json", *args]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return dict(json.loads(proc.stdout))


def _episodes(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["pod"]: e for e in doc["episodes"]}


def test_capture_refusals_equal_tcpdumps(run: LabRun) -> None:
    cap = run.out_dir / "capture.pcapng"
    stats = json.loads((run.out_dir / "capture.log").read_text())
    assert stats["stopped_by"] == "signal" and stats["dropped"] == 0, stats
    assert stats["packets"] > 0
    for p in run.truth["old_pods"]:
        refused = f"src host {p['ip']} and tcp[tcpflags] & tcp-rst != 0 and tcp[4:4] == 0"
        syn = f"dst host {p['ip']} and tcp[tcpflags] & (tcp-syn|tcp-ack) == tcp-syn"
        assert p["rst_refused"] > 0, p
        assert count_packets(cap, refused) == count_packets(run.pcap, refused) == p["rst_refused"], p
        assert count_packets(cap, syn) == count_packets(run.pcap, syn) == p["syn_to_pod"], p
    by_capture = _analyze("--pcap", str(cap), "--kube", str(run.kube))  # no NODE=: the file names it
    by_tcpdump = _analyze("--pcap", f"{NODE}={run.pcap}", "--kube", str(run.kube))
    mine, theirs = _episodes(by_capture), _episodes(by_tcpdump)
    assert sorted(mine) == sorted(theirs) == sorted(p["name"] for p in run.truth["old_pods"])
    for name, ep in mine.items():
        assert ep["causes"] == theirs[name]["causes"], (name, ep["causes"], theirs[name]["causes"])
        assert [n["node"] for n in ep["nodes"]] == [NODE], ep["nodes"]
    assert by_capture["inputs"].get("capture_dropped", 0) == 0
    assert by_capture["verdict"] == by_tcpdump["verdict"] == "GAP"


def _count(episode: dict[str, Any], failure: str) -> int:
    return sum(f["count"] for f in episode["failures"] if f["failure"] == failure)


def test_agent_capture_source_counts_equal_the_lab(run: LabRun) -> None:
    truth = run.truth
    assert truth["agent"]["exit_code"] == 0
    log_dir = Path(truth["agent"]["log_dir"])
    summary = json.loads((log_dir / f"agent-{NODE}.json").read_text())
    src = summary["sources"]["capture"]
    assert src["engine"] == "libpcap" and src["kernel_reasons"].startswith("absent"), src
    assert {k: v for k, v in summary["lost"].items() if v} == {}, summary["lost"]
    lines = [
        json.loads(x) for x in (log_dir / f"episodes-{NODE}.jsonl").read_text().splitlines() if x.strip()
    ]
    live = {e["pod"]: e for e in lines}
    # every report says what a capture cannot tell: no kernel reasons, no in-kernel counts
    assert all(e["kernel_reasons"].startswith("absent") for e in lines), lines
    assert summary["counts"]["exact"] is False and summary["counts"]["note"].startswith("no in-kernel counts")
    doc = _analyze("--node", NODE, "--dir", str(log_dir))
    eps = _episodes(doc)
    for p in truth["old_pods"]:
        name = p["name"]
        # the same counts the eBPF agent's lab test asserts (test_agent_lab._check_gap)
        assert live[name]["verdict"] == "GAP"
        assert _count(live[name], "refused") == p["rst_refused"], (name, live[name]["failures"], p)
        assert _count(live[name], "reset") == p["rst_established"], (name, live[name]["failures"], p)
        causes = eps[name]["causes"]
        assert causes["propagation_gap"] + causes["after_removal"] == p["rst_refused"] + p["unreachable"], (
            name,
            causes,
            p,
        )
        assert causes["inflight_reset"] == p["rst_established"], (name, causes, p)
    assert doc["verdict"] == "GAP", doc["verdict_line"]
    assert doc["recommendation"]["prestop_seconds"] >= 2
    # said in every report made from the log: no kernel reasons
    assert any("without the kernel's reasons" in x for x in doc["inputs"]["problems"]), doc["inputs"][
        "problems"
    ]
