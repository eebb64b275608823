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


# ------------------------------------------------------------------------------------------- 502s via a proxy

T = 1795680000 * NS  # 2026-11-26T08:00:00Z
INGRESS = "ingress-nginx/ingress-nginx-controller-abc"


def _node_failure(
    t: int, kind: str, cause: str, episode: int, pod: str, consumer_kind: str, consumer: str
) -> dict:
    return {"time": t, "failure": kind, "cause": cause, "episode": episode, "pod": pod,
            "consumer_kind": consumer_kind, "consumer": consumer}  # fmt: skip


def test_hey_csv_502s_are_placed_on_the_proxy_failures_of_their_episode(tmp_path: Path) -> None:
    """hey -o csv through an ingress: each 502 (a row with its offset from hey's start) takes the episode of
    the ingress's refused or reset upstream connection it met; a 502 that only coincides with kube-proxy's
    refusal is not the ingress's (unexplained), one after the rollout is outside every termination."""
    from auditor.correlate.client import place_requests, reconcile
    from auditor.sources.client_result import read_client_result

    ms = 1_000_000
    ingress_ep0 = [T + 100 * ms + i * 20 * ms for i in range(5)]  # the ingress's refusals, web-a's gap
    ingress_ep1 = [T + 10 * NS + 150 * ms + i * 20 * ms for i in range(3)]
    reset_ep1 = T + 10 * NS + 400 * ms  # accepted by web-b, reset when its listener closed
    proxy_ep0 = T + 700 * ms  # kube-proxy's refusal (a ClusterIP client, not behind the ingress)
    rows = [_node_failure(t, "refused", "propagation_gap", 0, "web-a", "pod", INGRESS) for t in ingress_ep0]
    rows += [_node_failure(t, "refused", "propagation_gap", 1, "web-b", "pod", INGRESS) for t in ingress_ep1]
    rows += [_node_failure(reset_ep1, "reset", "inflight_reset", 1, "web-b", "pod", INGRESS)]
    rows += [_node_failure(proxy_ep0, "refused", "propagation_gap", 0, "web-a", "kube-proxy", "lab-node")]
    failures = pd.DataFrame(rows)
    failures["time"] = pd.to_datetime(failures["time"], unit="ns", utc=True)
    spans = pd.DataFrame({"episode": [0, 1], "pod": ["web-a", "web-b"],
                          "start_ns": [T - NS, T + 9 * NS], "end_ns": [T + 3 * NS, T + 12 * NS]})  # fmt: skip

    start = T - 5 * NS  # when hey started: offsets count from it
    outside = T + 30 * NS
    five_oh_two = [t - ms for t in [*ingress_ep0, *ingress_ep1, reset_ep1, proxy_ep0]] + [outside]
    ok = [T - 4 * NS + i * 50 * ms for i in range(700)]
    lines = ["response-time,DNS+dialup,DNS,Request-write,Response-delay,Response-read,status-code,offset"]
    for t, code in sorted([(t, 200) for t in ok] + [(t, 502) for t in five_oh_two]):
        lines.append(f"0.0012,0.0003,0.0000,0.0000,0.0008,0.0001,{code},{(t - start) / NS:.4f}")
    path = tmp_path / "hey.csv"
    path.write_text("\n".join(lines) + "\n")
    client = read_client_result(path, start=datetime.fromtimestamp(start / NS, UTC))
    assert client.format == "hey-csv" and client.time_known
    assert client.by_class["http_502"] == len(five_oh_two) == 11

    placed = place_requests(client, failures, spans)
    matched = placed.loc[placed["placement"] == "matched"]
    assert (matched.groupby("episode").size().to_dict()) == {0: 5, 1: 4}  # = the ingress's refused + reset
    assert set(matched["consumer"]) == {INGRESS} and -1 not in set(matched["node_failure"])
    assert int(failures.loc[matched["node_failure"], "consumer_kind"].eq("kube-proxy").sum()) == 0
    unexplained = placed.loc[placed["placement"] == "unexplained"]
    assert unexplained[["episode", "pod"]].values.tolist() == [[0, "web-a"]]
    assert placed.loc[placed["placement"] == "outside", "time"].tolist() == [
        pd.Timestamp(outside, tz="UTC")
    ]

    recon = reconcile(client, failures, placed, (T - 10 * NS, T + 20 * NS))
    summary = recon["placed"]
    assert summary["episodes"]["0"] == {
        "pod": "web-a", "by_class": {"http_502": 6}, "by_cause": {"propagation_gap": 5},
        "by_consumer": {INGRESS: 5}, "matched": 5, "unexplained": 1,
    }  # fmt: skip
    assert summary["episodes"]["1"]["by_cause"] == {"propagation_gap": 3, "inflight_reset": 1}
    assert (recon["node_refused_by_proxies"], recon["node_reset_by_proxies"]) == (8, 1)
    refused_note, note = recon["notes"]  # hey met no refusal itself; 11 502s: 9 are the ingress's
    assert refused_note == "client saw 0 refused, kube-proxy's connections met 1"
    assert summary["outside_terminations"] == 1 and summary["unexplained"] == 1 and summary["matched"] == 9
    assert "11 HTTP 502" in note and "refused 8 and reset 1" in note
