"""Client failures on the timeline: per-request results are placed on the episodes that explain them.

The client files are written here in vegeta's (``vegeta encode -to json``) and k6's (``--out json=``)
documented formats from the refusals the example rollout's node really saw (each request starting 150 µs
before the node's RST), plus successes, one refusal inside an episode that no node saw, and one outside
every termination. The expected placement is therefore known by construction.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

import auditor
from auditor.model.kube import format_time_ns
from tests.conftest import REPO

EXAMPLE = REPO / "examples" / "rollout"
NS = 1_000_000_000


def _example() -> auditor.Audit:
    return auditor.analyze(pcaps=str(EXAMPLE / "node.pcap"), kube=str(EXAMPLE / "kube.json"), node="lab-node")


def _plan() -> tuple[list[tuple[int, str]], dict[int, int], int, int]:
    """(time, outcome) per request, the node's gap refusals per episode, and two extra refusals' times:
    one inside an episode where the node saw nothing, one outside every termination."""
    a = _example()
    fl = a.result.failures
    gap = fl.loc[fl["cause"] == "propagation_gap"]
    t = pd.DatetimeIndex(gap["time"]).as_unit("ns").asi8
    requests = [(int(x) - 150_000, "refused") for x in t]
    per_episode = {int(k): int(v) for k, v in gap.groupby("episode").size().items()}
    ep = a.result.episodes.iloc[0]
    tl = a.result.timelines.set_index("episode")
    unexplained = (
        int(tl.loc[int(ep["episode"]), "rule_removed_ns"]) + NS // 2
    )  # after the gap, before the tail
    outside = int(a.result.episodes["deleted_ns"].min()) - 60 * NS
    start = int(t.min()) - 5 * NS
    requests += [(start + i * 20_000_000, "ok") for i in range(800)]
    requests += [(unexplained, "refused"), (outside, "refused")]
    return sorted(requests), per_episode, unexplained, outside


def _rfc3339(ns: int) -> str:
    return format_time_ns(ns)


def _vegeta(path: Path, requests: list[tuple[int, str]]) -> None:
    with path.open("w", encoding="utf-8") as f:
        for seq, (t, outcome) in enumerate(requests):
            refused = outcome == "refused"
            err = 'Get "http://10.96.0.10/": dial tcp 10.1.0.2:40000->10.96.0.10:80: connect: connection refused'
            f.write(json.dumps({
                "attack": "rollout", "seq": seq, "code": 0 if refused else 200, "timestamp": _rfc3339(t),
                "latency": 300_000 if refused else 1_500_000, "bytes_out": 0, "bytes_in": 0 if refused else 3,
                "error": err if refused else "", "body": None if refused else "b2sK", "method": "GET",
                "url": "http://10.96.0.10/", "headers": None,
            }) + "\n")  # fmt: skip


def _k6(path: Path, requests: list[tuple[int, str]]) -> None:
    """k6 stamps a point when the request ends: time = start + duration."""
    lines = [{"type": "Metric", "data": {"name": "http_reqs", "type": "counter", "contains": "default",
                                         "thresholds": [], "submetrics": None}, "metric": "http_reqs"}]  # fmt: skip
    for t, outcome in requests:
        refused = outcome == "refused"
        dur_ms = 0.0 if refused else 1.5
        tags = {"expected_response": "false" if refused else "true", "group": "", "method": "GET",
                "name": "http://10.96.0.10/", "proto": "" if refused else "HTTP/1.1", "scenario": "default",
                "status": "0" if refused else "200", "url": "http://10.96.0.10/"}  # fmt: skip
        if refused:
            tags |= {"error": "dial: connection refused", "error_code": "1212"}
        end = _rfc3339(t + int(dur_ms * 1e6))
        lines.append(
            {"type": "Point", "data": {"time": end, "value": 1, "tags": tags}, "metric": "http_reqs"}
        )
        lines.append({"type": "Point", "data": {"time": end, "value": dur_ms, "tags": tags},
                      "metric": "http_req_duration"})  # fmt: skip
    path.write_text("".join(json.dumps(x) + "\n" for x in lines), encoding="utf-8")


def _check(client: Path) -> None:
    requests, per_episode, _, _ = _plan()
    a = auditor.analyze(
        pcaps=str(EXAMPLE / "node.pcap"), kube=str(EXAMPLE / "kube.json"), node="lab-node", client=str(client)
    )
    recon = a.reconciliation
    assert recon is not None and recon["reconciled"] is True
    placed = recon["placed"]
    refused = sum(1 for _, o in requests if o == "refused")
    assert placed["requests_failed"] == refused
    assert placed["matched"] == sum(per_episode.values()) == 168
    assert placed["unexplained"] == 1 and placed["outside_terminations"] == 1
    for episode, n in per_episode.items():  # client refused on the timeline = the node's, per episode
        got = placed["episodes"][str(episode)]
        assert got["by_cause"] == {"propagation_gap": n}, (episode, got)
        extra = 1 if got["unexplained"] else 0
        assert got["by_class"] == {"refused": n + extra}
    assert sum(e["unexplained"] for e in placed["episodes"].values()) == 1
    table = a.result.client_failures
    assert len(table) == refused and set(table["placement"]) == {"matched", "unexplained", "outside"}


def test_vegeta_results_are_placed_on_the_episodes(tmp_path: Path) -> None:
    path = tmp_path / "results.json"
    _vegeta(path, _plan()[0])
    _check(path)


def test_k6_points_are_placed_on_the_episodes(tmp_path: Path) -> None:
    path = tmp_path / "k6.json"
    _k6(path, _plan()[0])
    _check(path)


def test_a_client_result_from_another_time_is_not_reconciled(tmp_path: Path) -> None:
    doc = json.loads((REPO / "tests/data/client/fortio-rollout.json").read_text(encoding="utf-8"))
    doc["StartTime"] = datetime(2019, 7, 10, 12, 0, tzinfo=UTC).isoformat().replace("+00:00", "Z")
    path = tmp_path / "fortio-2019.json"
    path.write_text(json.dumps(doc), encoding="utf-8")
    a = auditor.analyze(
        pcaps=str(EXAMPLE / "node.pcap"), kube=str(EXAMPLE / "kube.json"), node="lab-node", client=str(path)
    )
    recon = a.reconciliation
    assert recon is not None and recon["reconciled"] is False
    assert recon["explained_fraction"] is None
    (note,) = recon["notes"]
    assert note.startswith("the client ran 2019-07-10T12:00:00Z") and "not reconciled" in note
    assert a.verdict == "GAP"  # the nodes' own evidence still holds
