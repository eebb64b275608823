"""What the lab cluster (tests/lab/cluster.py) showed ``auditor rollout-test`` getting wrong, each fixed and
tested here without root:

* a live agent's files grow between the listing and their download (its kube stream, its event segment):
  the evidence step failed with ``got 21197 of 20103 bytes`` on every run against a running agent;
* a rollout is complete once its last old pod is *deleted*, not gone: the re-run after ``--apply`` started
  its load while the unpatched pods were still terminating and the nodes still routed to them, and
  counted their refusals against the fix;
* the agents' summaries (their coverage) are rewritten every 10 s: the evidence now waits until each one
  covers the test;
* the client's failures are now said to be attributed (matched one to one to the nodes' failures of the
  terminations) or not.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from auditor.collect import fetch
from auditor.collect.fetch import AgentPod, collect_agent
from auditor.kubeapi import load_api_client
from auditor.rollout.evidence import wait_summaries
from auditor.sinks.logauth import LogsAccess
from auditor.sinks.metrics import AgentMetrics, MetricsServer
from tests.kubeserver.proxy import ProxyApiServer
from tests.unit.rollout_cluster import Cluster, make_cluster
from tests.unit.test_rollout_test import rollout_test


@pytest.fixture
def agent_cluster(tmp_path: Path) -> Iterator[Cluster]:
    yield from make_cluster(tmp_path, with_agent=True)


def test_a_live_file_that_grows_after_the_listing_is_collected_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    logs = tmp_path / "agent"
    logs.mkdir()
    live = logs / "kube-node-a-20261202T065356Z.json"
    live.write_text('{"type": "ADDED"}\n')
    listing = fetch.AgentFiles.listing

    def listing_then_grow(self: fetch.AgentFiles) -> list[dict[str, Any]]:
        files = listing(self)
        with live.open("a") as f:  # the agent records an event meanwhile
            f.write('{"type": "MODIFIED"}\n')
        return files

    monkeypatch.setattr(fetch.AgentFiles, "listing", listing_then_grow)
    server = MetricsServer(AgentMetrics(), "127.0.0.1:0", lambda: (True, "ok"), log_dir=logs,
                           log_access=LogsAccess.off()).start()  # fmt: skip
    try:
        with ProxyApiServer() as api:
            api.add_agent_pod("auditor-a1b2c", "node-a", server.port)
            client = load_api_client(str(api.write_kubeconfig(tmp_path / "kubeconfig")), None)
            res = collect_agent(client, "auditor", AgentPod("auditor-a1b2c", "node-a", "Running"), 9808,
                                tmp_path / "out", token="t")  # fmt: skip
            client.close()
    finally:
        server.stop()
    assert res.error is None and res.fetched == [live.name]
    assert (
        tmp_path / "out" / "node-a" / live.name
    ).read_text() == live.read_text()  # whole lines, the growth too


def test_the_rerun_waits_for_the_old_pods_to_terminate_and_the_nodes_to_drop_them(
    agent_cluster: Cluster, capsys: pytest.CaptureFixture[str]
) -> None:
    c = agent_cluster
    gone: list[int] = []
    on_rollout = c.controller.on_rollout

    def rollout_with_a_terminating_pod(before: dict[str, Any], after: dict[str, Any], at_ns: int) -> None:
        assert on_rollout is not None
        on_rollout(before, after, at_ns)
        if len(c.controller.rollouts) != 2:  # the patch's rollout: one old pod takes 1.5 s to go
            return
        name = f"web-old-{len(c.controller.rollouts)}"
        c.api.create({"kind": "Pod", "metadata": {
            "name": name, "namespace": "default", "labels": {"app": "web"},
            "deletionTimestamp": "2026-01-01T00:00:00Z", "deletionGracePeriodSeconds": 30}, "spec": {}})  # fmt: skip

        def delete() -> None:
            time.sleep(1.5)
            c.api.delete("Pod", "default", name)
            gone.append(time.time_ns())

        threading.Thread(target=delete, daemon=True).start()

    c.controller.on_rollout = rollout_with_a_terminating_pod
    code, out, err = rollout_test(capsys, c, "--apply")
    assert code == 0, err + out
    line = next(x for x in out.splitlines() if x.startswith("before the re-run: "))
    waited = float(line.split("the old pods were gone ")[1].split(" s")[0])
    assert waited >= 1.0, line
    # then the measured delay 1.008 s + margin 0.5 s
    assert line.endswith(
        "then 1.5 s (the propagation delay measured + margin) for the nodes to stop routing to them"
    )
    # the re-run's restart came after the last old pod was gone, that allowance and the warm-up
    assert len(gone) == 1 and c.controller.rollouts[2][1] >= gone[0] + 1_500_000_000


def test_the_client_failures_are_said_to_be_attributed_or_not(
    agent_cluster: Cluster, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = rollout_test(capsys, agent_cluster)
    assert code == 1, err + out
    lines = out.splitlines()
    line = next(x for x in lines if x.startswith("  attributed: "))
    load = next(x for x in lines if x.startswith("  load: "))
    failed = int(load.split(" failed")[0].split(", ")[-1].replace(",", ""))
    matched, of = (
        int(x.replace(",", ""))
        for x in line.split("  attributed: ")[1].split(" failed")[0].split(" of the client's ")
    )
    assert of == failed and 0 < matched <= failed
    rest = line.split("; ")[-1]
    unexplained = int(rest.split(" unexplained")[0].replace(",", ""))
    outside = int(rest.split(", ")[1].split(" outside")[0].replace(",", ""))
    assert matched + unexplained + outside == failed
    if matched < failed:  # the difference is explained
        assert any(x.startswith("  attribution note: client saw ") for x in lines), out


def test_the_evidence_waits_for_each_agent_summary_to_cover_the_test(tmp_path: Path) -> None:
    """The analysis takes an agent's coverage from its summary, rewritten every 10 s: collected at once, a quiet
    re-run was INCONCLUSIVE in the lab ("the recording ends before the deletion") 1 run in 3."""
    logs = tmp_path / "agent"
    logs.mkdir()
    summary = logs / "agent-node-a.json"
    summary.write_text("{}")
    os.utime(summary, (time.time() - 8, time.time() - 8))
    server = MetricsServer(AgentMetrics(), "127.0.0.1:0", lambda: (True, "ok"), log_dir=logs,
                           log_access=LogsAccess.off()).start()  # fmt: skip
    pods = [AgentPod("auditor-a1b2c", "node-a", "Running")]
    try:
        with ProxyApiServer() as api:
            api.add_agent_pod("auditor-a1b2c", "node-a", server.port)
            client = load_api_client(str(api.write_kubeconfig(tmp_path / "kubeconfig")), None)
            end = time.time()
            threading.Timer(1.0, lambda: summary.write_text('{"kube": {}}')).start()  # the agent's next write
            t0 = time.monotonic()
            assert (
                wait_summaries(client, "auditor", pods, 9808, end, 10.0, "t", time.sleep, time.monotonic)
                == []
            )
            assert 0.9 <= time.monotonic() - t0 < 5.0
            # a summary that stays older: bounded, and said
            notes = wait_summaries(
                client, "auditor", pods, 9808, time.time() + 60, 1.0, "t", time.sleep, time.monotonic
            )
            assert len(notes) == 1 and notes[0].startswith("node-a: its summary was last written ")
            assert 58.0 < float(notes[0].split("written ")[1].split(" s")[0]) <= 61.0  # before that end
            summary.unlink()
            (note,) = wait_summaries(
                client, "auditor", pods, 9808, end, 10.0, "t", time.sleep, time.monotonic
            )
            assert note.startswith("node-a: the agent lists no summary (agent-node-a.json)")
            client.close()
    finally:
        server.stop()
