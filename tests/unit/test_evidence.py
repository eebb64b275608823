"""Never SAFE without evidence: inputs that did not watch the pods give INCONCLUSIVE, with the reason.

Each case takes the shipped example rollout (a capture that really lost 168 requests) and breaks one
thing the evidence needs: the capture cut before the deletions, the pods' subnet changed (the capture
saw other addresses), the capture moved to another day, a capture without the pods' traffic.
"""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path

import pytest

import auditor
from auditor.correlate.audit import audit
from auditor.model.audit import EXIT_CODES, Coverage
from auditor.model.packet import ACK, SYN, PacketEvent, packet_frame
from tests.conftest import CORPUS, REPO
from tests.fakes import inputs, pod

EXAMPLE = REPO / "examples" / "rollout"
NS = 1_000_000_000


def _records(pcap: bytes) -> list[bytes]:
    """The records of a classic little-endian pcap (header and data), in order."""
    assert struct.unpack("<I", pcap[:4])[0] == 0xA1B2C3D4
    out, pos = [], 24
    while pos + 16 <= len(pcap):
        incl = struct.unpack("<I", pcap[pos + 8 : pos + 12])[0]
        out.append(pcap[pos : pos + 16 + incl])
        pos += 16 + incl
    return out


def _cut(tmp: Path, n: int) -> Path:
    data = EXAMPLE.joinpath("node.pcap").read_bytes()
    out = tmp / "cut.pcap"
    out.write_bytes(data[:24] + b"".join(_records(data)[:n]))
    return out


def _shift(tmp: Path, seconds: int) -> Path:
    data = EXAMPLE.joinpath("node.pcap").read_bytes()
    recs = []
    for r in _records(data):
        ts = struct.unpack("<I", r[:4])[0] + seconds
        recs.append(struct.pack("<I", ts) + r[4:])
    out = tmp / "shifted.pcap"
    out.write_bytes(data[:24] + b"".join(recs))
    return out


def _analyze(pcap: Path, kube: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "auditor", "analyze", "--pcap", str(pcap), "--kube", str(kube),
         "--node", "lab-node", *extra],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def _doc(pcap: Path, kube: Path = EXAMPLE / "kube.json") -> dict[str, object]:
    proc = _analyze(pcap, kube, "--json")
    assert proc.returncode == 0, proc.stderr
    doc: dict[str, object] = json.loads(proc.stdout)
    return doc


def test_the_example_is_still_gap_and_every_episode_has_evidence() -> None:
    doc = _doc(EXAMPLE / "node.pcap")
    assert doc["verdict"] == "GAP" and doc["exit_code"] == EXIT_CODES["GAP"] == 1
    episodes = doc["episodes"]
    assert isinstance(episodes, list) and len(episodes) == 3
    for ep in episodes:
        (ev,) = ep["evidence"]
        assert ev["node"] == "lab-node" and ev["covered"] and ev["connections"] > 0 and ev["delay_measured"]
        assert ep["verdict"] == "GAP" and ep["reasons"] == []


def test_capture_cut_before_the_deletions_is_inconclusive(tmp_path: Path) -> None:
    doc = _doc(_cut(tmp_path, 10))
    assert doc["verdict"] == "INCONCLUSIVE", doc["verdict_line"]
    assert any("end before the deletion of web-" in r for r in doc["verdict_reasons"]), doc["verdict_reasons"]  # type: ignore[attr-defined]
    proc = _analyze(_cut(tmp_path, 10), EXAMPLE / "kube.json", "--fail-on-gap")
    assert proc.returncode == EXIT_CODES["INCONCLUSIVE"] == 3, proc.stdout[-500:]
    assert "INCONCLUSIVE default/web" in proc.stdout


def test_capture_that_never_saw_the_pods_subnet_is_inconclusive(tmp_path: Path) -> None:
    kube = tmp_path / "kube.json"
    kube.write_text(
        EXAMPLE.joinpath("kube.json").read_text(encoding="utf-8").replace("10.244.0.", "10.245.7.")
    )
    doc = _doc(EXAMPLE / "node.pcap", kube)
    assert doc["verdict"] == "INCONCLUSIVE", doc["verdict_line"]
    reasons = doc["verdict_reasons"]
    assert isinstance(reasons, list) and len(reasons) == 3
    assert all(r.startswith("no connection to 10.245.7.") and "seen on any node" in r for r in reasons), (
        reasons
    )


def test_capture_of_another_day_is_inconclusive(tmp_path: Path) -> None:
    doc = _doc(_shift(tmp_path, 2 * 86400))
    assert doc["verdict"] == "INCONCLUSIVE", doc["verdict_line"]
    assert all("start after the deletion of" in r for r in doc["verdict_reasons"]), doc["verdict_reasons"]  # type: ignore[attr-defined]
    doc = _doc(_shift(tmp_path, -2 * 86400))
    assert doc["verdict"] == "INCONCLUSIVE"
    assert all("end before the deletion of" in r for r in doc["verdict_reasons"]), doc["verdict_reasons"]  # type: ignore[attr-defined]


def test_a_capture_without_the_pods_traffic_is_never_safe() -> None:
    """The issue's case: a real capture of something else (tcpdump's test suite: 150 TCP packets, 15
    SYNs, none to the pods) against the rollout's kube stream."""
    other = CORPUS / "tcpdump-captures" / "resp_1_benchmark.pcap"
    if not other.is_file():
        pytest.skip(f"capture corpus not found at {CORPUS} (CI has it at ../shared)")
    a = auditor.analyze(pcaps=str(other), kube=str(EXAMPLE / "kube.json"), node="lab-node")
    assert a.verdict == "INCONCLUSIVE", a.verdict_line
    assert len(a.verdict_reasons) == 3 and "SAFE" not in a.verdict_line


def _safe_scenario(lost: int = 0, cut_ns: int | None = None) -> tuple[list[PacketEvent], list[Coverage]]:
    """A pod deleted at T0 with preStop 3 s: this node routes SYNs to it until T0 + 1 s, all accepted."""
    t0 = 1_790_000_000 * NS
    events = []
    for i in range(300):  # 10 ms apart from T0 - 1 s to T0 + 2 s
        t = t0 - NS + i * 10_000_000
        dst = "10.244.0.5" if t < t0 + NS and i % 2 == 0 else "10.244.0.9"
        if cut_ns is not None and t > t0 + cut_ns:
            break
        events.append(
            PacketEvent(t, "tcp_syn", 4, "10.1.0.2", 40000 + i, dst, 8080, SYN, 1000 + i, 0, node="node-a")
        )
        events.append(
            PacketEvent(
                t + 30_000,
                "tcp_synack",
                4,
                dst,
                8080,
                "10.1.0.2",
                40000 + i,
                SYN | ACK,
                5,
                1001 + i,
                node="node-a",
            )
        )
    cov = [Coverage("node-a", "agent", t0 - 60 * NS, t0 + 60 * NS, lost=lost)] if lost else []
    return events, cov


def _pods() -> list[object]:
    t0 = 1_790_000_000 * NS
    return [
        pod("u-old", "default", "web-6d5f-aaaaa", ("10.244.0.5",), first_seen_ns=t0 - 60 * NS,
            deletion_observed_ns=t0, deleted_observed_ns=t0 + 4 * NS, prestop_sleep_s=3.0, prestop_kind="sleep"),
        pod("u-new", "default", "web-6d5f-bbbbb", ("10.244.0.9",), first_seen_ns=t0 - 5 * NS),
    ]  # fmt: skip


def test_safe_needs_the_recording_to_outlive_the_routing() -> None:
    events, _ = _safe_scenario()
    res = audit(inputs(packet_frame(events), _pods()))  # type: ignore[arg-type]
    assert res.verdict == "SAFE", res.verdict_line
    # the capture stops 0.5 s after the deletion, while the node still routes to the old pod
    events, _ = _safe_scenario(cut_ns=NS // 2)
    res = audit(inputs(packet_frame(events), _pods()))  # type: ignore[arg-type]
    assert res.verdict == "INCONCLUSIVE", res.verdict_line
    assert "recording ends before the end of the episode of web-6d5f-aaaaa" in res.verdict_line


def test_lost_events_make_a_quiet_episode_inconclusive() -> None:
    events, cov = _safe_scenario(lost=1204)
    res = audit(inputs(packet_frame(events), _pods(), coverage=cov))  # type: ignore[arg-type]
    assert res.verdict == "INCONCLUSIVE", res.verdict_line
    assert "lost 1,204 event(s)" in res.verdict_line


def test_a_safe_rollout_with_a_client_from_another_day_is_inconclusive() -> None:
    from datetime import UTC, datetime

    from auditor.model.client import ClientResult

    events, _ = _safe_scenario()
    client = ClientResult(
        tool="fortio", requests=1000, ok=1000, failed=0, by_error={}, status_codes={200: 1000}, qps=100.0,
        duration_s=10.0, start=datetime(2019, 7, 10, tzinfo=UTC), time_known=True,
    )  # fmt: skip
    res = audit(inputs(packet_frame(events), _pods(), client=client))  # type: ignore[arg-type]
    assert res.verdict == "INCONCLUSIVE", res.verdict_line
    assert "the client ran 2019-07-10T00:00:00Z" in res.verdict_line
    assert res.reconciliation is not None and res.reconciliation["reconciled"] is False


def test_the_table_wide_safe_rule_agrees_with_the_reasons() -> None:
    """``evidently_safe`` (whole table, vectorized) says SAFE exactly where ``episode_reasons`` finds no
    reason, over every combination of one or two nodes' evidence."""
    import itertools

    import pandas as pd

    from auditor.correlate.evidence import episode_reasons, evidently_safe
    from auditor.model.audit import EVIDENCE_COLUMNS, NodeEvidence

    def row(ep: int, node: str, bits: tuple[int, ...]) -> NodeEvidence:
        conn, rules, covered, lost, trunc, measured = bits
        return NodeEvidence(episode=ep, node=node, needed_start_ns=0, needed_end_ns=10, covered_start_ns=0 if covered else 5,
                            covered_end_ns=20, covered=bool(covered), connections=conn, rule_records=rules, lost=lost,
                            truncated=bool(trunc), delay_measured=bool(measured))  # fmt: skip

    one = list(itertools.product((0, 3), (0, 1), (0, 1), (0, 7), (0, 1), (0, 1)))
    rows: list[NodeEvidence] = []
    expected: dict[int, bool] = {}
    for ep, (a, b) in enumerate(itertools.product(one, one[::5])):
        pair = [row(ep, "node-a", a), row(ep, "node-b", b)]
        rows += pair
        expected[ep] = not episode_reasons("web-1", "10.0.0.1", 1, pair)
    table = pd.DataFrame({c: [getattr(r, c) for r in rows] for c in EVIDENCE_COLUMNS})
    safe = evidently_safe(table)
    assert 0 < len(safe) < len(expected)  # both answers occur
    assert {ep for ep, ok in expected.items() if ok} == safe
