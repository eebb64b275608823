"""The Kubernetes watch in a child process (what ``auditor agent`` runs), against the fake API server
over real HTTP: events with the child's receipt times, stats, a child that dies, a bounded stop."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from auditor.kubeapi.child import stats_json
from auditor.kubeapi.isolated import IsolatedKubeWatcher, stats_from_json
from auditor.kubeapi.watcher import WatchStats
from tests.kubeserver.server import FakeApiServer
from tests.unit.test_kube_watch import Collected, pod, wait_for


@pytest.fixture
def server() -> Iterator[FakeApiServer]:
    with FakeApiServer(bookmark_interval=0.2) as srv:
        yield srv


def test_stats_round_trip_through_json() -> None:
    s = WatchStats()
    s.events[("pods", "ADDED")] = 3
    s.lists["pods"], s.relists["endpointslices"], s.errors["events"] = 2, 1, 4
    s.resource_version["pods"] = "1042"
    back = stats_from_json(stats_json(s))
    assert back == s


def test_events_synced_stats_restart_and_stop(server: FakeApiServer, tmp_path: Path) -> None:
    server.create(pod("a"))
    server.create({"kind": "EndpointSlice", "metadata": {"namespace": "default", "name": "web-abc"}})
    sink = Collected()
    kubeconfig = str(server.write_kubeconfig(tmp_path / "kubeconfig"))
    watcher = IsolatedKubeWatcher(kubeconfig, kinds=("pods", "endpointslices"), on_event=sink,
                                  backoff_base_s=0.05).start()  # fmt: skip
    try:
        assert watcher.wait_synced(60), "the child never listed"
        wait_for(lambda: len(sink.of()) == 1 and len(sink.of("endpointslices")) == 1, what="the list")
        before = time.time_ns()
        server.update(pod("a", ip="10.244.0.2"))
        wait_for(lambda: len(sink.of()) == 2, what="a watch event through the child")
        changed = sink.of()[1]
        assert (changed.type, changed.object["status"]["podIP"], changed.relisted) == (
            "MODIFIED",
            "10.244.0.2",
            False,
        )
        assert before <= changed.observed_ns <= time.time_ns()  # stamped in the child, on arrival
        wait_for(lambda: watcher.stats().lists["pods"] == 1, what="the child's stats")
        assert watcher.stats().events[("pods", "MODIFIED")] == 1

        # the child dies: a new one lists again, and what it lists is marked relisted
        proc = watcher._proc
        assert proc is not None
        os.kill(proc.pid, signal.SIGKILL)
        server.create(pod("b"))
        wait_for(
            lambda: any(e.object["metadata"]["name"] == "b" for e in sink.of()), what="the restarted child"
        )
        b = next(e for e in sink.of() if e.object["metadata"]["name"] == "b")
        assert b.relisted and b.type == "ADDED"
        stats = watcher.stats()
        assert stats.errors["watch-process"] == 1
        assert stats.events[("pods", "MODIFIED")] == 1  # the dead child's counts are kept
    finally:
        t0 = time.monotonic()
        assert watcher.stop(10.0)
        assert time.monotonic() - t0 < 10.0
    assert watcher._proc is not None and watcher._proc.poll() is not None


def test_bad_configuration_child_exits_two(tmp_path: Path) -> None:
    import subprocess
    import sys

    bad = tmp_path / "kubeconfig"
    bad.write_text("not: [a kubeconfig")
    proc = subprocess.run([sys.executable, "-m", "auditor.kubeapi.child", "--kubeconfig", str(bad)],
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "kubeconfig" in proc.stderr and "Traceback" not in proc.stderr
