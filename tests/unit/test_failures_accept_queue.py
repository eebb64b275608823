"""A refusal is an RST/ACK with SEQ 0 answering a SYN; a connection reset in the accept queue is not one.

The packets are those of a lab capture (issue 9, item 8: 135 refusals counted for 134 RSTs answering a
SYN): the client's handshake completed a few microseconds before the pod's listener closed, so the
connection was reset from the accept queue before the client's request arrived. That RST acknowledges
the client's ISN + 1 exactly like a refusal does, but carries the server's ISN + 1 as its sequence
number; hey reported it as ``connect: connection reset by peer``, not as refused.
"""

from __future__ import annotations

from auditor.correlate.failures import find_failures
from auditor.model.packet import ACK, RST, SYN, PacketEvent, packet_frame

CLIENT, VIP, POD = "10.1.0.2", "10.96.0.10", "10.244.0.12"
T = 1_796_182_378_817_752_000


def _copies(
    t: int, kind: str, to_server: bool, flags: int, seq: int, ack: int, port: int
) -> list[PacketEvent]:
    """The node's ``tcpdump -i any`` copies of one segment: client side (ClusterIP), then pod side."""
    out = []
    for i, (server, server_port) in enumerate(((VIP, 80), (POD, 8080))):
        ends = (CLIENT, port, server, server_port) if to_server else (server, server_port, CLIENT, port)
        out.append(PacketEvent(t + i * 10_000, kind, 4, *ends, flags, seq, ack, node="lab-node"))
    return out


def _accept_queue_reset(port: int = 43628) -> list[PacketEvent]:
    isn_c, isn_s = 1105219716, 3590522434
    return [
        *_copies(T, "tcp_syn", True, SYN, isn_c, 0, port),
        *_copies(T + 35_000, "tcp_synack", False, SYN | ACK, isn_s, isn_c + 1, port),
        # the client's ACK completed the handshake at T + 48 us (not an event kind); the listener closed
        # at T + 157 us: the accepted connection, no request data received yet, is reset
        *_copies(T + 157_000, "tcp_rst", False, RST | ACK, isn_s + 1, isn_c + 1, port),
    ]


def _refusal(port: int = 43630) -> list[PacketEvent]:
    isn_c = 2_000_000_000
    return [
        *_copies(T + 1_000_000, "tcp_syn", True, SYN, isn_c, 0, port),
        *_copies(T + 1_020_000, "tcp_rst", False, RST | ACK, 0, isn_c + 1, port),
    ]


def test_reset_of_an_idle_accepted_connection_is_a_reset_not_a_refusal() -> None:
    f = find_failures(packet_frame(_accept_queue_reset()))
    assert len(f) == 2  # the pod-side copy and the un-DNATed copy
    assert set(f["failure"].astype(str)) == {"reset"}, f[["failure", "seq", "ack"]]


def test_rst_ack_with_seq_zero_answering_a_syn_is_a_refusal() -> None:
    f = find_failures(packet_frame(_accept_queue_reset() + _refusal()))
    by_port = {(int(port), str(failure)) for port, failure in zip(f["client_port"], f["failure"], strict=True)}
    assert by_port == {(43628, "reset"), (43630, "refused")}
