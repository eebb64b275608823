"""The kubelet may act on a deletion before our watch receives it (``deletion_observed_ns`` is the
receipt time): the listener closing and the refusals that follow within that latency belong to the
episode, while a refusal long before the deletion does not."""

from __future__ import annotations

from auditor.correlate.audit import audit
from auditor.model.packet import ACK, RST, SYN, PacketEvent, packet_frame
from tests.fakes import inputs, pod

NS = 1_000_000_000
MS = 1_000_000
T_DELETE = 1_790_000_000 * NS  # the API server's deletion (also SIGTERM: preStop 0)
WATCH_LATENCY = 5 * MS  # our watch receives it this much later
POD_IP, NEW_IP, CLIENT = "10.244.0.5", "10.244.0.9", "10.1.0.2"


def _refusal(t: int, port: int, seq: int) -> list[PacketEvent]:
    """A SYN to the pod answered by RST/ACK (the node's capture), 50 us later."""
    return [
        PacketEvent(t, "tcp_syn", 4, CLIENT, port, POD_IP, 8080, SYN, seq, 0, node="node-a"),
        PacketEvent(
            t + 50_000, "tcp_rst", 4, POD_IP, 8080, CLIENT, port, RST | ACK, 0, seq + 1, node="node-a"
        ),
    ]


def test_listener_closed_and_refusals_before_the_watch_receipt_belong_to_the_episode() -> None:
    listen_close = T_DELETE + 200_000
    events = [
        PacketEvent(listen_close, "listen_close", 4, POD_IP, 8080, "0.0.0.0", 0, source="ebpf", node="node-a")
    ]
    # refusals from the listener's close on, every 1 ms through a 1 s propagation delay
    times = [listen_close + 100_000 + k * MS for k in range(1000)]
    for k, t in enumerate(times):
        events += _refusal(t, 40000 + k, 1000 * k)
    # a refusal 3 s before the deletion (the pod restarting its server, say) is no part of it
    events += _refusal(T_DELETE - 3 * NS, 39000, 7)
    pods = [
        pod("u-old", "default", "web-6d5f-aaaaa", (POD_IP,), first_seen_ns=T_DELETE - 60 * NS,
            deletion_ns=T_DELETE // NS * NS, deletion_observed_ns=T_DELETE + WATCH_LATENCY,
            deleted_observed_ns=T_DELETE + 2 * NS),
        pod("u-new", "default", "web-6d5f-bbbbb", (NEW_IP,), first_seen_ns=T_DELETE - 5 * NS),
    ]  # fmt: skip
    res = audit(inputs(packet_frame(events), pods))
    early = sum(t < T_DELETE + WATCH_LATENCY for t in times)
    assert early > 0  # the case under test: refusals before the watch receipt
    assert res.causes["propagation_gap"] == len(times), res.causes
    assert res.causes["unrelated"] == 1, res.causes
    tl = res.timelines.merge(res.episodes[["episode", "pod"]], on="episode")
    old = tl.loc[tl["pod"] == "web-6d5f-aaaaa"].iloc[0]
    assert old["listener_closed_source"] == "ebpf:listen_close"
    assert int(old["listener_closed_ns"]) == listen_close
    # the inferred rule removal (last SYN to the pod) still follows the deletion
    assert int(old["last_syn_ns"]) == times[-1]
