"""Issue 4's proof: ``auditor agent`` runs while the lab replaces pods, and what it reports is compared
with the lab's ground truth (the times it applied each change, the RSTs tcpdump counted on the node).

The lab serves its pods and EndpointSlice over HTTP (tests/kubeserver) and the agent reads them with
the official client through a kubeconfig; its dataplane watcher watches the lab's node namespace.
Tolerances are the issue's: listener closed within 10 ms of the server's close, rule removal within
20 ms of the change, propagation delay 1 s +- 20 ms -- of the delay the lab really applied. Its rule
change is due 1 s after the deletion and committed between ``t_rule_removed_before`` and ``_after``
(1-12 ms after the due time since the restore process is started ahead; 10-31 ms late when it was
started at the due time), and the delay is counted from when the lab's API server sent the deletion to
the agent (``t_delete_served``: that in-process server took 0.5-23 ms to send it with two busy loops on
this 2-CPU machine; the agent then stamped its receipt within 4 ms).
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

pytestmark = [pytest.mark.lab, pytest.mark.privileged, pytest.mark.slow]

NODE = "lab-node"
MS = 1_000_000


def _run(factory: pytest.TempPathFactory, name: str, cfg: LabConfig) -> LabRun:
    require_root()
    require_tool("hey", "tcpdump", "ip", "nsenter",
                 {"legacy": "iptables-legacy-restore", "nftables": "nft"}.get(cfg.backend, "iptables-nft-restore"))  # fmt: skip
    if cfg.backend == "nft":
        require_tool("xtables-monitor")
    if cfg.backend == "nftables":
        require_tool("nft")
    pytest.importorskip("bcc", reason="the agent's probes need bcc (python3-bpfcc)")
    return run_rollout(cfg, factory.mktemp(name))


def _log_dir(run: LabRun) -> Path:
    return Path(run.truth["agent"]["log_dir"])


def _analyze(run: LabRun) -> dict[str, Any]:
    """``auditor analyze --dir`` over the agent's log directory, as an SRE would run it afterwards (the
    directory's ``agent-<node>.json`` says when the agent recorded: the evidence a SAFE verdict needs)."""
    d = _log_dir(run)
    cmd = [sys.executable, "-m", "auditor", "analyze", "--node", NODE, "--json", "--dir", str(d)]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return dict(json.loads(proc.stdout))


def _agent_episodes(run: LabRun) -> dict[str, dict[str, Any]]:
    path = _log_dir(run) / f"episodes-{NODE}.jsonl"
    rows = (
        [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []
    )
    return {r["pod"]: r for r in rows}


def _summary(run: LabRun) -> dict[str, Any]:
    return dict(json.loads((_log_dir(run) / f"agent-{NODE}.json").read_text()))


def _count(episode: dict[str, Any], failure: str) -> int:
    return sum(f["count"] for f in episode["failures"] if f["failure"] == failure)


def _refused(episode: dict[str, Any]) -> int:
    return _count(episode, "refused")


def _ns(text: str) -> int:
    import pandas as pd

    return int(pd.Timestamp(text).value)


@pytest.fixture(scope="module")
def nft_gap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LabRun, dict[str, Any]]]:
    run = _run(tmp_path_factory, "agent-nft-gap", LabConfig(agent=True, prestop=0, delay=1.0))
    yield run, _analyze(run)


@pytest.fixture(scope="module")
def legacy_gap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LabRun, dict[str, Any]]]:
    run = _run(
        tmp_path_factory, "agent-legacy-gap", LabConfig(agent=True, backend="legacy", prestop=0, delay=1.0)
    )
    yield run, _analyze(run)


@pytest.fixture(scope="module")
def nftables_gap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LabRun, dict[str, Any]]]:
    run = _run(tmp_path_factory, "agent-nftables-gap", LabConfig(agent=True, backend="nftables", prestop=0))
    yield run, _analyze(run)


@pytest.fixture(scope="module")
def safe(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LabRun, dict[str, Any]]]:
    run = _run(tmp_path_factory, "agent-safe", LabConfig(agent=True, prestop=3, delay=1.0))
    yield run, _analyze(run)


# How close the agent's rule-removal time (and so the delay) must be: the 20 ms for every
# backend. All three are stamped in the kernel: the legacy table replace at its setsockopt()'s return,
# the nf_tables commits (iptables-nft, nftables mode) at the committing sendmsg()'s return, matched
# with the monitor's generation line (probes/nft_commit.c). On receipt of the monitor's lines instead,
# they were once 43 ms late on this 2-CPU machine with the lab's load running.
TIMING_MS = {"iptables-legacy": 20, "iptables-nft": 20, "nftables": 20}


def _check_gap(run: LabRun, doc: dict[str, Any], backend: str) -> None:
    truth = run.truth
    tol = TIMING_MS[backend]
    assert truth["agent"]["exit_code"] == 0
    assert truth["client"]["refused"] > 0, "preStop 0 must make the client see refusals"
    live = _agent_episodes(run)
    eps = {e["pod"]: e for e in doc["episodes"]}
    for p in truth["old_pods"]:
        name = p["name"]
        assert name in live and name in eps, (name, sorted(live), sorted(eps))
        # the agent's live line: one refusal per refused connection, attributed to this pod
        assert live[name]["verdict"] == "GAP"
        assert _refused(live[name]) == p["rst_refused"], (name, live[name]["failures"], p)
        assert _count(live[name], "reset") == p["rst_established"], (name, live[name]["failures"], p)
        # SYNs that a stale conntrack entry sent to the deleted pod (the node answered "unreachable"):
        # the live episode holds those that came before it settled, the analysis afterwards all of them
        settled = p["t_exit_observed"] + int(truth["config"]["agent_settle"] * 1e9)
        early = sum(1 for t in p["t_unreachable"] if t < settled)
        assert early <= _count(live[name], "unreachable") <= p["unreachable"], (name, live[name]["failures"], p)
        # the delay the lab really applied, as the agent can know it: from when the lab's API server sent it
        # the deletion (the agent's own receipt lag is its error) to the rule change's commit, which came
        # between t_rule_removed_before and _after
        assert p["t_delete"] <= p["t_delete_served"] <= p["t_rule_removed_before"], p
        lo, hi = ((p[k] - p["t_delete_served"]) / 1e9 for k in ("t_rule_removed_before", "t_rule_removed_after"))
        assert lo - tol / 1000 <= live[name]["max_propagation_delay_s"] <= hi + tol / 1000, (live[name], lo, hi)
        # the log directory, analyzed afterwards: the same counts and the per-node timeline
        causes = eps[name]["causes"]
        assert causes["propagation_gap"] + causes["after_removal"] == p["rst_refused"] + p["unreachable"], (
            name,
            causes,
            p,
        )
        assert causes["inflight_reset"] == p["rst_established"], (name, causes, p)
        (node,) = eps[name]["nodes"]
        assert node["listener_closed_source"] == "ebpf:listen_close", node
        # against the server's own record of its close() (t_listener_closed), not the lab's SIGTERM: under
        # load the server took up to 17 ms to handle the signal (the agent's probe was then 0.06 ms off)
        assert abs(_ns(node["listener_closed"]) - p["t_listener_closed"]) <= 10 * MS, (name, node, p)
        assert node["rule_removed_source"] == f"dataplane:{backend}", node
        removed = _ns(node["rule_removed"])
        assert p["t_rule_removed_before"] - 20 * MS <= removed <= p["t_rule_removed_after"] + tol * MS, (
            name,
            node,
        )
        assert lo - tol / 1000 <= node["propagation_delay_s"] <= hi + tol / 1000, (name, node, lo, hi)
    assert doc["verdict"] == "GAP", doc["verdict_line"]
    assert doc["recommendation"]["prestop_seconds"] >= 2
    if backend != "iptables-legacy":  # every nf_tables transaction timed by its kernel commit
        counters = _summary(run)["dataplane"]["counters"]
        assert counters["receipt_stamped"] == 0 and counters["kernel_stamped"] > 0, counters


def _check_lossless(run: LabRun) -> None:
    s = _summary(run)
    assert s["final"] is True and s["clean_exit"] is True
    assert {k: v for k, v in s["lost"].items() if v} == {}, s["lost"]
    assert s["written"] == s["received_total"] > 0


def test_nft_gap_matches_the_lab(nft_gap: tuple[LabRun, dict[str, Any]]) -> None:
    run, doc = nft_gap
    _check_gap(run, doc, "iptables-nft")


def test_nft_gap_lost_events_reported_zero(nft_gap: tuple[LabRun, dict[str, Any]]) -> None:
    run, _ = nft_gap
    _check_lossless(run)


def test_legacy_gap_matches_the_lab(legacy_gap: tuple[LabRun, dict[str, Any]]) -> None:
    run, doc = legacy_gap
    _check_gap(run, doc, "iptables-legacy")
    _check_lossless(run)


def test_nftables_mode_gap_matches_the_lab(nftables_gap: tuple[LabRun, dict[str, Any]]) -> None:
    run, doc = nftables_gap
    _check_gap(run, doc, "nftables")
    _check_lossless(run)


def test_prestop_longer_than_delay_is_safe(safe: tuple[LabRun, dict[str, Any]]) -> None:
    run, doc = safe
    truth = run.truth
    assert truth["client"]["error_total"] == 0
    live = _agent_episodes(run)
    for p in truth["old_pods"]:
        assert p["rst_from_pod"] == 0
        assert live[p["name"]]["verdict"] == "SAFE", live[p["name"]]
        assert _refused(live[p["name"]]) == 0
    assert doc["causes"]["propagation_gap"] == 0
    assert doc["verdict"] == "SAFE", doc["verdict_line"]
    _check_lossless(run)


def test_agent_survives_dropped_watches_and_410(tmp_path_factory: pytest.TempPathFactory) -> None:
    run = _run(
        tmp_path_factory, "agent-410", LabConfig(agent=True, prestop=0, delay=1.0, watch_fault_episode=1)
    )
    (fault,) = run.truth["agent"]["faults"]
    assert fault["dropped"] >= 2, fault  # the agent's pod and EndpointSlice watches were open
    kube = _summary(run)["kube"]
    assert sum(kube["relists"].values()) >= 1, kube  # it resumed, got 410 Gone, and listed again
    live = _agent_episodes(run)
    assert sorted(live) == sorted(p["name"] for p in run.truth["old_pods"])
    doc = _analyze(run)
    assert sorted(e["pod"] for e in doc["episodes"]) == sorted(live)
    for p in run.truth["old_pods"]:
        assert live[p["name"]]["verdict"] == "GAP"
        assert _refused(live[p["name"]]) == p["rst_refused"], (p["name"], live[p["name"]], p)


def test_sigterm_mid_rollout_keeps_every_received_event(tmp_path_factory: pytest.TempPathFactory) -> None:
    from auditor.model.logfiles import list_segments
    from auditor.sources.eventfile import read_events

    cfg = LabConfig(agent=True, replicas=2, prestop=0, delay=1.0, agent_stop_episode=1)
    run = _run(tmp_path_factory, "agent-sigterm", cfg)
    agent = run.truth["agent"]
    assert agent["exit_code"] == 0 and agent["sigterm_ns"] > 0
    # SIGTERM came inside the second episode's gap, while refusals were arriving
    second = run.truth["old_pods"][1]
    assert second["t_delete"] < agent["sigterm_ns"] < second["t_rule_removed_before"]
    s = _summary(run)
    assert s["final"] is True and s["clean_exit"] is True
    segments = list_segments(_log_dir(run))
    rows = sum(len(read_events(p)) for p in segments)
    assert rows == s["received_total"] == s["written"] > 0, (rows, s["received_total"], s["written"])
    assert s["dropped"] == 0
