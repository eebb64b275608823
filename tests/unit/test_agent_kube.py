"""The agent with the fake API server: pods and EndpointSlices recorded to the log dir with observedAt,
a pod deletion audited live once settled, and the directory readable by the offline reader."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

from auditor.agent import Agent, AgentConfig, EpisodeReport, run_agent
from auditor.kubeapi import load_api_client
from auditor.model.packet import PacketEvent
from auditor.sources.kube_stream import read_kube_streams
from tests.kubeserver.server import FakeApiServer
from tests.unit.test_agent_core import CountingSource

POD_IP = "10.244.1.7"


def _pod(name: str, ip: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "shop", "uid": f"uid-{name}",
                     "ownerReferences": [{"kind": "ReplicaSet", "name": "web-6d4b9c7f5"}]},
        "spec": {"nodeName": "n1", "containers": [{"name": "app", "image": "x"}]},
        "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]},
    }  # fmt: skip


def _slice(ready: bool) -> dict[str, Any]:
    return {
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "web-abc", "namespace": "shop", "labels": {"kubernetes.io/service-name": "web"}},
        "addressType": "IPv4", "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": [{"addresses": [POD_IP], "conditions": {"ready": ready, "serving": True, "terminating": not ready},
                       "targetRef": {"kind": "Pod", "name": "web-1", "uid": "uid-web-1"}, "nodeName": "n1"}],
    }  # fmt: skip


class RefusalSource(CountingSource):
    """Refused connections to the pod IP, on demand."""

    def __init__(self) -> None:
        super().__init__(batch=0)
        self.queue: list[PacketEvent] = []
        self._lock = threading.Lock()

    def push(self, n: int) -> None:
        now = time.time_ns()
        with self._lock:
            self.queue += [PacketEvent(now + i, "refused", 4, "10.244.2.50", 41000 + i, POD_IP, 8080,
                                       state_raw=2, source="ebpf", node="n1") for i in range(n)]  # fmt: skip

    def poll(self, timeout_ms: int) -> list[PacketEvent]:
        with self._lock:
            out, self.queue = self.queue, []
        if not out:
            time.sleep(timeout_ms / 1000)
        self.produced += len(out)
        return out


def test_agent_records_kube_and_audits_a_deletion(tmp_path: Path) -> None:
    src = RefusalSource()
    reports: list[EpisodeReport] = []
    with FakeApiServer(bookmark_interval=0.2) as srv:
        srv.create(_pod("web-1", POD_IP))
        srv.create(_slice(True))
        client = load_api_client(str(srv.write_kubeconfig(tmp_path / "kubeconfig")))
        config = AgentConfig(
            node="n1", log_dir=tmp_path / "log", metrics_addr=None, flush_ms=100, settle_s=0.5,
            rss_limit_mb=0,  # the test process's own size (pytest, pandas, ...) is not the agent's
        )

        def drive(agent: Agent) -> None:
            def run() -> None:
                try:
                    assert agent.kube is not None and agent.kube.watcher.wait_synced(10)
                    pod = srv.get("Pod", "shop", "web-1")
                    assert pod is not None
                    pod["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:30Z"
                    pod["metadata"]["deletionGracePeriodSeconds"] = 30
                    srv.update(pod)
                    srv.update(_slice(False))
                    time.sleep(0.3)
                    src.push(3)  # refused after the deletion: the gap
                    time.sleep(0.3)
                    srv.delete("Pod", "shop", "web-1")
                    deadline = time.monotonic() + 15
                    while not reports and time.monotonic() < deadline:
                        time.sleep(0.1)
                finally:
                    agent.request_stop()

            threading.Thread(target=run, daemon=True).start()

        summary = run_agent(config, [src], kube_client=client, on_episode=reports.append, on_started=drive)
        client.close()
    assert summary["clean_exit"] and summary["written"] == summary["received_total"] == 3
    (kube_file,) = (tmp_path / "log").glob("kube-n1-*.json")
    docs = [json.loads(line) for line in kube_file.read_text().splitlines()]
    assert all(d["observedAt"].endswith("Z") for d in docs)
    assert {(d["object"]["kind"], d["type"]) for d in docs} >= {
        ("Pod", "ADDED"), ("Pod", "MODIFIED"), ("Pod", "DELETED"), ("EndpointSlice", "ADDED"), ("EndpointSlice", "MODIFIED"),
    }  # fmt: skip
    assert summary["kube"]["recorded"] == len(docs)
    timeline = read_kube_streams([kube_file])
    assert timeline.pods["uid-web-1"].deleted and timeline.pods["uid-web-1"].deletion_observed_ns
    (report,) = reports
    assert report.pod == "web-1" and report.verdict == "GAP"
    assert report.failures == {("refused", "propagation_gap"): 3}
    episodes = (tmp_path / "log" / "episodes-n1.jsonl").read_text().splitlines()
    assert json.loads(episodes[0])["pod"] == "web-1"
    assert summary["episodes"]["by_verdict"] == {"GAP": 1}
