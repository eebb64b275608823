"""``auditor analyze`` as a whole process, on the example shipped in examples/rollout (made by the lab)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO

EXAMPLE = REPO / "examples" / "rollout"
BASE = ["--pcap", str(EXAMPLE / "node.pcap"), "--kube", str(EXAMPLE / "kube.json"), "--node", "lab-node"]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "auditor", "analyze", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture(scope="module")
def doc() -> dict[str, Any]:
    proc = run(*BASE, "--client", str(EXAMPLE / "hey.txt"), "--json")
    assert proc.returncode == 0, proc.stderr
    return dict(json.loads(proc.stdout))


@pytest.fixture(scope="module")
def truth() -> dict[str, Any]:
    return dict(json.loads((EXAMPLE / "truth.json").read_text()))


def test_example_refusals_match_the_lab_truth_pod_by_pod(doc: dict[str, Any], truth: dict[str, Any]) -> None:
    eps = {e["pod"]: e for e in doc["episodes"]}
    for p in truth["old_pods"]:
        assert eps[p["name"]]["ip"] == p["ip"]
        assert eps[p["name"]]["causes"]["propagation_gap"] == p["rst_refused"]
    assert doc["causes"]["propagation_gap"] == truth["client"]["refused"]
    assert doc["reconciliation"]["client_refused"] == doc["reconciliation"]["node_refused"]


def test_example_verdict_and_recommendation(doc: dict[str, Any]) -> None:
    assert doc["verdict"] == "GAP"
    assert doc["recommendation"]["prestop_seconds"] == 2
    delays = [
        n["propagation_delay_s"]
        for e in doc["episodes"]
        for n in e["nodes"]
        if e["causes"]["propagation_gap"]
    ]
    assert len(delays) == 3 and all(0.85 <= d <= 1.1 for d in delays)
    assert doc["inputs"]["problems_count"] == 0
    assert doc["inputs"]["capture_skipped"] == 0


def test_terminal_report_ends_with_the_verdict() -> None:
    proc = run(*BASE)
    assert proc.returncode == 0, proc.stderr
    last = proc.stdout.strip().splitlines()[-1]
    assert last.startswith("GAP default/web") and "preStop sleep >= 2 s" in last
    assert run(*BASE, "--fail-on-gap").returncode == 1


@pytest.mark.parametrize("suffix", [".html", ".md"])
def test_report_files_with_timeline_plot(tmp_path: Path, suffix: str) -> None:
    out = tmp_path / f"report{suffix}"
    proc = run(*BASE, "--html", str(out))
    assert proc.returncode == 0, proc.stderr
    text = out.read_text()
    assert "GAP default/web" in text
    if suffix == ".html":
        assert "data:image/png;base64," in text
    else:
        pngs = sorted(tmp_path.glob("report-*.png"))
        assert pngs and all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)


def test_bad_inputs_get_one_line_and_exit_2(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.json"
    garbage.write_text("this is not json\n")
    cases = [
        ("--pcap", str(tmp_path / "missing.pcap"), "--kube", str(EXAMPLE / "kube.json")),
        ("--pcap", str(EXAMPLE / "node.pcap"), "--kube", str(garbage)),
        ("--kube", str(EXAMPLE / "kube.json")),
        ("--pcap", str(garbage), "--kube", str(EXAMPLE / "kube.json")),
    ]
    for args in cases:
        proc = run(*args)
        assert proc.returncode == 2, (args, proc.stderr)
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr


def test_garbage_inside_a_stream_is_reported_and_the_rest_kept(tmp_path: Path, doc: dict[str, Any]) -> None:
    text = (EXAMPLE / "kube.json").read_text()
    cut = (
        text.index('\n{"type"', len(text) // 2) if '\n{"type"' in text else text.index("\n{", len(text) // 2)
    )
    damaged = tmp_path / "kube.json"
    damaged.write_text(text[:cut] + "\n{garbage here\n" + text[cut:])
    proc = run("--pcap", str(EXAMPLE / "node.pcap"), "--kube", str(damaged), "--node", "lab-node", "--json")
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout)
    assert got["inputs"]["problems_count"] == 1
    assert "kube.json line" in got["inputs"]["problems"][0]
    assert got["causes"] == doc["causes"]
