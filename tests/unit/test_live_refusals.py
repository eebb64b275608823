"""Live (eBPF) events: which socketless resets are refusals, and one refusal per refused connection."""

from __future__ import annotations

from auditor.correlate.failures import find_failures
from auditor.model.packet import PacketEvent, packet_frame

NS = 1_000_000_000
T0 = 1_790_000_000 * NS
POD, VIP, CLIENT = "10.244.0.12", "10.96.0.10", "10.1.0.2"


def live(t: int, kind: str, src: str, sport: int, dst: str, dport: int, state: int) -> PacketEvent:
    return PacketEvent(t, kind, 4, src, sport, dst, dport, state_raw=state, source="ebpf", node="n1")


def test_socketless_reset_answering_a_late_ack_is_not_a_refusal() -> None:
    events = [
        # refused: the pod's kernel resets a SYN (no socket); the client's socket was in SYN_SENT (2)
        live(T0, "rst_sent", POD, 8080, CLIENT, 40001, 0),
        live(T0 + 50_000, "rst_received", VIP, 80, CLIENT, 40001, 2),
        live(T0 + 60_000, "refused", CLIENT, 40001, VIP, 80, 2),
        # a handshake completed as the listener closed: the client's last ACK finds no socket; the
        # client's socket was ESTABLISHED (1) when the RST came: a reset, not a refusal
        live(T0 + NS, "rst_sent", POD, 8080, CLIENT, 40002, 0),
        live(T0 + NS + 50_000, "rst_received", VIP, 80, CLIENT, 40002, 1),
        # a refusal whose client is on another node: only the pod's side is seen
        live(T0 + 2 * NS, "rst_sent", POD, 8080, "10.1.7.7", 40003, 0),
    ]
    f = find_failures(packet_frame(events))
    got = {(str(r.client_ip), int(r.client_port), str(r.server_ip), str(r.failure)) for r in f.itertuples()}
    assert (CLIENT, 40001, POD, "refused") in got  # named by the pod; the client's event is not counted again
    assert (CLIENT, 40002, POD, "reset") in got
    assert ("10.1.7.7", 40003, POD, "refused") in got
    refused = f.loc[f["failure"] == "refused"]
    assert len(refused) == 2 and set(refused["server_ip"].astype(str)) == {POD}


def test_socketless_reset_names_what_it_answered_for_clients_on_other_nodes() -> None:
    """The probe reads the packet a socketless reset answered: RST/ACK answered a SYN (refused), a
    bare RST answered an ACK (a late ACK or data for a connection already gone: a reset). No client
    socket on this node is needed to tell them apart."""

    def sent(t: int, client_port: int, flags: int) -> PacketEvent:
        return PacketEvent(t, "rst_sent", 4, POD, 8080, "10.1.7.7", client_port, state_raw=0, tcp_flags=flags,
                           source="ebpf", node="n1")  # fmt: skip

    events = [
        sent(T0, 40001, 0x14),  # RST/ACK: answered a SYN
        sent(T0 + NS, 40002, 0x04),  # RST: answered the handshake's last ACK after the listener closed
        sent(T0 + 2 * NS, 40003, 0),  # unknown (older probe): counted as a refusal, as before
    ]
    f = find_failures(packet_frame(events))
    got = {int(r.client_port): str(r.failure) for r in f.itertuples()}
    assert got == {40001: "refused", 40002: "reset", 40003: "refused"}
