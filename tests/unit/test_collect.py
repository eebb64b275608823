"""``auditor collect``: two agents (real metrics servers serving log dirs, checking the caller's bearer
token with the API server) behind a fake API server's pod proxy, collected into one directory that
``analyze --dir`` shows side by side."""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from auditor.kubeapi import load_api_client
from auditor.kubeapi.reviews import ApiAccessReviewer
from auditor.model.access import node_proxy_permission
from auditor.sinks.logauth import LogsAccess
from auditor.sinks.metrics import AgentMetrics, MetricsServer
from tests.kubeserver.proxy import ProxyApiServer
from tests.unit.test_analyze_dir import STAMP, run, write_log_dir


@dataclass
class Cluster:
    api: ProxyApiServer
    kubeconfig: Path
    agents: dict[str, tuple[Path, MetricsServer]]


USER_TOKEN = "fake-token"  # what FakeApiServer.write_kubeconfig puts in the kubeconfig


def _serve(log_dir: Path | None, access: LogsAccess | None = None) -> MetricsServer:
    return MetricsServer(
        AgentMetrics(), "127.0.0.1:0", lambda: (True, "ok"), log_dir=log_dir, log_access=access or LogsAccess.off()
    ).start()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    agents: dict[str, tuple[Path, MetricsServer]] = {}
    with ProxyApiServer() as api:
        # the user of the kubeconfig may read every agent's logs; the agents review with the same server
        api.add_token(USER_TOKEN, "collector")
        api.grant("collector", "get", "nodes", "proxy")
        reviewer = ApiAccessReviewer(load_api_client(str(api.write_kubeconfig(tmp_path / "agent-kubeconfig"))))
        try:
            for i, node in enumerate(("node-a", "node-b")):
                d = write_log_dir(tmp_path / "agents" / node, node)
                server = _serve(d, LogsAccess(reviewer, node_proxy_permission(node)))
                agents[node] = (d, server)
                api.add_agent_pod(f"auditor-{i}x", node, server.port)
            api.create({"kind": "Pod", "metadata": {"name": "web-1", "namespace": "auditor",
                                                    "labels": {"app": "web"}},
                        "spec": {"nodeName": "node-a", "containers": [{"name": "web", "image": "web"}]}, "status": {"phase": "Running"}})  # fmt: skip
            yield Cluster(api, api.write_kubeconfig(tmp_path / "kubeconfig"), agents)
        finally:
            for _, server in agents.values():
                server.stop()
            reviewer.api_client.close()


def _get(port: int, path: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=5) as resp:
            return int(resp.status), bytes(resp.read())
    except urllib.error.HTTPError as exc:
        return int(exc.code), bytes(exc.read())


def test_collect_then_analyze_shows_every_node(
    cluster: Cluster, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "collected"
    code, text, err = run(capsys, "collect", "--out", str(out), "--kubeconfig", str(cluster.kubeconfig))
    assert code == 0, err
    assert f"next: auditor analyze --dir {out}" in text
    assert "collected 2 of 2 agent(s)" in text
    for node, (src, _) in cluster.agents.items():
        got = sorted(p.name for p in (out / node).iterdir())
        want = sorted(p.name for p in src.iterdir() if not p.name.endswith(".part"))
        assert got == want
        for name in got:
            assert (out / node / name).read_bytes() == (src / name).read_bytes()
    # every download went through the pod proxy, to the agent's port, which checked the user's token:
    # one TokenReview and one SubjectAccessReview per agent, the other files from the agent's cache
    assert cluster.api.proxied.count("/logs") == 2
    reviews = [(r["kind"], r["spec"].get("user")) for r in cluster.api.reviews]
    assert sorted(reviews, key=str) == [("SubjectAccessReview", "collector")] * 2 + [("TokenReview", None)] * 2
    for _, server in cluster.agents.values():
        assert server.log_access.reviews == 2
    code, text, err = run(capsys, "analyze", "--dir", str(out), "--json")
    assert code == 0, err
    doc = json.loads(text)
    nodes = {n["node"]: n for n in doc["nodes"]}
    assert sorted(nodes) == ["node-a", "node-b"]
    assert nodes["node-a"]["causes"] == nodes["node-b"]["causes"]
    assert nodes["node-a"]["causes"]["propagation_gap"] > 0
    assert doc["inputs"]["problems_count"] == 0
    assert sorted(n for d in doc["inputs"]["log_dirs"] for n in d["nodes"]) == ["node-a", "node-b"]


def test_second_run_fetches_only_what_changed(
    cluster: Cluster, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "collected"
    args = ["collect", "--out", str(out), "--kubeconfig", str(cluster.kubeconfig), "--json"]
    code, text, err = run(capsys, *args)
    assert code == 0, err
    first = {n["node"]: n for n in json.loads(text)["nodes"]}
    assert all(n["fetched"] and not n["skipped"] for n in first.values())
    src_a = cluster.agents["node-a"][0]
    live = next(src_a.glob("events-node-a-*.jsonl"))
    line = live.read_text().splitlines()[-1]
    with live.open("a") as f:  # the agent appends a line and is half-way through the next one
        f.write(line + "\n" + line[:10])
    code, text, err = run(capsys, *args)
    assert code == 0, err
    second = {n["node"]: n for n in json.loads(text)["nodes"]}
    assert second["node-a"]["fetched"] == [live.name]
    assert second["node-b"]["fetched"] == []
    assert len(second["node-b"]["skipped"]) == len(first["node-b"]["fetched"])
    # whole lines only: the half-written line stays on the agent until it is complete
    assert (out / "node-a" / live.name).read_text().endswith(line + "\n" + line + "\n")


def test_agent_down_is_one_line_and_the_other_is_collected(
    cluster: Cluster, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cluster.agents["node-b"][1].stop()
    out = tmp_path / "collected"
    code, text, err = run(capsys, "collect", "--out", str(out), "--kubeconfig", str(cluster.kubeconfig))
    assert code == 0, err  # one agent of two: a partial collection, not a failure (--strict makes it 1)
    failed = [ln for ln in text.splitlines() if "FAILED" in ln]
    assert len(failed) == 1 and failed[0].startswith("node-b: FAILED (auditor-1x): HTTP 503")
    assert "collected 1 of 2 agent(s)" in text
    manifest = json.loads((out / "collect.json").read_text())
    assert [n["ok"] for n in manifest["nodes"]] == [True, False]
    code, text, err = run(capsys, "analyze", "--dir", str(out), "--json")
    assert code == 0, err
    doc = json.loads(text)
    assert [n["node"] for n in doc["nodes"]] == ["node-a"]
    assert any(p.startswith("node-b: not collected: HTTP 503") for p in doc["inputs"]["problems"])
    code, _, _ = run(
        capsys, "collect", "--out", str(out), "--kubeconfig", str(cluster.kubeconfig), "--strict"
    )
    assert code == 1


def test_api_refusal_and_no_agents_are_one_line_errors(
    cluster: Cluster, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["collect", "--out", str(tmp_path / "o"), "--kubeconfig", str(cluster.kubeconfig)]
    cluster.api.fail_next(1, 403)
    code, _, err = run(capsys, *base)
    assert code == 2 and "pods/proxy" in err and len(err.strip().splitlines()) == 1
    code, _, err = run(capsys, *base, "--selector", "app=nothing")
    assert code == 2 and "no agent pods" in err
    code, _, err = run(capsys, *base, "--since", "soon")
    assert code == 2 and "--since" in err


def test_since_leaves_old_files_out(
    cluster: Cluster, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src_b = cluster.agents["node-b"][0]
    for p in src_b.iterdir():
        os.utime(p, (1_000_000_000, 1_000_000_000))
    out = tmp_path / "collected"
    args = ["collect", "--out", str(out), "--kubeconfig", str(cluster.kubeconfig), "--since", "1h", "--json"]
    code, text, err = run(capsys, *args)
    assert code == 0, err
    nodes = {n["node"]: n for n in json.loads(text)["nodes"]}
    assert nodes["node-b"]["fetched"] == [] and nodes["node-b"]["too_old"] == 5
    assert len(nodes["node-a"]["fetched"]) == 5


def test_logs_route_serves_only_listed_log_files(tmp_path: Path) -> None:
    d = write_log_dir(tmp_path / "log", "n1")
    (d / "secret.txt").write_text("no")
    (tmp_path / "outside.txt").write_text("outside")
    (d / f"kube-n2-{STAMP}.json").symlink_to(tmp_path / "outside.txt")
    server = _serve(d)
    try:
        code, body = _get(server.port, "/logs")
        assert code == 200
        names = [f["name"] for f in json.loads(body)["files"]]
        assert names == sorted(p.name for p in d.iterdir() if p.name.startswith(("events-", "kube-n1", "dataplane",
                                                                                  "agent-")) and ".part" not in p.name)  # fmt: skip
        seg = next(n for n in names if n.endswith(".parquet"))
        code, body = _get(server.port, f"/logs/{seg}")
        assert code == 200 and body == (d / seg).read_bytes()
        refused = [
            f"/logs/events-n1-{STAMP}-0099.parquet.part",
            "/logs/secret.txt",
            f"/logs/kube-n2-{STAMP}.json",  # a symlink out of the directory
            "/logs/../../etc/passwd",
            "/logs/..%2F..%2Fetc%2Fpasswd",
            f"/logs/..%2Flog%2F{seg}",
            f"/logs/%2E%2E/log/{seg}",
            f"/logs/{seg}/",
        ]
        for path in refused:
            code, body = _get(server.port, path)
            assert code == 404, path
            assert b"outside" not in body and b"PAR1" not in body
    finally:
        server.stop()
    plain = _serve(None)
    try:
        assert _get(plain.port, "/logs")[0] == 404  # without a log dir, nothing but metrics
        assert _get(plain.port, "/healthz")[0] == 200
    finally:
        plain.stop()


def test_live_line_file_listed_up_to_its_last_newline(tmp_path: Path) -> None:
    from auditor.sinks.logserve import list_log_files

    name = f"dataplane-n1-{STAMP}.jsonl"
    (tmp_path / name).write_bytes(b'{"a":1}\n{"b":2}\n{"c":')
    (sizes,) = [f.size for f in list_log_files(tmp_path)]
    assert sizes == len(b'{"a":1}\n{"b":2}\n')
    (tmp_path / name).write_bytes(b'{"half')
    assert [f.size for f in list_log_files(tmp_path)] == [0]


def test_rotated_live_segment_is_replaced_by_its_parquet_twin(
    cluster: Cluster, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:

    from auditor.sources.eventfile import read_events

    out = tmp_path / "collected"
    args = ["collect", "--out", str(out), "--kubeconfig", str(cluster.kubeconfig), "--json"]
    assert run(capsys, *args)[0] == 0
    src = cluster.agents["node-a"][0]
    live = next(src.glob("events-node-a-*.jsonl"))
    # the agent finishes the live segment: Parquet twin written, JSONL removed
    read_events(live).to_parquet(live.with_suffix(".parquet"))
    live.unlink()
    code, text, err = run(capsys, *args)
    assert code == 0, err
    node_a = next(n for n in json.loads(text)["nodes"] if n["node"] == "node-a")
    assert node_a["fetched"] == [live.with_suffix(".parquet").name] and node_a["replaced"] == 1
    assert not (out / "node-a" / live.name).exists()
    code, text, err = run(capsys, "analyze", "--dir", str(out), "--json")
    assert code == 0, err
    nodes = {n["node"]: n for n in json.loads(text)["nodes"]}
    assert nodes["node-a"]["causes"] == nodes["node-b"]["causes"]  # no row counted twice


def test_agents_refuse_a_user_without_the_permission(
    cluster: Cluster, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cluster.api.add_token("t-dev", "dev")  # authenticated, but no nodes/proxy grant
    (tmp_path / "dev-token").write_text("t-dev\n")
    (tmp_path / "forged").write_text("forged")
    base = ["collect", "--out", str(tmp_path / "o"), "--kubeconfig", str(cluster.kubeconfig), "--json"]
    code, text, err = run(capsys, *base, "--token-file", str(tmp_path / "dev-token"))
    assert code == 1, err  # every agent refused: nothing collected
    nodes = json.loads(text)["nodes"]
    assert [n["ok"] for n in nodes] == [False, False]
    for n in nodes:
        assert n["error"].startswith("HTTP 403") and 'user "dev" may not get nodes/proxy' in n["error"]
        assert "nodes/proxy" in n["error"] and "daemonset/README.md" in n["error"]
    code, text, _ = run(capsys, *base, "--token-file", str(tmp_path / "forged"))
    assert code == 1 and all(n["error"].startswith("HTTP 401") for n in json.loads(text)["nodes"])
    assert not list((tmp_path / "o").rglob("events-*"))
    code, _, err = run(capsys, *base, "--token-file", str(tmp_path / "nope"))
    assert code == 2 and "--token-file" in err


def test_the_pod_proxy_strips_authorization_so_collect_uses_its_own_header(cluster: Cluster) -> None:
    from kubernetes import client

    from auditor.kubeapi.proxy import TOKEN_HEADER, bearer_token
    from auditor.sinks.logauth import FORWARDED_HEADER

    assert TOKEN_HEADER == FORWARDED_HEADER
    api = load_api_client(str(cluster.kubeconfig))
    try:
        assert bearer_token(api) == USER_TOKEN
        core = client.CoreV1Api(api)

        def status(headers: dict[str, str]) -> int:
            resp = core.connect_get_namespaced_pod_proxy_with_path(
                "auditor-0x:9808", "auditor", "logs", _headers=headers, _preload_content=False
            )
            return int(resp.status)

        import kubernetes.client.exceptions as kexc

        with pytest.raises(kexc.ApiException) as refused:
            status({})  # the client's own Authorization reaches the API server, never the pod
        assert refused.value.status == 401
        with pytest.raises(kexc.ApiException) as again:
            status({"Authorization": f"Bearer {USER_TOKEN}"})  # overridden and stripped alike
        assert again.value.status == 401
        assert status({TOKEN_HEADER: f"Bearer {USER_TOKEN}"}) == 200
    finally:
        api.close()
