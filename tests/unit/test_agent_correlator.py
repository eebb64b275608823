"""Live correlation of one finished termination episode from a recorded watch stream and live events."""

from __future__ import annotations

import json

from auditor.agent.correlator import LiveCorrelator
from auditor.model.dataplane import DataplaneRecord
from auditor.model.kube import parse_time_ns
from auditor.model.packet import PacketEvent
from tests.conftest import REPO

STREAM = REPO / "tests/data/kube/rollout-watch-oneline.json"
OLD_IP = "10.244.1.7"  # web-6d4b9c7f5-abcde on node-a, deleted at 08:00:12.25
DELETING = parse_time_ns("2026-11-26T08:00:05.123456789Z")[0]


def _feed(c: LiveCorrelator) -> int:
    last = 0
    for line in STREAM.read_text().splitlines():
        doc = json.loads(line)
        last = parse_time_ns(doc["observedAt"])[0]
        c.add_kube(doc["object"]["kind"], doc["type"], doc["object"], last)
    return last


def _refused(n: int, node: str = "node-a") -> list[PacketEvent]:
    return [
        PacketEvent(DELETING + 10**9 + i * 10**8, "refused", 4, "10.244.2.50", 40000 + i, OLD_IP, 8080,
                    state_raw=2, source="ebpf", node=node)
        for i in range(n)
    ]  # fmt: skip


def test_episode_is_audited_after_settling() -> None:
    c = LiveCorrelator("node-a", settle_s=5)
    deleted = _feed(c)
    c.add_packets(_refused(4))
    c.add_packets(
        [PacketEvent(DELETING, "refused", 4, "10.1.1.1", 1, "10.9.9.9", 80, node="node-a")]
    )  # not ours
    c.add_dataplane(
        DataplaneRecord(DELETING + 2 * 10**9, "node-a", OLD_IP, 8080, "TCP", "removed", "nftables")
    )
    assert c.pending == 1
    assert c.run_due(deleted + 4 * 10**9) == []  # still settling
    (report,) = c.run_due(deleted + 6 * 10**9)
    assert (report.namespace, report.pod, report.pod_node, report.node) == (
        "shop", "web-6d4b9c7f5-abcde", "node-a", "node-a",
    )  # fmt: skip
    assert report.verdict == "GAP"
    assert report.failures == {("refused", "propagation_gap"): 4}
    assert report.packets == 4
    assert report.max_propagation_delay_s is not None and 1.0 < report.max_propagation_delay_s < 3.0
    assert report.node_delays == {"node-a": report.max_propagation_delay_s}
    assert "episode shop/web-6d4b9c7f5-abcde" in report.line and "verdict=GAP" in report.line
    assert "propagation_gap 4" in report.line
    assert c.pending == 0 and c.finished == 1
    json.dumps(report.as_dict())  # serializable for episodes-<node>.jsonl


def test_pod_elsewhere_without_traffic_is_skipped() -> None:
    c = LiveCorrelator("node-z", settle_s=0)
    deleted = _feed(c)
    assert c.run_due(deleted + 1) == []
    assert (c.skipped, c.finished, c.errors) == (1, 0, 0)


def test_pod_elsewhere_with_traffic_here_is_audited() -> None:
    c = LiveCorrelator("node-z", settle_s=0)
    deleted = _feed(c)
    c.add_packets(_refused(2, node="node-z"))
    (report,) = c.run_due(deleted + 1)
    assert report.pod_node == "node-a" and report.node == "node-z"
    assert sum(report.failures.values()) == 2


def test_window_keeps_aged_out_pod_versions_as_base() -> None:
    c = LiveCorrelator("node-a", settle_s=0, max_kube=3)  # most of the stream ages out by count
    deleted = _feed(c)
    c.add_packets(_refused(3))
    (report,) = c.run_due(deleted + 1)
    assert report.pod == "web-6d4b9c7f5-abcde"
    assert sum(report.failures.values()) == 3
