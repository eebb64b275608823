"""Issue 11's live refusal count, event by event: an ingress pod dials old pods by IP, the live agent's
events of each refused attempt are the pod's socketless ``rst_sent`` and the ingress socket's ``refused``
(SYN_SENT -> CLOSE). A refusal is counted once, from the ``rst_sent`` (it names the pod), or from the
``refused`` event when the ``rst_sent`` is missing (a run of the probe the kernel skipped: see
``auditor.sources.live.progstats``).

The ingress reuses a source port to the same pod within a second (lab run r2 of this change: 11 ports,
0.78-0.84 s apart, Linux hands out a port freed by a refusal again), and dials several terminating pods
from the same port within a second when pods terminate together. The last two tests pin
the pairing rule: one to one, nearest in time first (``correlate.failures.one_to_one``), so a refused event
is never absorbed by the other attempt's socketless RST, and a failure takes its own refused event.
"""

from __future__ import annotations

from auditor.correlate.audit import AuditResult, audit
from auditor.model.packet import ACK, RST, PacketEvent, packet_frame
from tests.fakes import inputs, pod

NS = 1_000_000_000
MS = 1_000_000
T0 = 1_790_000_000 * NS
A, B, INGRESS = "10.244.0.11", "10.244.0.12", "10.244.0.250"
NAME = "ingress-nginx/ingress-nginx-controller-7d9f"
NODE = "lab-node"


def _refusal(t: int, server: str, port: int, *, rst: bool = True, refused: bool = True) -> list[PacketEvent]:
    """The live events of one refused attempt of the ingress (port ``port``) to ``server``:8080."""
    out = []
    if rst:  # tcp:tcp_send_reset in the pod's namespace, no socket, answering a SYN
        out.append(PacketEvent(t, "rst_sent", 4, server, 8080, INGRESS, port, RST | ACK, reason_raw=1,
                               state_raw=0, source="ebpf", node=NODE))  # fmt: skip
    if refused:  # sock:inet_sock_set_state SYN_SENT -> CLOSE of the ingress's socket
        out.append(PacketEvent(t + 20_000, "refused", 4, INGRESS, port, server, 8080, state_raw=2,
                               source="ebpf", node=NODE))  # fmt: skip
    return out


def _pods() -> list[object]:
    return [
        pod("u-a", "default", "web-6d5f-aaaaa", (A,), first_seen_ns=T0 - 60 * NS, deletion_observed_ns=T0,
            deleted_observed_ns=T0 + 3 * NS),
        pod("u-b", "default", "web-6d5f-bbbbb", (B,), first_seen_ns=T0 - 60 * NS, deletion_observed_ns=T0,
            deleted_observed_ns=T0 + 3 * NS),
        pod("u-ing", "ingress-nginx", "ingress-nginx-controller-7d9f", (INGRESS,), first_seen_ns=T0 - 90 * NS,
            replicaset="ingress-nginx-controller-7d9f", deployment="ingress-nginx-controller", node=NODE),
    ]  # fmt: skip


def _audit(events: list[PacketEvent]) -> AuditResult:
    return audit(inputs(packet_frame(sorted(events, key=lambda e: e.time_ns)), _pods()))  # type: ignore[arg-type]


def _refused(res: AuditResult, ip: str) -> dict[tuple[str, str], int]:
    """Refusals per (consumer kind, consumer) of the episode of the pod at ``ip``."""
    ep = int(res.episodes.set_index("ip").loc[ip, "episode"])
    c = res.consumers.loc[res.consumers["episode"] == ep]
    return {
        (str(k), str(n)): int(r)
        for k, n, r in zip(c["consumer_kind"], c["consumer"], c["refused"], strict=True)
    }


def test_every_refusal_once_from_its_reset() -> None:
    events = [e for i in range(10) for e in _refusal(T0 + 10 * MS + i * 50 * MS, A, 40_000 + 2 * i)]
    assert _refused(_audit(events), A) == {("pod", NAME): 10}


def test_a_missing_reset_is_counted_from_the_clients_refused_event() -> None:
    # attempt 3's tcp_send_reset run was skipped by the kernel: its refused event stands for it
    events = [
        e for i in range(10) for e in _refusal(T0 + 10 * MS + i * 50 * MS, A, 40_000 + 2 * i, rst=i != 3)
    ]
    assert _refused(_audit(events), A) == {("pod", NAME): 10}


def test_a_port_reused_to_the_same_pod_counts_twice() -> None:
    events = _refusal(T0 + 100 * MS, A, 40_000) + _refusal(T0 + 900 * MS, A, 40_000)
    assert _refused(_audit(events), A) == {("pod", NAME): 2}


def test_a_missing_reset_on_a_reused_port_is_still_a_refusal() -> None:
    # the ingress's port 40000 refused by A twice, 0.8 s apart; the second reset's probe run was skipped
    events = _refusal(T0 + 100 * MS, A, 40_000) + _refusal(T0 + 900 * MS, A, 40_000, rst=False)
    assert _refused(_audit(events), A) == {("pod", NAME): 2}


def test_one_port_refused_by_two_terminating_pods_stays_the_ingress() -> None:
    events = _refusal(T0 + 100 * MS, A, 40_000) + _refusal(T0 + 400 * MS, B, 40_000)
    res = _audit(events)
    assert _refused(res, A) == {("pod", NAME): 1}
    assert _refused(res, B) == {("pod", NAME): 1}
