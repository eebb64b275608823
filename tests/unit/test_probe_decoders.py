"""Pure decoders of the probe events, fed struct-packed byte literals (no root, no bcc)."""

from __future__ import annotations

import socket
import struct
import time

import pytest

from auditor.model.packet import ACK, FIN, PSH, RST, SYN, EventKind
from auditor.sources.live import DecodeError, decode_event
from auditor.sources.live.clock import measure_clock_offset
from auditor.sources.live.decode_skb_drop import drop_location
from auditor.sources.live.formatters import (
    drop_reason_name,
    enum_names,
    rst_reason_name,
    tcp_state_name,
)

OFFSET = 1_700_000_000_000_000_000  # realtime - monotonic, ns
NETNS = 4026532001
V4 = socket.inet_aton
AF_INET, AF_INET6 = 2, 10


def v6(text: str) -> bytes:
    return socket.inet_pton(socket.AF_INET6, text)


def header(ts: int, kind: int, family: int, saddr: bytes, daddr: bytes, sport: int, dport: int) -> bytes:
    """struct ev_hdr + struct ev_tuple: ts, kind, netns, pid, family, pad, saddr, daddr, sport, dport."""
    return struct.pack("<QIIIHH16s16sHH", ts, kind, NETNS, 4242, family, 0, saddr, daddr, sport, dport)


def test_rst_sent_for_closed_port() -> None:
    # 10.244.1.7.8080 > 10.244.2.9.41000: Flags [R.] -- RST from the pod to the client
    # state 7 (CLOSE: no socket), reason 1 (SK_RST_REASON_NO_SOCKET); padded to sizeof 72
    data = header(5_000, 1, AF_INET, V4("10.244.1.7"), V4("10.244.2.9"), 8080, 41000)
    data += struct.pack("<II4x", 7, 1)
    ev = decode_event(data, OFFSET, node="n1")
    assert ev.kind == EventKind.RST_SENT
    assert (ev.src, ev.sport, ev.dst, ev.dport) == ("10.244.1.7", 8080, "10.244.2.9", 41000)
    assert (ev.time_ns, ev.family, ev.reason_raw, ev.state_raw) == (OFFSET + 5_000, 4, 1, 7)
    assert (ev.netns, ev.source, ev.node, ev.frame) == (NETNS, "ebpf", "n1", 0)
    assert ev.tcp_flags == 0  # the answered packet is unknown (trigger_flags 0)


@pytest.mark.parametrize(
    ("trigger", "wire"),
    [(SYN, RST | ACK), (ACK, RST), (ACK | PSH, RST), (FIN | ACK, RST), (0, 0)],
)
def test_rst_sent_without_socket_carries_the_flags_it_answered(trigger: int, wire: int) -> None:
    # tcp_v4_send_reset: a packet with ACK gets a bare RST (seq = its ack); else RST/ACK (a SYN: refused)
    data = header(5_000, 1, AF_INET, V4("10.244.1.7"), V4("10.244.2.9"), 8080, 41000)
    data += struct.pack("<III", 7, 1, trigger)
    ev = decode_event(data, OFFSET)
    assert ev.tcp_flags == wire


def test_rst_received_is_swapped_to_wire_direction() -> None:
    # the client socket 10.244.2.9.41000 (SYN_SENT = 2) receives a RST from 10.244.1.7.8080
    data = header(7, 2, AF_INET, V4("10.244.2.9"), V4("10.244.1.7"), 41000, 8080)
    data += struct.pack("<II4x", 2, 0)
    ev = decode_event(data, OFFSET)
    assert ev.kind == EventKind.RST_RECEIVED
    assert (ev.src, ev.sport, ev.dst, ev.dport) == ("10.244.1.7", 8080, "10.244.2.9", 41000)
    assert ev.state_raw == 2


def test_refused_ipv6() -> None:
    # [fd00::2].41000 > [fd00::7].8080 SYN_SENT -> CLOSE
    data = header(9, 3, AF_INET6, v6("fd00::2"), v6("fd00::7"), 41000, 8080)
    data += struct.pack("<II4x", 2, 7)
    ev = decode_event(data, OFFSET)
    assert ev.kind == EventKind.REFUSED
    assert (ev.family, ev.src, ev.sport, ev.dst, ev.dport) == (6, "fd00::2", 41000, "fd00::7", 8080)
    assert ev.state_raw == 2


def test_listen_close() -> None:
    # listener 0.0.0.0:8080 LISTEN (10) -> CLOSE (7)
    data = header(11, 4, AF_INET, V4("0.0.0.0"), V4("0.0.0.0"), 8080, 0) + struct.pack("<II4x", 10, 7)
    ev = decode_event(data, OFFSET)
    assert (ev.kind, ev.src, ev.sport, ev.dport, ev.state_raw) == ("listen_close", "0.0.0.0", 8080, 0, 10)


def test_icmp_unreachable_quotes_original_datagram() -> None:
    # ICMP 10.244.1.7 tcp port 8080 unreachable (type 3 code 3), quoted SYN 10.244.2.9.41000 > .8080
    data = header(13, 5, AF_INET, V4("10.244.2.9"), V4("10.244.1.7"), 41000, 8080)
    data += struct.pack("<IIBBHI", 3, 3, 6, SYN, 0, 0)
    ev = decode_event(data, OFFSET)
    assert ev.kind == EventKind.ICMP_UNREACHABLE
    assert (ev.icmp_type, ev.icmp_code, ev.tcp_flags) == (3, 3, SYN)
    assert (ev.src, ev.sport, ev.dst, ev.dport, ev.reporter) == ("10.244.2.9", 41000, "10.244.1.7", 8080, "")


def test_drop_with_reason_and_location() -> None:
    # SYN 10.244.2.9.41000 > 10.244.1.7.8080 dropped, reason 3 (NO_SOCKET), at 0xffffffff81abcdef
    data = header(15, 6, AF_INET, V4("10.244.2.9"), V4("10.244.1.7"), 41000, 8080)
    data += struct.pack("<IHBB4xQ", 3, 0x0800, 6, SYN, 0xFFFFFFFF81ABCDEF)
    ev = decode_event(data, OFFSET)
    assert (ev.kind, ev.reason_raw, ev.tcp_flags) == ("drop", 3, SYN)
    assert (ev.src, ev.dst, ev.dport) == ("10.244.2.9", "10.244.1.7", 8080)
    assert drop_location(data) == (6, 0xFFFFFFFF81ABCDEF)


def test_unknown_family_gives_empty_addresses() -> None:
    data = header(1, 1, 0, b"\x01" * 16, b"\x02" * 16, 1, 2) + struct.pack("<II4x", 0, 0)
    ev = decode_event(data, 0)
    assert (ev.src, ev.dst) == ("", "")


@pytest.mark.parametrize(
    "data, message",
    [
        (b"", "expected at least"),
        (header(1, 1, AF_INET, V4("1.2.3.4"), V4("5.6.7.8"), 1, 2), "expected at least 72"),
        (header(1, 99, AF_INET, V4("1.2.3.4"), V4("5.6.7.8"), 1, 2) + b"\0" * 40, "unknown event kind 99"),
    ],
)
def test_malformed_events_raise_decode_error(data: bytes, message: str) -> None:
    with pytest.raises(DecodeError, match=message):
        decode_event(data, 0)


def test_family_decoder_rejects_other_kind() -> None:
    from auditor.sources.live.decode_sock_state import decode_sock_state

    data = header(1, 1, AF_INET, V4("1.2.3.4"), V4("5.6.7.8"), 1, 2) + struct.pack("<II4x", 0, 0)
    with pytest.raises(DecodeError, match="not a sock_state"):
        decode_sock_state(data, 0)


def test_formatters_name_raw_values() -> None:
    assert tcp_state_name(10) == "LISTEN" and tcp_state_name(99) == "STATE_99"
    rst = enum_names({"SK_RST_REASON_NOT_SPECIFIED": 0, "SK_RST_REASON_NO_SOCKET": 1}, "SK_RST_REASON_")
    assert rst_reason_name(1, rst) == "NO_SOCKET" and rst_reason_name(5, rst) == "REASON_5"
    drops = {2: "NOT_SPECIFIED", 3: "NO_SOCKET"}
    assert drop_reason_name(3, drops) == "NO_SOCKET" and RST == 0x04


def test_clock_offset_matches_wall_clock() -> None:
    offset = measure_clock_offset()
    utc = time.clock_gettime_ns(time.CLOCK_MONOTONIC) + offset
    assert abs(utc - time.time_ns()) < 50_000_000  # 50 ms: only scheduling noise between reads


def _sample_records() -> list[bytes]:
    """One record of each kind (as in the tests above), plus IPv6 and an unknown family."""
    return [
        header(5_000, 1, AF_INET, V4("10.244.1.7"), V4("10.244.2.9"), 8080, 41000)
        + struct.pack("<II4x", 7, 1),
        header(6_000, 1, AF_INET, V4("10.244.1.7"), V4("10.244.2.9"), 8080, 41001) + struct.pack("<III", 7, 1, SYN),
        header(6_500, 1, AF_INET, V4("10.244.1.7"), V4("10.244.2.9"), 8080, 41002) + struct.pack("<III", 7, 1, ACK),
        header(7, 2, AF_INET, V4("10.244.2.9"), V4("10.244.1.7"), 41000, 8080) + struct.pack("<II4x", 2, 0),
        header(9, 3, AF_INET6, v6("fd00::2"), v6("fd00::7"), 41000, 8080) + struct.pack("<II4x", 2, 7),
        header(11, 4, AF_INET, V4("0.0.0.0"), V4("0.0.0.0"), 8080, 0) + struct.pack("<II4x", 10, 7),
        header(13, 5, AF_INET, V4("10.244.2.9"), V4("10.244.1.7"), 41000, 8080)
        + struct.pack("<IIBBHI", 3, 3, 6, SYN, 0, 0),
        header(15, 6, AF_INET6, v6("fd00::9"), v6("fd00::7"), 41000, 8080)
        + struct.pack("<IHBB4xQ", 3, 0x86DD, 6, SYN, 0xFFFFFFFF81ABCDEF),
        header(17, 1, 0, b"\x01" * 16, b"\x02" * 16, 1, 2) + struct.pack("<II4x", 0, 0),
    ]


def test_batch_decoder_matches_record_decoders() -> None:
    from pandas.testing import assert_frame_equal

    from auditor.model.packet import packet_frame
    from auditor.sources.live.decode_batch import decode_records

    records = _sample_records()
    batch, bad = decode_records(
        [*records, b"\x00" * 4, header(1, 9, 2, b"", b"", 0, 0) + b"\0" * 8], OFFSET, "n1"
    )
    assert bad == 2
    expected = [decode_event(r, OFFSET, "n1") for r in records]
    one_by_one = packet_frame(sorted(expected, key=lambda e: e.time_ns))
    assert_frame_equal(batch, one_by_one, check_categorical=False)
    assert list(batch["kind"]) == [e.kind for e in sorted(expected, key=lambda e: e.time_ns)]


def test_batch_decoder_empty() -> None:
    from auditor.sources.live.decode_batch import decode_records

    df, bad = decode_records([], 0)
    assert len(df) == 0 and bad == 0 and "time" in df.columns


# -- the in-kernel aggregates (probes/aggregates.h) ------------------------------------------------


def agg_key(addr: bytes, bucket: int, reason: int, port: int, kind: int, family: int, state: int, flags: int,
            side: int, proto: int) -> bytes:  # fmt: skip
    """struct agg_key: addr[16], bucket, reason, port, kind, family, state, flags, side, ip_proto (32 bytes)."""
    return struct.pack("<16sIIHBBBBBB", addr, bucket, reason, port, kind, family, state, flags, side, proto)


def agg_values(*per_cpu: tuple[int, int]) -> bytes:
    """struct agg_val per CPU: events, detail_lost."""
    return b"".join(struct.pack("<QQ", e, d) for e, d in per_cpu)


def test_aggregates_decode_and_sum_the_cpus() -> None:
    from auditor.sources.live.decode_aggregates import decode_aggregates

    bucket_ns = 100_000_000
    keys = (
        # 10.244.2.9.41000 > 10.244.1.7.8080 refused (SYN_SENT -> CLOSE), counted under its destination
        agg_key(V4("10.244.1.7"), 17_000_000, 0, 8080, 3, AF_INET, 2, 0, 0, 6)
        # 10.244.1.7.8080 > 10.244.2.9.*: Flags [R.] without a socket (state 0), answering a SYN: its source
        + agg_key(V4("10.244.1.7"), 17_000_000, 1, 8080, 1, AF_INET, 0, SYN, 1, 6)
        # [fd00::9].* > [fd00::7].8080 SYN dropped (reason 3 NO_SOCKET), one bucket later
        + agg_key(v6("fd00::7"), 17_000_001, 3, 8080, 6, AF_INET6, 0, SYN, 0, 6)
    )
    values = agg_values((3, 1), (2, 0)) + agg_values((0, 0), (5, 5)) + agg_values((7, 0), (0, 0))
    records, bad = decode_aggregates(keys, values, 2, OFFSET, bucket_ns, node="n1")
    assert bad == 0
    refused, rst, drop = records
    assert (refused.kind, refused.addr, refused.port, refused.side) == ("refused", "10.244.1.7", 8080, "dst")
    assert (refused.events, refused.detail_lost, refused.state_raw, refused.family) == (5, 1, 2, 4)
    assert refused.time_ns == 17_000_000 * bucket_ns + OFFSET and refused.bucket_raw == 17_000_000
    assert (rst.kind, rst.side, rst.state_raw, rst.flags_raw, rst.reason_raw) == ("rst_sent", "src", 0, SYN, 1)
    assert (rst.events, rst.detail_lost, rst.node, rst.server) == (5, 5, "n1", "10.244.1.7:8080")
    assert (drop.kind, drop.family, drop.addr, drop.reason_raw, drop.ip_proto) == ("drop", 6, "fd00::7", 3, 6)
    assert drop.server == "[fd00::7]:8080" and drop.time_ns == refused.time_ns + bucket_ns


def test_aggregates_skip_malformed_keys() -> None:
    from auditor.sources.live.decode_aggregates import decode_aggregates, key_bucket

    keys = (
        agg_key(V4("10.0.0.1"), 5, 0, 80, 99, AF_INET, 0, 0, 0, 6)  # unknown kind
        + agg_key(V4("10.0.0.1"), 6, 0, 80, 3, 0, 0, 0, 0, 6)  # unknown family
        + agg_key(V4("10.0.0.1"), 7, 0, 80, 3, AF_INET, 2, 0, 0, 6)  # never counted
    )
    records, bad = decode_aggregates(keys, agg_values((1, 0)) * 2 + agg_values((0, 0)), 1, 0, 1)
    assert (records, bad) == ([], 3)
    assert [key_bucket(keys, i) for i in range(3)] == [5, 6, 7]
    with pytest.raises(DecodeError, match="value bytes"):
        decode_aggregates(keys, agg_values((1, 0)), 2, 0, 1)


def test_counts_name_failures_as_the_engine_does() -> None:
    from auditor.model.counts import CountRecord, failure_counts, failure_of, sampled_note, total_failures

    def rec(kind: str, events: int, state: int = 0, flags: int = 0, port: int = 8080, lost: int = 0) -> CountRecord:
        return CountRecord(0, 100_000_000, kind, 4, "10.244.1.7", port, "src", 0, state, flags, 6, events, lost)

    assert failure_of(rec("rst_sent", 1, flags=SYN)) == "refused"  # socketless, answered a SYN
    assert failure_of(rec("rst_sent", 1, flags=ACK)) == "reset"  # socketless, answered a late ACK
    assert failure_of(rec("rst_sent", 1, state=1)) == "reset"  # an established socket reset
    assert failure_of(rec("icmp_unreachable", 1)) == "unreachable"
    assert failure_of(rec("rst_received", 1, state=2)) is None and failure_of(rec("drop", 1)) is None
    records = [
        rec("rst_sent", 40, flags=SYN, lost=30), rec("rst_sent", 2, flags=SYN),  # the server's side: 42
        rec("refused", 30),  # the clients on this node saw 30 of them
        rec("rst_sent", 3, state=1), rec("icmp_unreachable", 4), rec("refused", 5, port=9),
    ]  # fmt: skip
    servers = failure_counts(records)
    assert servers["10.244.1.7:8080"].as_dict() == {
        "refused": 42, "reset": 3, "unreachable": 4, "events": 79, "detail_lost": 30,
    }  # fmt: skip
    assert total_failures(servers.values()) == {"refused": 47, "reset": 3, "unreachable": 4}
    assert sampled_note(1_100_000, 3_000_000) == "detail sampled: 1.1 M of 3.0 M events; counts exact"
    assert sampled_note(500, 500).startswith("detail complete: 500 events")
    line = records[0].to_json_line()
    assert CountRecord.from_json(__import__("json").loads(line)) == records[0]
