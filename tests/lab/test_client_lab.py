"""Issue 10: the real hey's failures on the timeline, each on the right episode (one lab rollout).

hey's text report has no per-request times and ``hey -o csv`` leaves out the requests that got no response
(refused, reset, timeout: checked in tests/unit/test_client_formats.py), so a plain ClusterIP run's
refusals can only be counted, not placed. Through an ingress they become responses: the lab's nginx
(``proxy_next_upstream off``) answers 502 to every upstream connection the old pod refused or reset, and
hey's csv keeps each 502 with its offset from hey's start. The lab records the wall clock just before it
launches hey (``t_hey_launch``), as a user would (``date +%s.%N; hey -o csv ...``), and auditor is given it
with ``--client-start``.

Asserted per episode: the 502s placed on it (matched to a node failure, one to one, within 200 ms) = the
refused and reset upstream connections of the ingress that the node attributes to that episode = the
RSTs the old pod sent to the ingress (tcpdump -r); every other 502 of the csv is counted as unexplained
(inside an episode's window, no node failure for it) or outside every termination.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import REPO, require_root, require_tool
from tests.lab import LabConfig, LabRun, run_rollout

pytestmark = [pytest.mark.lab, pytest.mark.privileged, pytest.mark.slow]

MS = 1_000_000


@pytest.fixture(scope="module")
def hey_csv_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LabRun, dict[str, Any]]]:
    require_root()
    require_tool("hey", "tcpdump", "iptables-nft-restore", "ip", "nginx")
    cfg = LabConfig(ingress="nginx", ingress_delay=1.5, delay=0.5, prestop=0, hey_csv=True)
    run = run_rollout(cfg, tmp_path_factory.mktemp("hey-csv"))
    launched = run.truth["t_hey_launch"]
    cmd = [
        sys.executable, "-m", "auditor", "analyze", "--pcap", str(run.pcap), "--kube", str(run.kube),
        "--client", str(run.client_output), "--client-start", f"{launched // 10**9}.{launched % 10**9:09d}",
        "--node", run.truth["node"], "--json",
    ]  # fmt: skip
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    (run.out_dir / "analysis.json").write_text(proc.stdout)
    yield run, json.loads(proc.stdout)


def test_each_502_of_the_real_hey_is_placed_on_its_episode(
    hey_csv_run: tuple[LabRun, dict[str, Any]],
) -> None:
    run, doc = hey_csv_run
    truth, recon = run.truth, doc["reconciliation"]
    ingress = truth["ingress"]["consumer"]
    assert run.client_output.name == "hey.csv" and recon["client_format"] == "hey-csv"
    assert recon["reconciled"] is True and recon["client_window"] is not None
    # the client's side, read from hey's csv by the lab (not by auditor): every 502 is a row with an offset
    client_502 = truth["client"]["status"].get("502", 0)
    assert client_502 == len(truth["client"]["failed_offsets"]["502"]) == recon["client_by_class"]["http_502"]
    assert set(truth["client"]["status"]) <= {"200", "502"}, truth["client"]["status"]
    assert client_502 > 0, "preStop 0 behind a 1.5 s ingress delay must give 502s"

    placed = recon["placed"]
    episodes = {e["pod"]: e for e in doc["episodes"]}
    assert len(truth["old_pods"]) == 3
    for pod in truth["old_pods"]:
        ep = episodes[pod["name"]]
        (consumer,) = [c for c in ep["consumers"] if c["consumer"] == ingress]
        node_side = consumer["refused"] + consumer["resets"]  # what the node attributes to this episode
        # (auditor's node side is the capture's truth: RSTs the old pod sent the ingress, refused or established)
        assert consumer["refused"] == pod["rst_refused_to_ingress"] > 0, (pod["name"], consumer)
        assert node_side == pod["rst_refused_to_ingress"] + pod["rst_established_to_ingress"]
        mine = placed["episodes"].get(str(ep["episode"]), {})
        print(f"{pod['name']}: client 502s placed {mine}, ingress refused {consumer['refused']} reset "
              f"{consumer['resets']}")  # fmt: skip
        assert mine["pod"] == pod["name"]
        assert mine["matched"] == node_side, (pod["name"], mine, consumer)
        assert mine["by_consumer"] == {ingress: node_side}
        assert set(mine["by_class"]) == {"http_502"}
        assert mine["by_class"]["http_502"] == node_side + mine["unexplained"]
    # every 502 of the csv is somewhere: matched to its episode, unexplained inside one, or outside them all
    matched = sum(e["matched"] for e in placed["episodes"].values())
    assert placed["requests_failed"] == client_502
    assert matched + placed["unexplained"] + placed["outside_terminations"] == client_502
    print(f"502s: {client_502} = {matched} matched + {placed['unexplained']} unexplained + "
          f"{placed['outside_terminations']} outside any termination")  # fmt: skip
    # hey talked to the ingress only: it met no refusal itself, and kube-proxy refused nobody
    assert recon["client_refused"] == 0 and all(p["rst_refused_to_client"] == 0 for p in truth["old_pods"])


def test_the_launch_time_places_requests_just_before_the_node_saw_them(
    hey_csv_run: tuple[LabRun, dict[str, Any]],
) -> None:
    """hey's offsets count from its own start, a few ms after the lab launched it: a request placed from
    the launch time is early by that much, never late; its node failure follows within the match
    tolerance (the same clock: one host)."""
    import auditor
    from auditor.correlate.client import MATCH_TOLERANCE_NS

    run, _ = hey_csv_run
    a = auditor.analyze(
        pcaps=str(run.pcap), kube=str(run.kube), client=str(run.client_output), node=run.truth["node"],
        client_start=f"{run.truth['t_hey_launch'] / 1e9:.6f}",
    )  # fmt: skip
    placed = a.result.client_failures
    hit = placed.loc[placed["placement"] == "matched"]
    assert len(hit) > 0
    node_t = a.result.failures["time"].to_numpy(dtype="datetime64[ns]").astype("int64")[hit["node_failure"]]
    lead = node_t - hit["time"].to_numpy(dtype="datetime64[ns]").astype("int64")
    lead.sort()
    print(f"node failure - placed 502: min {lead[0] / MS:.1f} ms, median {lead[len(lead) // 2] / MS:.1f} ms, "
          f"max {lead[-1] / MS:.1f} ms over {len(lead)}")  # fmt: skip
    assert lead[0] >= 0 and lead[-1] <= MATCH_TOLERANCE_NS
