"""Correlation on synthetic packet tables whose causes are known by construction."""

from __future__ import annotations

import pandas as pd
import pytest

from auditor.correlate.audit import audit
from auditor.model.kube import PodInfo
from auditor.model.packet import ACK, RST, SYN, PacketEvent, packet_frame
from tests.fakes import inputs, pod

NS = 1_000_000_000
T0 = 1_790_000_000 * NS  # deletion time of the old pod
POD_IP, NEW_IP, VIP, CLIENT = "10.244.0.5", "10.244.0.9", "10.96.0.10", "10.1.0.2"


def scenario(
    delay_s: float, prestop_s: float, keepalive_resets: int = 1, synacks: bool = False
) -> tuple[list[PacketEvent], list[PodInfo], int]:
    """Old pod deleted at T0; listener closes at T0+prestop; this node routes to it until T0+delay."""
    events: list[PacketEvent] = []
    refused = 0
    port = 40000
    step = 10_000_000  # one new connection every 10 ms
    for i in range(int(5 * NS / step)):
        t = T0 - NS + i * step
        port += 1
        to_old = t < T0 + int(delay_s * NS) and i % 2 == 0
        dst = POD_IP if to_old else NEW_IP
        seq = 1000 + i
        # the node sees the SYN before (to the ClusterIP) and after DNAT (to the pod)
        events.append(PacketEvent(t, "tcp_syn", 4, CLIENT, port, VIP, 80, SYN, seq, 0, node="node-a"))
        events.append(
            PacketEvent(t + 1000, "tcp_syn", 4, CLIENT, port, dst, 8080, SYN, seq, 0, node="node-a")
        )
        if synacks and to_old and t < T0 + int(prestop_s * NS) + 2_000_000:  # accepted while listening
            events.append(
                PacketEvent(
                    t + 30_000, "tcp_synack", 4, dst, 8080, CLIENT, port, SYN | ACK, 5, seq + 1, node="node-a"
                )
            )
        if to_old and t >= T0 + int(prestop_s * NS) + 2_000_000:
            refused += 1
            ra = RST | ACK
            events.append(
                PacketEvent(t + 50_000, "tcp_rst", 4, dst, 8080, CLIENT, port, ra, 0, seq + 1, node="node-a")
            )
            events.append(
                PacketEvent(t + 60_000, "tcp_rst", 4, VIP, 80, CLIENT, port, ra, 0, seq + 1, node="node-a")
            )
    for k in range(keepalive_resets):  # established keep-alive connections reset by the old pod
        t = T0 + int((prestop_s + 0.5) * NS) + k * 1000
        events.append(
            PacketEvent(t, "tcp_rst", 4, POD_IP, 8080, CLIENT, 30000 + k, RST, 777 + k, 0, node="node-a")
        )
    # a Service without endpoints: kube-proxy rejects with ICMP port unreachable
    events.append(
        PacketEvent(
            T0 + 2 * NS,
            "icmp_unreachable",
            4,
            CLIENT,
            50000,
            "10.96.0.99",
            80,
            0,
            0,
            0,
            icmp_type=3,
            icmp_code=3,
            reporter="10.1.0.1",
            node="node-a",
        )
    )
    pods = [
        pod(
            "u-old",
            "default",
            "web-6d5f-aaaaa",
            (POD_IP,),
            first_seen_ns=T0 - 60 * NS,
            deletion_ns=T0 // NS * NS + 30 * NS,  # the API server: request time + grace
            deletion_observed_ns=T0,
            deleted_observed_ns=T0 + 4 * NS,
            prestop_sleep_s=prestop_s or None,
            prestop_kind="sleep" if prestop_s else "none",
        ),
        pod("u-new", "default", "web-6d5f-bbbbb", (NEW_IP,), first_seen_ns=T0 - 5 * NS),
    ]
    return events, pods, refused


def test_propagation_gap_is_measured_and_attributed() -> None:
    events, pods, refused = scenario(delay_s=1.0, prestop_s=0.0)
    res = audit(inputs(packet_frame(events), pods))
    assert refused > 0
    assert res.causes["propagation_gap"] == refused  # the ClusterIP copies are not counted twice
    assert res.causes["inflight_reset"] == 1
    assert res.causes["no_endpoints"] == 1
    assert res.causes["after_removal"] == 0
    gap = res.failures.loc[res.failures["cause"] == "propagation_gap"]
    assert set(gap["pod"]) == {"web-6d5f-aaaaa"}
    tl = res.timelines.merge(res.episodes[["episode", "pod"]], on="episode")
    old = tl.loc[tl["pod"] == "web-6d5f-aaaaa"].iloc[0]
    assert old["rule_removed_source"] == "inferred:last_syn"
    # no SYN-ACK in this table: the first refusal itself
    assert old["listener_closed_source"] == "inferred:first_refused"
    assert abs(old["gap_s"] - 1.0) < 0.05
    assert abs(old["propagation_delay_s"] - 1.0) < 0.05
    assert res.verdict == "GAP"
    assert res.recommendation is not None and res.recommendation.prestop_seconds == 2
    assert "GAP default/web" in res.verdict_line


@pytest.mark.parametrize(("delay", "expected"), [(1.0, 2), (2.0, 3), (2.7, 4)])
def test_recommendation_grows_with_delay(delay: float, expected: int) -> None:
    events, pods, _ = scenario(delay_s=delay, prestop_s=0.0, keepalive_resets=0)
    res = audit(inputs(packet_frame(events), pods))
    assert res.recommendation is not None
    assert res.recommendation.prestop_seconds == expected
    assert res.recommendation.termination_grace_period_seconds is not None
    assert res.recommendation.termination_grace_period_seconds >= expected


def test_prestop_longer_than_delay_is_safe() -> None:
    events, pods, refused = scenario(delay_s=1.0, prestop_s=3.0, keepalive_resets=0)
    assert refused == 0
    res = audit(inputs(packet_frame(events), pods))
    assert res.causes["propagation_gap"] == 0
    assert res.verdict == "SAFE", res.verdict_line
    assert res.verdict_line.startswith("SAFE default/web")


def test_dataplane_record_beats_inference_and_marks_after_removal() -> None:
    events, pods, refused = scenario(delay_s=1.0, prestop_s=0.0, keepalive_resets=0)
    removed = T0 + int(0.5 * NS)  # the rule really went away earlier than the last SYN
    dp = pd.DataFrame(
        {
            "time": pd.to_datetime([removed], unit="ns", utc=True),
            "node": ["node-a"],
            "ip": [POD_IP],
            "port": [8080],
            "op": ["removed"],
            "backend": ["iptables-nft"],
        }
    )
    res = audit(inputs(packet_frame(events), pods, dataplane=dp))
    tl = res.timelines.merge(res.episodes[["episode", "pod"]], on="episode")
    old = tl.loc[tl["pod"] == "web-6d5f-aaaaa"].iloc[0]
    assert old["rule_removed_source"] == "dataplane:iptables-nft"
    assert int(old["rule_removed_ns"]) == removed
    assert res.causes["after_removal"] > 0
    assert res.causes["propagation_gap"] + res.causes["after_removal"] == refused


def test_ip_reuse_attributes_to_the_pod_that_owned_the_ip() -> None:
    events, pods, refused = scenario(delay_s=1.0, prestop_s=0.0, keepalive_resets=0)
    # a later pod gets the old pod's IP after it is gone, and resets a connection then
    later = T0 + 120 * NS
    pods.append(pod("u-later", "other", "db-0", (POD_IP,), first_seen_ns=later, replicaset="", deployment=""))
    events.append(
        PacketEvent(later + NS, "tcp_rst", 4, POD_IP, 5432, CLIENT, 31000, RST, 5, 0, node="node-a")
    )
    res = audit(inputs(packet_frame(events), pods))
    assert res.causes["propagation_gap"] == refused
    late = res.failures.loc[res.failures["time"] == pd.Timestamp(later + NS, unit="ns", tz="UTC")]
    assert list(late["cause"]) == ["unrelated"]


def test_no_termination_is_inconclusive() -> None:
    res = audit(inputs(packet_frame([]), []))
    assert res.verdict == "INCONCLUSIVE"
    assert "no pod termination" in res.verdict_line
    assert res.inputs["packet_events"] == 0


def test_without_watch_receipt_times_the_deletion_is_the_coarse_request_time() -> None:
    """A plain ``kubectl --watch`` has no observedAt: deletionTimestamp minus the grace period."""
    import dataclasses

    events, pods, refused = scenario(delay_s=1.0, prestop_s=0.0, keepalive_resets=0)
    pods[0] = dataclasses.replace(pods[0], deletion_observed_ns=None, deleted_observed_ns=None)
    res = audit(inputs(packet_frame(events), pods))
    ep = res.episodes.set_index("pod").loc["web-6d5f-aaaaa"]
    assert not ep["deleted_precise"]
    assert ep["deleted_ns"] == T0 // NS * NS  # deletionTimestamp - 30 s, truncated to the second
    assert res.causes["propagation_gap"] == refused
    assert res.recommendation is not None and res.recommendation.prestop_seconds == 2


def test_listener_close_is_bracketed_by_the_last_synack_and_the_first_refusal() -> None:
    events, pods, refused = scenario(delay_s=1.0, prestop_s=0.0, keepalive_resets=0, synacks=True)
    res = audit(inputs(packet_frame(events), pods))
    tl = res.timelines.merge(res.episodes[["episode", "pod"]], on="episode")
    old = tl.loc[tl["pod"] == "web-6d5f-aaaaa"].iloc[0]
    assert old["listener_closed_source"] == "inferred:synack_refusal_midpoint"
    closed = T0 + 2_000_000  # the scenario's listener closes 2 ms after the deletion
    pm = old["listener_closed_pm_s"]
    assert 0 < pm <= 0.011  # SYNs reach the old pod every 20 ms (+ the SYN-ACK and RST turnarounds)
    assert abs(int(old["listener_closed_ns"]) - closed) <= pm * 1e9
    assert res.causes["propagation_gap"] == refused


def test_dual_stack_pod_has_one_episode_per_ip_and_each_keeps_its_refusals() -> None:
    """A pod with an IPv4 and an IPv6 address: two episodes; a refusal is attached to the episode of the
    address that refused it (the (pod, IP) key path of attach_episodes)."""
    v6, v6_client = "fd00:10:244::5", "fd00:10:1::2"
    events, pods, refused = scenario(delay_s=1.0, prestop_s=0.0, keepalive_resets=0)
    old = pods[0]
    dual = pod(
        old.uid, old.namespace, old.name, (POD_IP, v6), first_seen_ns=old.first_seen_ns,
        deletion_observed_ns=old.deletion_observed_ns, deleted_observed_ns=old.deleted_observed_ns,
    )  # fmt: skip
    v6_refused = 0
    for k in range(7):  # SYNs to the v6 address refused after the deletion, each answered by RST/ACK
        t = T0 + NS // 10 + k * 50_000_000
        events.append(
            PacketEvent(t, "tcp_syn", 6, v6_client, 50000 + k, v6, 8080, SYN, 7000 + k, 0, node="node-a")
        )
        events.append(
            PacketEvent(
                t + 1000, "tcp_rst", 6, v6, 8080, v6_client, 50000 + k, RST | ACK, 0, 7001 + k, node="node-a"
            )
        )
        v6_refused += 1
    res = audit(inputs(packet_frame(events), [dual, pods[1]]))
    ep = res.episodes.set_index("ip")
    assert set(ep.index) == {POD_IP, v6} and ep.loc[POD_IP, "pod_uid"] == ep.loc[v6, "pod_uid"]
    fl = res.failures.loc[res.failures["cause"] == "propagation_gap"]
    per_episode = fl.groupby("episode").size()
    assert int(per_episode[int(ep.loc[v6, "episode"])]) == v6_refused
    assert int(per_episode[int(ep.loc[POD_IP, "episode"])]) == refused


def test_an_unreachable_quoting_a_closing_segment_is_no_failed_connection() -> None:
    """A kept-alive client closing (FIN|ACK) or aborting (RST) after the pod's sandbox is gone gets an
    ICMP unreachable: no connection failed. A quoted SYN, or a quote too short for the flags, counts."""
    from auditor.correlate.failures import find_failures
    from auditor.model.counts import CountRecord, failure_of
    from auditor.model.packet import ACK, FIN, RST, SYN, PacketEvent, packet_frame

    t0 = 1_790_000_000 * 1_000_000_000
    flags = {"fin": FIN | ACK, "rst": RST, "syn": SYN, "unquoted": 0}
    events = [
        PacketEvent(
            t0 + i,
            "icmp_unreachable",
            4,
            "10.244.1.7",
            40000 + i,
            "10.244.2.5",
            8080,
            tcp_flags=f,
            icmp_type=3,
            icmp_code=1,
            source="pcap",
            node="n1",
        )
        for i, f in enumerate(flags.values())
    ]
    failures = find_failures(packet_frame(events))
    assert sorted(failures["client_port"].tolist()) == [40002, 40003]  # the SYN and the unquoted one

    def rec(f: int) -> CountRecord:
        return CountRecord(time_ns=t0, bucket_ns=100_000_000, kind="icmp_unreachable", family=4, addr="10.244.2.5",
                           port=8080, side="dst", reason_raw=0, state_raw=0, flags_raw=f, ip_proto=6, events=1,
                           detail_lost=0)  # fmt: skip

    assert [failure_of(rec(f)) for f in flags.values()] == [None, None, "unreachable", "unreachable"]
