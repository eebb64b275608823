"""The notebook API: loaders, the Audit tables, what-if and plots, on synthetic data whose answers are
known by construction, and on the shipped example rollout checked against its independent truth."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

import auditor
from auditor.errors import AuditorError, InputError
from auditor.model.kube import KubeInput, endpoint_frame, event_frame
from auditor.model.packet import ACK, RST, SYN, PacketEvent, packet_frame
from tests.conftest import REPO
from tests.fakes import pod

NS = 1_000_000_000
T0 = 1_790_000_000 * NS  # deletion of the old pod
OLD_IP, NEW_IP, VIP, CLIENT = "10.244.0.5", "10.244.0.9", "10.96.0.10", "10.1.0.2"
DELAYS = {"node-a": 1.0, "node-b": 2.0}  # when each node stopped routing to the old pod
EXAMPLE = REPO / "examples" / "rollout"


def node_traffic(node: str, delay_s: float, port0: int) -> tuple[list[PacketEvent], int]:
    """New connections every 20 ms; half go to the old pod until ``delay_s`` after the deletion, and
    those after the deletion are refused (the pod closed its listener at once: preStop 0)."""
    events: list[PacketEvent] = []
    refused = 0
    for i in range(200):  # 4 s
        t = T0 - NS + i * 20_000_000
        port, seq = port0 + i, 5000 + i
        to_old = t < T0 + int(delay_s * NS) and i % 2 == 0
        dst = OLD_IP if to_old else NEW_IP
        events.append(PacketEvent(t, "tcp_syn", 4, CLIENT, port, dst, 8080, SYN, seq, 0, node=node))
        if to_old and t > T0:
            refused += 1
            events.append(
                PacketEvent(
                    t + 40_000, "tcp_rst", 4, dst, 8080, CLIENT, port, RST | ACK, 0, seq + 1, node=node
                )
            )
    return events, refused


def synthetic(inflight_reset: bool = True) -> tuple[pd.DataFrame, KubeInput, dict[str, int]]:
    events: list[PacketEvent] = []
    refused: dict[str, int] = {}
    for k, (node, delay) in enumerate(DELAYS.items()):
        ev, n = node_traffic(node, delay, 20000 + 1000 * k)
        events += ev
        refused[node] = n
    if inflight_reset:  # a keep-alive connection reset by the old pod on node-a
        events.append(
            PacketEvent(T0 + NS // 2, "tcp_rst", 4, OLD_IP, 8080, CLIENT, 31000, RST, 99, 0, node="node-a")
        )
    old = pod(
        "u-old",
        "default",
        "web-6d5f-aaaaa",
        (OLD_IP,),
        first_seen_ns=T0 - 60 * NS,
        deletion_ns=T0 // NS * NS + 30 * NS,
        deletion_observed_ns=T0,
        deleted_observed_ns=T0 + 3 * NS,
    )
    new = pod("u-new", "default", "web-6d5f-bbbbb", (NEW_IP,), first_seen_ns=T0 - 5 * NS)
    kube = KubeInput(
        pods={"u-old": old, "u-new": new},
        endpoints=endpoint_frame([]),
        events=event_frame([]),
    )
    return packet_frame(events), kube, refused


def test_import_is_lazy_and_exposes_the_api() -> None:
    code = "import sys, auditor; print('pandas' in sys.modules, auditor.__version__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.split() == ["False", auditor.__version__]
    from auditor import api

    assert auditor.analyze is api.analyze
    assert auditor.what_if is api.what_if
    assert {"load_events", "load_kube", "plot_rollout_timeline"} <= set(dir(auditor))
    with pytest.raises(AttributeError):
        _ = auditor.no_such_thing  # type: ignore[attr-defined]


def test_audit_tables_are_human_friendly() -> None:
    packets, kube, refused = synthetic()
    a = auditor.analyze(events=packets, kube=kube)
    assert a.verdict == "GAP"
    causes = a.causes["count"]
    assert causes["propagation_gap"] == sum(refused.values())
    assert causes["inflight_reset"] == 1
    assert list(a.causes.index) == [
        "propagation_gap",
        "inflight_reset",
        "after_removal",
        "no_endpoints",
        "unrelated",
    ]

    ep = a.episodes
    assert list(ep["pod"]) == ["web-6d5f-aaaaa"]
    assert isinstance(ep["deleted"].dtype, pd.DatetimeTZDtype)
    assert ep["deleted"].iloc[0] == pd.Timestamp(T0, unit="ns", tz="UTC")  # exact to the ns
    assert ep["exited"].iloc[0] == pd.Timestamp(T0 + 3 * NS, unit="ns", tz="UTC")
    assert pd.isna(ep["endpoint_removed"].iloc[0])  # no EndpointSlice in the input: NaT, not a sentinel
    assert int(ep["propagation_gap"].iloc[0]) == sum(refused.values())

    gaps = a.gaps.set_index("node")
    assert set(gaps.index) == set(DELAYS)
    for node, delay in DELAYS.items():
        row = gaps.loc[node]
        assert row["pod"] == "web-6d5f-aaaaa"
        assert row["refused_in_gap"] == refused[node]
        # the last SYN routed to the old pod is within one 40 ms step of the configured delay
        assert delay - 0.05 <= row["propagation_delay_s"] <= delay
        assert row["rule_removed"] - row["deleted"] == pd.Timedelta(seconds=row["propagation_delay_s"])
        assert row["listener_closed"] > row["deleted"]

    fl = a.failures
    assert list(fl.columns[:6]) == ["time", "node", "rollout", "pod", "cause", "failure"]
    assert (fl.loc[fl["cause"] == "propagation_gap", "rollout"] == "default/web").all()

    r = a.rollouts.set_index("rollout").loc["default/web"]
    assert r["verdict"] == "GAP"
    assert r["failed"] == sum(refused.values()) + 1
    assert r["recommended_prestop_s"] == 3  # ceil(max delay ~2 s + 0.5 margin)
    assert a.recommendation is not None and a.recommendation.prestop_seconds == 3
    doc = a.document()
    assert doc["verdict"] == "GAP" and doc["causes"]["propagation_gap"] == sum(refused.values())
    assert "GAP" in repr(a)


def test_what_if_counts_avoided_refusals_per_node() -> None:
    packets, kube, refused = synthetic()
    a = auditor.analyze(events=packets, kube=kube)
    t = auditor.what_if(a, [0, 1.5, 2.5]).set_index("prestop_s")
    total = sum(refused.values())
    assert list(t["failed_observed"]) == [total + 1] * 3
    # 1.5 s covers node-a (delay ~1 s) but not node-b (~2 s)
    assert list(t["avoided"]) == [0, refused["node-a"], total]
    assert list(t["remaining_propagation_gap"]) == [total, refused["node-b"], 0]
    # the in-flight reset is not avoided by preStop alone: still a GAP
    assert list(t["inflight_reset"]) == [1, 1, 1]
    assert list(t["remaining"]) == [total + 1, refused["node-b"] + 1, 1]
    assert list(t["verdict"]) == ["GAP", "GAP", "GAP"]
    # a single value works too, and without the reset a long enough preStop is SAFE
    packets, kube, _ = synthetic(inflight_reset=False)
    b = auditor.analyze(events=packets, kube=kube)
    one = auditor.what_if(b, 2.5)
    assert len(one) == 1 and one["verdict"].iloc[0] == "SAFE" and one["remaining"].iloc[0] == 0
    assert auditor.what_if(b.result, 1.5)["verdict"].iloc[0] == "GAP"  # exposed on node-b


@pytest.mark.parametrize("bad", [-1, float("nan"), "x", []])
def test_what_if_rejects_bad_values(bad: object) -> None:
    packets, kube, _ = synthetic()
    a = auditor.analyze(events=packets, kube=kube)
    with pytest.raises(AuditorError) as err:
        auditor.what_if(a, bad)  # type: ignore[arg-type]
    assert "\n" not in str(err.value)


def test_bad_inputs_are_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file"):
        auditor.load_events(tmp_path / "missing.pcap")
    with pytest.raises(AuditorError):
        auditor.load_events()
    with pytest.raises(AuditorError, match="nothing to analyze"):
        auditor.analyze(kube=tmp_path / "k.json")
    packets, _, _ = synthetic()
    with pytest.raises(AuditorError, match="no Kubernetes input"):
        auditor.analyze(events=packets)
    with pytest.raises(AuditorError, match="cannot read"):
        auditor.load_kube(tmp_path / "missing.json")
    notpcap = tmp_path / "x.pcap"
    notpcap.write_text("hello\n")
    with pytest.raises(InputError, match="not a pcap"):
        auditor.load_events(notpcap)


def test_load_events_reads_event_files_and_names_nodes(tmp_path: Path) -> None:
    packets, kube, refused = synthetic()
    path = tmp_path / "events.parquet"
    unnamed = packets.assign(node="")
    unnamed.to_parquet(path)
    ev = auditor.load_events(f"worker-1={path}")
    assert len(ev) == len(packets)
    assert set(ev["node"].astype(str)) == {"worker-1"}
    assert set(auditor.load_events(path, node="w2")["node"].astype(str)) == {"w2"}
    # the same table through a file gives the same audit as the DataFrame
    packets.to_parquet(tmp_path / "named.parquet")
    a = auditor.analyze(events=tmp_path / "named.parquet", kube=kube)
    assert int(a.causes.loc["propagation_gap", "count"]) == sum(refused.values())


def test_plots_return_figures() -> None:
    packets, kube, _ = synthetic()
    a = auditor.analyze(events=packets, kube=kube)
    figs = [
        auditor.plot_rollout_timeline(a),
        auditor.plot_rollout_timeline(a.result, "default/web"),
        auditor.plot_delay_distribution(a),
        auditor.plot_causes(a),
        auditor.plot_what_if(auditor.what_if(a, [0, 1, 2, 3])),
    ]
    for fig in figs:
        assert fig.axes
        fig.canvas.draw()  # renders without error on the Agg canvas
    bars = figs[3].axes[0].patches
    assert [int(b.get_width()) for b in bars][:2] == [int(a.causes.loc["propagation_gap", "count"]), 1]


def test_shipped_example_matches_its_truth() -> None:
    if not (EXAMPLE / "node.pcap").exists():
        pytest.skip("examples/rollout is not in this checkout")
    truth = json.loads((EXAMPLE / "truth.json").read_text())
    a = auditor.analyze(
        pcaps=EXAMPLE / "node.pcap", kube=EXAMPLE / "kube.json", client=str(EXAMPLE / "hey.txt")
    )
    assert a.verdict == "GAP"
    refused = {p["name"]: p["rst_refused"] for p in truth["old_pods"]}
    ep = a.episodes.set_index("pod")
    for name, n in refused.items():
        assert ep.loc[name, "propagation_gap"] == n
    assert a.reconciliation is not None and a.reconciliation["client_refused"] == truth["client"]["refused"]
    gaps = a.gaps.set_index("pod")
    for p in truth["old_pods"]:
        measured = gaps.loc[p["name"], "propagation_delay_s"]
        # the rule was rewritten between t_rule_removed_before and _after; the last SYN routed is earlier
        assert (p["t_rule_removed_before"] - p["t_delete"]) / NS - 0.1 <= measured
        assert measured <= (p["t_rule_removed_after"] - p["t_delete"]) / NS
    # what-if against the truth: a preStop covers a pod once it outlasts the rule rewrite
    values = [0.0, 0.5, 1.5, 2.0, 5.0]
    t = auditor.what_if(a, values).set_index("prestop_s")
    for v in values:
        expected = sum(
            p["rst_refused"]
            for p in truth["old_pods"]
            if (p["t_rule_removed_after"] - p["t_delete"]) / NS <= v
        )
        assert t.loc[v, "avoided"] == expected
    assert t.loc[2.0, "verdict"] == "SAFE" and t.loc[0.5, "verdict"] == "GAP"


def test_api_and_cli_agree_on_the_example() -> None:
    if not (EXAMPLE / "node.pcap").exists():
        pytest.skip("examples/rollout is not in this checkout")
    argv = [
        sys.executable,
        "-m",
        "auditor",
        "analyze",
        "--json",
        "--pcap",
        f"lab-node={EXAMPLE / 'node.pcap'}",
    ]
    argv += ["--kube", str(EXAMPLE / "kube.json"), "--client", str(EXAMPLE / "hey.txt")]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    cli = json.loads(proc.stdout)
    doc = auditor.analyze(
        pcaps=f"lab-node={EXAMPLE / 'node.pcap'}", kube=EXAMPLE / "kube.json", client=EXAMPLE / "hey.txt"
    ).document()
    for key in ("verdict", "verdict_line", "recommendation", "causes", "nodes", "rollouts", "episodes"):
        assert doc[key] == cli[key], key
