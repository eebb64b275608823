"""Endpoint consumers other than kube-proxy: an ingress pod that dials pod IPs has its own delay.

Built by construction: the old pod stops listening at its deletion (preStop 0). kube-proxy on node-a
routes service connections (seen before and after DNAT) to it for 0.5 s (a dataplane record says when
its rule went), an ingress pod dials the pod IP directly for 1.5 s. Every refusal is counted while it is
made, per consumer.
"""

from __future__ import annotations

import pandas as pd

from auditor.correlate.audit import audit
from auditor.model.packet import ACK, RST, SYN, PacketEvent, packet_frame
from tests.fakes import inputs, pod

NS = 1_000_000_000
T0 = 1_790_000_000 * NS
OLD, NEW, VIP = "10.244.0.5", "10.244.0.9", "10.96.0.10"
CLIENT, INGRESS = "10.1.0.2", "10.244.1.20"
PROXY_DELAY, INGRESS_DELAY = 0.5, 1.5


def _conn(events: list[PacketEvent], t: int, src: str, port: int, dst: str, seq: int, via_vip: bool) -> bool:
    """One connection attempt to ``dst``; refused when it reaches the old pod after T0."""
    if via_vip:
        events.append(PacketEvent(t, "tcp_syn", 4, src, port, VIP, 80, SYN, seq, 0, node="node-a"))
    events.append(PacketEvent(t + 1000, "tcp_syn", 4, src, port, dst, 8080, SYN, seq, 0, node="node-a"))
    refused = dst == OLD and t >= T0
    if refused:
        events.append(
            PacketEvent(t + 50_000, "tcp_rst", 4, dst, 8080, src, port, RST | ACK, 0, seq + 1, node="node-a")
        )
    else:
        events.append(
            PacketEvent(
                t + 30_000, "tcp_synack", 4, dst, 8080, src, port, SYN | ACK, 7, seq + 1, node="node-a"
            )
        )
    return refused


def scenario() -> tuple[list[PacketEvent], dict[str, int]]:
    events: list[PacketEvent] = []
    refused = {"kube-proxy": 0, "ingress": 0}
    step = 20_000_000
    for i in range(int(4 * NS / step)):
        t = T0 - NS + i * step
        old_for_proxy = t < T0 + int(PROXY_DELAY * NS) and i % 2 == 0
        old_for_ingress = t < T0 + int(INGRESS_DELAY * NS) and i % 2 == 1
        refused["kube-proxy"] += _conn(
            events, t, CLIENT, 30000 + i, OLD if old_for_proxy else NEW, 1000 + i, True
        )
        refused["ingress"] += _conn(events, t + 5_000_000, INGRESS, 40000 + i, OLD if old_for_ingress else NEW,
                                    500_000 + i, False)  # fmt: skip
    return events, refused


def _pods() -> list[object]:
    return [
        pod("u-old", "default", "web-6d5f-aaaaa", (OLD,), first_seen_ns=T0 - 60 * NS, deletion_observed_ns=T0,
            deleted_observed_ns=T0 + 4 * NS),
        pod("u-new", "default", "web-6d5f-bbbbb", (NEW,), first_seen_ns=T0 - 30 * NS),
        pod("u-ing", "ingress-nginx", "ingress-nginx-controller-7d9f", (INGRESS,), first_seen_ns=T0 - 90 * NS,
            replicaset="ingress-nginx-controller-7d9f", deployment="ingress-nginx-controller", node="node-b"),
    ]  # fmt: skip


def test_the_ingress_is_a_consumer_with_its_own_delay_and_its_refusals_are_its_gap() -> None:
    events, refused = scenario()
    assert refused["kube-proxy"] > 0 and refused["ingress"] > refused["kube-proxy"]
    removed = T0 + int(PROXY_DELAY * NS)
    dp = pd.DataFrame({"time": pd.to_datetime([removed], unit="ns", utc=True), "node": ["node-a"], "ip": [OLD],
                       "port": [8080], "op": ["removed"], "backend": ["iptables-nft"]})  # fmt: skip
    res = audit(inputs(packet_frame(events), _pods(), dataplane=dp))  # type: ignore[arg-type]
    c = res.consumers.set_index(["consumer_kind", "consumer"])
    ingress = c.loc[("pod", "ingress-nginx/ingress-nginx-controller-7d9f")]
    proxy = c.loc[("kube-proxy", "node-a")]
    assert int(ingress["refused"]) == refused["ingress"] and int(proxy["refused"]) == refused["kube-proxy"]
    assert abs(float(proxy["propagation_delay_s"]) - PROXY_DELAY) < 0.001  # the dataplane record
    last_ingress_syn = max(
        e.time_ns for e in events if e.kind == "tcp_syn" and e.src == INGRESS and e.dst == OLD
    )
    assert int(ingress["last_new_ns"]) == last_ingress_syn  # its last new connection to the old pod
    assert abs(float(ingress["propagation_delay_s"]) - (last_ingress_syn - T0) / 1e9) < 1e-9
    # the ingress's refusals after kube-proxy's rule went are its own propagation gap, not after_removal
    fl = res.failures
    mine = fl.loc[fl["consumer"] == "ingress-nginx/ingress-nginx-controller-7d9f"]
    assert (mine["cause"] == "propagation_gap").sum() == refused["ingress"]
    assert res.causes["after_removal"] == 0
    assert res.causes["propagation_gap"] == refused["ingress"] + refused["kube-proxy"]
    rec = res.recommendation
    assert rec is not None and rec.prestop_seconds == 2
    assert rec.slowest_consumer == "pod ingress-nginx/ingress-nginx-controller-7d9f"
    assert (
        f"slowest consumer ingress-nginx/ingress-nginx-controller-7d9f, {(last_ingress_syn - T0) / 1e9:.3f} s"
        in rec.basis
    )
    assert "slowest consumer ingress-nginx/ingress-nginx-controller-7d9f" in res.verdict_line
    (roll,) = res.rollouts
    assert set(roll.consumers) == {"kube-proxy node-a", "pod ingress-nginx/ingress-nginx-controller-7d9f"}


def test_service_traffic_alone_keeps_kube_proxy_as_the_only_consumer() -> None:
    events, refused = scenario()
    only_proxy = [e for e in events if e.src != INGRESS and e.dst != INGRESS]
    res = audit(inputs(packet_frame(only_proxy), _pods()))  # type: ignore[arg-type]
    assert list(res.consumers["consumer_kind"].unique()) == ["kube-proxy"]
    assert res.causes["propagation_gap"] == refused["kube-proxy"]
    rec = res.recommendation
    assert rec is not None and rec.slowest_consumer == "kube-proxy node-a" and "slowest" not in rec.basis
