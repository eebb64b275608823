"""The rollout lab itself: its rules, its server, its watch stream, and three short runs as root.

The runs (marker ``lab``) happen once per scenario per session (fixtures in ``tests/lab/conftest.py``):
(a) preStop 0, delay 1 s, new connections: refused connections, one RST per refusal from the old pods;
(b) preStop 3 s, delay 1 s: no client failure, no RST from old pods;
(c) keep-alive load, preStop 0, a server that aborts kept-alive connections: resets and refusals.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO, require_root, require_tool
from tests.lab import LabConfig, LabRun, run_rollout
from tests.lab.client import parse_hey
from tests.lab.kube import go_rfc3339_nano, rfc3339_nano
from tests.lab.netns import list_namespaces
from tests.lab.rules import Service, port_proto_hash, render_sync

# ---------------------------------------------------------------------------------------------
# pieces, no root


def test_chain_names_match_kube_proxy() -> None:
    # the names kube-proxy's own proxier tests expect for ns1/svc1:p80 and endpoint 10.180.0.1:80
    assert port_proto_hash("ns1/svc1:p80", "tcp") == "XPGD46QRK7WJZT7O"
    assert port_proto_hash("ns1/svc1:p80", "tcp", "10.180.0.1:80") == "SXIVWICOYRO3J4NJ"


def test_sync_splits_with_probabilities_and_deletes_stale_chains() -> None:
    svc = Service()
    text = render_sync(svc, ["10.244.0.11", "10.244.0.12", "10.244.0.13"], ["10.244.0.10"])
    svc_rules = [line for line in text.splitlines() if line.startswith(f"-A {svc.svc_chain} ")]
    assert len(svc_rules) == 3
    assert "--probability 0.3333333333" in svc_rules[0]
    assert "--probability 0.5000000000" in svc_rules[1]
    assert "statistic" not in svc_rules[2]
    assert f"-X {svc.sep_chain('10.244.0.10')}" in text
    assert "-j DNAT --to-destination 10.244.0.13:8080" in text
    assert text.splitlines()[1] == f":{svc.svc_chain} - [0:0]"  # declaring the chain flushes it


def test_nftables_mode_sync_has_kube_proxy_layout() -> None:
    from auditor.sources.dataplane.nft_rules import NftTables
    from tests.lab.nftables import endpoint_chain, render_nft_sync, service_chain

    svc = Service()
    text = render_nft_sync(svc, ["10.244.0.12", "10.244.0.13"], ["10.244.0.11"])
    chain = service_chain(svc)
    assert chain.startswith("service-") and chain.endswith("-default/web/tcp/http")
    assert f"delete chain ip kube-proxy {endpoint_chain(svc, '10.244.0.11')}" in text
    assert "numgen random mod 2 vmap { 0 : goto endpoint-" in text
    # the agent's nftables model reads what a listing of these rules shows
    tables = NftTables()
    listing = "table ip kube-proxy {\n" + "".join(
        f"chain {c} {{\n" + "".join(f"{r} # handle {i}\n" for i, r in enumerate(rules, 10)) + "}\n"
        for c, rules in [
            (chain, [line.split(f"{chain} ", 1)[1] for line in text.splitlines() if line.startswith(f"add rule ip kube-proxy {chain} ")]),
            *[(endpoint_chain(svc, ip), [f"meta l4proto tcp dnat to {ip}:8080"]) for ip in ("10.244.0.12", "10.244.0.13")],
        ]) + "}\n"  # fmt: skip
    tables.load_list(listing)
    assert {e.ip for e in tables.endpoints()} == {"10.244.0.12", "10.244.0.13"}


def test_hey_report_parsing() -> None:
    text = (
        "Summary:\n  Total:\t10.0032 secs\n  Requests/sec:\t499.8000\n\n"
        "Status code distribution:\n  [200]\t4650 responses\n  [502]\t2 responses\n\n"
        "Error distribution:\n"
        '  [340]\tGet "http://10.96.0.10:80/": dial tcp 10.96.0.10:80: connect: connection refused\n'
        '  [8]\tGet "http://10.96.0.10:80/": read tcp 10.1.0.2:4242->10.96.0.10:80: '
        "read: connection reset by peer\n"
        '  [1]\tGet "http://10.96.0.10:80/": dial tcp 10.96.0.10:80: connect: network is unreachable\n'
    )
    got = parse_hey(text)
    assert (got["total"], got["ok"], got["refused"], got["reset"], got["unreachable"]) == (5001, 4650, 340, 8, 1)
    assert got["status"] == {"200": 4650, "502": 2}
    assert got["requests_per_s"] == pytest.approx(499.8)


def test_timestamps_are_rfc3339_with_nanoseconds() -> None:
    assert rfc3339_nano(1_714_564_800_000_000_001) == "2024-05-01T12:00:00.000000001Z"
    assert go_rfc3339_nano(1_714_564_800_120_000_000) == "2024-05-01T12:00:00.12Z"


def test_server_drains_on_sigterm(tmp_path: Path) -> None:
    """Loopback only: listener closes at once on SIGTERM, idle keep-alive connections get FIN, exit 0."""
    events = tmp_path / "pod.jsonl"
    proc = subprocess.Popen([sys.executable, "-m", "tests.lab.server", "--host", "127.0.0.1", "--port", "0",
                             "--name", "p", "--events", str(events), "--drain", "2"], cwd=REPO)
    try:
        rows = _wait_rows(events, "listening", proc)
        port = rows["listening"]["port"]
        idle = socket.create_connection(("127.0.0.1", port), timeout=2)
        idle.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert idle.recv(200).startswith(b"HTTP/1.1 200 OK")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(5) == 0
        rows = _wait_rows(events, "exit", proc)
        assert rows["sigterm"]["time_ns"] <= rows["listener_closed"]["time_ns"] <= rows["exit"]["time_ns"]
        assert rows["exit"]["served"] == 1
        assert idle.recv(200) == b""  # the idle keep-alive connection was closed with FIN
        idle.close()
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(5)


def _wait_rows(path: Path, event: str, proc: subprocess.Popen[bytes]) -> dict[str, dict[str, Any]]:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        lines = path.read_text().splitlines() if path.exists() else []
        rows = {r["event"]: r for r in map(json.loads, lines)}
        if event in rows:
            return rows
        time.sleep(0.02)
    raise AssertionError(f"server never logged {event!r} (exit code {proc.poll()})")


def read_watch_stream(path: Path) -> list[dict[str, Any]]:
    """Concatenated pretty-printed JSON objects, as kubectl --watch -o json writes them."""
    text, dec, pos = path.read_text(), json.JSONDecoder(), 0
    events: list[dict[str, Any]] = []
    while True:
        while pos < len(text) and text[pos].isspace():
            pos += 1
        if pos >= len(text):
            return events
        event, pos = dec.raw_decode(text, pos)
        events.append(event)


# ---------------------------------------------------------------------------------------------
# lab runs, root


@pytest.mark.lab
def test_gap_run_refuses_connections(gap_run: LabRun) -> None:
    client, pods = gap_run.truth["client"], gap_run.truth["old_pods"]
    assert client["total"] > 2000  # ~500 req/s over the rollout
    assert client["refused"] > 0
    # refused connects, plus a few resets of connections still in the accept queue at listener close,
    # and rarely (3 of ~40 runs) a SYN that a stale conntrack entry sent to an old pod already gone
    assert client["error_total"] == client["refused"] + client["reset"] + client["unreachable"]
    assert client["reset"] < client["refused"] / 5
    assert len(pods) == 3
    for pod in pods:
        assert pod["rst_refused"] > 0, pod["name"]
    # each refused connect is exactly one RST answering a SYN from an old pod's IP:port on the node
    assert sum(pod["rst_refused"] for pod in pods) == client["refused"]
    assert sum(pod["rst_established"] for pod in pods) == client["reset"]
    assert sum(pod["unreachable"] for pod in pods) == client["unreachable"]
    assert sum(pod["rst_from_pod"] + pod["unreachable"] for pod in pods) == client["error_total"]


@pytest.mark.lab
def test_gap_run_interval_matches_configured_delay(gap_run: LabRun) -> None:
    for pod in gap_run.truth["old_pods"]:
        assert pod["t_delete"] <= pod["t_sigterm"] <= pod["t_listener_closed"]
        gap = (pod["t_rule_removed_after"] - pod["t_listener_closed"]) / 1e9
        assert 0.95 <= gap <= 1.15, (pod["name"], gap)
        assert pod["t_rule_removed_before"] - pod["t_delete"] >= 1_000_000_000
        assert pod["t_exit"] > 0 and pod["t_sigkill"] == 0


@pytest.mark.lab
def test_gap_run_watch_stream_is_kubernetes_shaped(gap_run: LabRun) -> None:
    import kubernetes_validate

    events = read_watch_stream(gap_run.kube)
    observed = [e["observedAt"] for e in events]
    assert observed == sorted(observed) and all(len(t) == 30 and t.endswith("Z") for t in observed)
    for event in events:
        kubernetes_validate.validate(event["object"], "1.30.0", strict=True)
    assert [e["type"] for e in events[:4]] == ["ADDED"] * 4
    old = {pod["name"] for pod in gap_run.truth["old_pods"]}
    deleted = [e["object"]["metadata"]["name"] for e in events if e["type"] == "DELETED"]
    assert sorted(deleted) == sorted(old)
    marked = {e["object"]["metadata"]["name"] for e in events
              if e["object"]["kind"] == "Pod" and "deletionTimestamp" in e["object"]["metadata"]}
    assert marked == old
    terminating = [ep for e in events if e["object"]["kind"] == "EndpointSlice"
                   for ep in e["object"]["endpoints"] if ep["conditions"]["terminating"]]
    assert terminating and all(not ep["conditions"]["ready"] for ep in terminating)
    last_slice = [e for e in events if e["object"]["kind"] == "EndpointSlice"][-1]["object"]
    new_ips = {pod["new_pod"]["ip"] for pod in gap_run.truth["old_pods"]}
    assert {ep["addresses"][0] for ep in last_slice["endpoints"]} == new_ips


@pytest.mark.lab
def test_gap_run_cleans_up(gap_run: LabRun) -> None:
    run_id = gap_run.truth["run_id"]
    assert not [ns for ns in list_namespaces() if ns.startswith(f"al{run_id}")]
    out = subprocess.run(["pgrep", "-f", f"--events {gap_run.out_dir}"], capture_output=True, text=True,
                         check=False)
    assert out.stdout.strip() == ""  # no server left running


@pytest.mark.lab
def test_prestop_longer_than_delay_is_safe(safe_run: LabRun) -> None:
    client = safe_run.truth["client"]
    assert client["total"] > 2000
    assert client["error_total"] == 0 and client["ok"] == client["total"]
    for pod in safe_run.truth["old_pods"]:
        assert pod["rst_from_pod"] == 0, pod["name"]
        assert pod["syn_to_pod"] > 0  # it did serve before
        assert pod["t_sigterm"] - pod["t_delete"] >= 3_000_000_000
        assert pod["t_rule_removed_after"] < pod["t_listener_closed"]


@pytest.mark.lab
def test_keepalive_load_sees_resets_and_refusals(keepalive_run: LabRun) -> None:
    pods = keepalive_run.truth["old_pods"]
    for pod in pods:
        # every connection the server aborted at the drain timeout is one RST on the wire
        assert pod["server_aborted"] > 0
        assert pod["rst_established"] == pod["server_aborted"], pod["name"]
    # aborted clients reconnect inside the gap: some land on the old pod and are refused
    assert sum(pod["rst_refused"] for pod in pods) > 0
    assert sum(pod["rst_refused"] for pod in pods) >= keepalive_run.truth["client"]["refused"]
    assert keepalive_run.truth["config"]["keepalive"] is True
    # kept-alive connections mean far fewer SYNs than requests
    assert sum(pod["syn_to_pod"] for pod in pods) < keepalive_run.truth["client"]["total"] / 10


@pytest.mark.lab
def test_two_second_delay_widens_the_gap(gap2_run: LabRun, gap_run: LabRun) -> None:
    for pod in gap2_run.truth["old_pods"]:
        gap = (pod["t_rule_removed_after"] - pod["t_listener_closed"]) / 1e9
        assert 1.95 <= gap <= 2.15, (pod["name"], gap)
        assert pod["rst_refused"] > 0
    # twice the gap at the same rate: clearly more refusals than with 1 s
    assert gap2_run.truth["client"]["refused"] > 1.4 * gap_run.truth["client"]["refused"]


@pytest.mark.lab
def test_legacy_backend(tmp_path: Path) -> None:
    require_root()
    require_tool("hey", "tcpdump", "iptables-legacy-restore", "iptables-legacy-save", "ip")
    cfg = LabConfig(replicas=1, prestop=0, delay=0.5, backend="legacy", margin=0.5, settle=0.0)
    run = run_rollout(cfg, tmp_path / "legacy")
    rules = (tmp_path / "legacy" / "rules.log").read_text()
    assert "-m statistic --mode random" not in rules.split("# sync")[-1]  # one endpoint left: no split
    assert run.truth["client"]["refused"] == run.truth["old_pods"][0]["rst_refused"] > 0


@pytest.mark.lab
def test_cleanup_on_failure_and_stale_namespaces(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    require_root()
    require_tool("ip", "iptables-nft-restore")
    from tests.lab import netns, rollout

    def fail(self: object) -> None:
        raise RuntimeError("injected failure after the namespaces exist")

    before = set(list_namespaces())
    monkeypatch.setattr(rollout.Dataplane, "install", fail)
    with pytest.raises(RuntimeError, match="injected"):
        run_rollout(LabConfig(), tmp_path / "fail")
    assert set(list_namespaces()) <= before  # node and client namespaces removed in finally
    # a crashed run's namespace (owner gone) is stale; one of a live run is not
    dead, live = "fff0", "fff1"
    rollout.RUNS_DIR.mkdir(exist_ok=True)
    (rollout.RUNS_DIR / f"{dead}.pid").write_text("999999999")
    (rollout.RUNS_DIR / f"{live}.pid").write_text(str(os.getpid()))
    try:
        netns.add_namespace(f"al{dead}n")
        netns.add_namespace(f"al{live}n")
        removed = rollout.remove_stale_namespaces()
        assert f"al{dead}n" in removed and f"al{live}n" not in removed
        assert f"al{live}n" in list_namespaces()
    finally:
        netns.remove_namespaces([f"al{dead}n", f"al{live}n"])
        for run_id in (dead, live):
            (rollout.RUNS_DIR / f"{run_id}.pid").unlink(missing_ok=True)
