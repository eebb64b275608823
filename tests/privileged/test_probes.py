"""Smoke test of the live probes: load them as root, make traffic in a fresh network namespace,
check the events (ports, netns) and that the in-kernel counters match what Python received."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from auditor.model.packet import EventKind, PacketEvent
from auditor.sources.live import ProbeConfig, ProbeSet
from tests.conftest import require_root, require_tool
from tests.privileged.conftest import refusal_storm

pytestmark = pytest.mark.privileged

CLOSED_PORT, LISTEN_PORT, LATE_ACK_PORT = 7, 8123, 45678

# Runs inside the namespace: refused IPv4 and IPv6 connects, open+close a listener, UDP to a
# closed port.
CLIENT = f"""
import socket
for family, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
    s = socket.socket(family)
    s.settimeout(2)
    try:
        s.connect((host, {CLOSED_PORT}))
    except ConnectionRefusedError:
        print("refused", host)
    s.close()
l = socket.socket()
l.bind(("127.0.0.1", {LISTEN_PORT}))
l.listen()
l.close()
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.sendto(b"x", ("127.0.0.1", {CLOSED_PORT}))
u.close()
# a bare ACK to the closed port (what a late handshake ACK looks like once the listener is gone):
# IPv4 + TCP from 127.0.0.1:{LATE_ACK_PORT}, checksum over the pseudo header
import struct
def csum(b):
    b += b"\\0" * (len(b) % 2)
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF
lo = socket.inet_aton("127.0.0.1")
tcp = struct.pack("!HHIIBBHHH", {LATE_ACK_PORT}, {CLOSED_PORT}, 1000, 2000, 5 << 4, 0x10, 1024, 0, 0)
tcp = tcp[:16] + struct.pack("!H", csum(lo + lo + struct.pack("!BBH", 0, 6, len(tcp)) + tcp)) + tcp[18:]
ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 40, 1, 0, 64, 6, 0, lo, lo)
r = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
r.sendto(ip + tcp, ("127.0.0.1", 0))
r.close()
"""


def _skip_unless_bcc_can_load() -> None:
    require_root()
    require_tool("ip")
    from auditor.sources.live.environment import prepare_bcc_environment

    env = prepare_bcc_environment()
    if not env.ready:
        pytest.skip("bcc cannot compile probes here: " + "; ".join(env.notes))
    try:
        import bcc  # noqa: F401
    except ImportError as exc:
        pytest.skip(f"bcc is not importable ({exc}); .ci/install installs python3-bpfcc")


@pytest.fixture(scope="module")
def probes() -> Iterator[ProbeSet]:
    _skip_unless_bcc_can_load()

    probe_set = ProbeSet(ProbeConfig(pod_cidrs=("127.0.0.0/8",), node="smoke")).start()
    try:
        yield probe_set
    finally:
        probe_set.close()



def _collect(probe_set: ProbeSet, inum: int, wanted: set[str], seconds: float = 5.0) -> list[PacketEvent]:
    got: list[PacketEvent] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        got += [e for e in probe_set.poll(50) if e.netns == inum]
        if wanted <= {e.kind for e in got}:
            break
    return got


def test_refusal_listener_icmp_and_drop_in_netns(probes: ProbeSet, netns: tuple[str, int]) -> None:
    name, inum = netns
    probes.poll(0)  # drop earlier traffic
    out = subprocess.run(
        ["ip", "netns", "exec", name, sys.executable, "-c", CLIENT],
        capture_output=True,
        text=True,
        timeout=20,
        check=True,
    )
    assert out.stdout.split("\n")[0] == "refused 127.0.0.1"
    wanted = {"refused", "rst_sent", "rst_received", "listen_close", "icmp_unreachable", "drop"}
    events = _collect(probes, inum, wanted)
    by_kind: dict[str, list[PacketEvent]] = {}
    for e in events:
        by_kind.setdefault(e.kind, []).append(e)
    assert wanted <= set(by_kind), f"missing {wanted - set(by_kind)}; disabled: {probes.disabled}"

    refused = next(e for e in by_kind[EventKind.REFUSED] if e.family == 4)
    assert (refused.dst, refused.dport, refused.state_raw) == ("127.0.0.1", CLOSED_PORT, 2)
    client_port = refused.sport
    rst = next(e for e in by_kind[EventKind.RST_SENT] if e.dport == client_port)
    assert (rst.src, rst.sport, rst.dst) == ("127.0.0.1", CLOSED_PORT, "127.0.0.1")
    assert rst.reason_raw == 1  # SK_RST_REASON_NO_SOCKET on 6.10+; 0 before
    assert rst.tcp_flags == 0x14  # RST/ACK: it answered a SYN (read from the answered skb)
    deadline = time.monotonic() + 3  # the raw ACK is the script's last packet
    while (
        not any(e.dport == LATE_ACK_PORT for e in by_kind[EventKind.RST_SENT]) and time.monotonic() < deadline
    ):
        by_kind[EventKind.RST_SENT] += [
            e for e in probes.poll(50) if e.netns == inum and e.kind == "rst_sent"
        ]
    late = next(e for e in by_kind[EventKind.RST_SENT] if e.dport == LATE_ACK_PORT)
    assert (late.sport, late.tcp_flags) == (CLOSED_PORT, 0x04)  # a bare RST: it answered an ACK
    received = next(e for e in by_kind[EventKind.RST_RECEIVED] if e.dport == client_port)
    assert received.sport == CLOSED_PORT
    if "refused ::1" in out.stdout:  # IPv6 enabled in the namespace
        v6 = _collect(probes, inum, set(), 0.2) + [e for e in events if e.family == 6]
        refused6 = next(e for e in v6 if e.kind == EventKind.REFUSED)
        assert (refused6.dst, refused6.dport) == ("::1", CLOSED_PORT)
        rst6 = next(e for e in v6 if e.kind == EventKind.RST_SENT and e.dport == refused6.sport)
        assert (rst6.src, rst6.sport) == ("::1", CLOSED_PORT)
    listen = by_kind[EventKind.LISTEN_CLOSE][0]
    assert (listen.src, listen.sport, listen.state_raw) == ("127.0.0.1", LISTEN_PORT, 10)
    icmp = by_kind[EventKind.ICMP_UNREACHABLE][0]
    assert (icmp.icmp_type, icmp.icmp_code, icmp.dport) == (3, 3, CLOSED_PORT)
    assert any(e.dport == CLOSED_PORT and e.reason_raw > 1 for e in by_kind[EventKind.DROP])
    for e in events:
        assert e.source == "ebpf" and e.node == "smoke"
        assert abs(e.time_ns - time.time_ns()) < 30 * 10**9


def test_counters_match_received(probes: ProbeSet, netns: tuple[str, int]) -> None:
    name, _ = netns
    for _ in range(3):
        subprocess.run(
            ["ip", "netns", "exec", name, sys.executable, "-c", CLIENT], capture_output=True, timeout=20
        )
    before = probes.counters()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        probes.poll(50)
        if all(probes.received[k] >= c["seen"] for k, c in before.items()):
            break
    after = probes.counters()
    assert probes.decode_errors == 0
    for kind, c in before.items():
        # everything the kernel saw up to `before` was delivered, and nothing more than it saw
        assert c["seen"] <= after[kind]["received"] <= after[kind]["seen"], kind
        assert after[kind]["lost"] == 0, kind
    assert before["refused"]["seen"] >= 3 and before["listen_close"]["seen"] >= 3


def test_perf_buffer_fallback(netns: tuple[str, int]) -> None:
    _skip_unless_bcc_can_load()

    name, inum = netns
    with ProbeSet(ProbeConfig(families=("sock_state",), output="perf")) as probe_set:
        assert probe_set.output == "perf"
        assert probe_set.attached == ["sock:inet_sock_set_state"]
        subprocess.run(
            ["ip", "netns", "exec", name, sys.executable, "-c", CLIENT],
            timeout=20,
            check=True,
            capture_output=True,
        )
        frames = []
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:  # the batch path: raw records -> table
            frame = probe_set.poll_frame(50)
            frames.append(frame[frame["netns"] == inum])
            if {"listen_close", "refused"} <= {k for f in frames for k in f["kind"]}:
                break
        kinds = {k for f in frames for k in f["kind"]}
        assert {"listen_close", "refused"} <= kinds
        refused = next(f for f in frames if "refused" in set(f["kind"]))
        assert CLOSED_PORT in set(refused.loc[refused["kind"] == "refused", "dport"])
        counters = probe_set.counters()
        assert counters["listen_close"]["lost"] == 0 and probe_set.perf_lost == 0


def test_missing_tracepoint_disables_only_that_signal(monkeypatch: pytest.MonkeyPatch) -> None:
    _skip_unless_bcc_can_load()
    from auditor.sources.live import layout
    from auditor.sources.live.layout import Hook

    fake = Hook("tcp", "tcp_no_such_event", "NX", "on_nothing", ("skaddr",))
    c_file, hooks = layout.FAMILIES["tcp_reset"]
    monkeypatch.setitem(layout.FAMILIES, "tcp_reset", (c_file, (*hooks, fake)))
    with ProbeSet(ProbeConfig(families=("tcp_reset",))) as probe_set:
        assert "tcp:tcp_no_such_event" in probe_set.disabled
        assert probe_set.attached == ["tcp:tcp_send_reset", "tcp:tcp_receive_reset"]


def test_old_tcp_send_reset_layout_compiles_and_loads() -> None:
    """The split-address layout (<= 6.9) is built from a 5.15 format file and passes the verifier."""
    _skip_unless_bcc_can_load()
    from auditor.sources.live.tracefs import find_tracefs, parse_format, read_format
    from tests.unit.test_tracefs_format import SEND_RESET_5_15

    def formats(system: str, event: str):  # type: ignore[no-untyped-def]
        if event == "tcp_send_reset":
            return parse_format(SEND_RESET_5_15)
        return read_format(find_tracefs() or Path("/sys/kernel/tracing"), system, event)

    with ProbeSet(ProbeConfig(families=("tcp_reset",)), formats=formats) as probe_set:
        assert probe_set.attached == ["tcp:tcp_send_reset", "tcp:tcp_receive_reset"]
        assert probe_set.disabled == {}


def test_ring_buffer_is_used_where_the_kernel_has_it(probes: ProbeSet) -> None:
    """A ring-buffer program that fails to compile must not hide behind the perf-buffer fallback."""
    from auditor.sources.live.environment import prepare_bcc_environment

    if not prepare_bcc_environment().ringbuf:
        pytest.skip("this kernel has no BPF ring buffer (< 5.8): the perf buffer is the right output")
    assert probes.output == "ringbuf"


# A refusal storm inside the namespace: `count` connects to a closed port of a loopback address of its
# own, back to back; prints how many were refused (the storm's own count).


@pytest.mark.parametrize("batch", [True, False], ids=["batch-ops", "key-walk"])
def test_counts_stay_exact_when_the_ring_buffer_overflows(netns: tuple[str, int], batch: bool) -> None:
    """A 4 KiB ring buffer nobody reads during a 20,000-connection storm: almost every detail event is
    lost (counted), and the aggregates still count every refusal, from both ends; read with the batch
    map operations or, as on kernels without them, by walking the keys."""
    _skip_unless_bcc_can_load()
    import random

    from auditor.model.counts import failure_counts

    name, _ = netns
    addr, port, count = f"127.{random.randint(1, 250)}.{random.randint(1, 250)}.{random.randint(1, 250)}", 7, 20_000
    config = ProbeConfig(families=("tcp_reset", "sock_state"), ringbuf_pages=1, perf_pages=1, node="storm")
    with ProbeSet(config) as probe_set:
        refused = refusal_storm(name, addr, port, count)
        assert probe_set._agg is not None
        probe_set._agg.batch = batch
        probe_set.detach()  # nothing counts after this
        received = len(probe_set.poll_raw(0))
        records = probe_set.read_counts()
        counters = probe_set.counters()
    assert refused == count  # the storm's own count: nothing listens there
    server = failure_counts(records)[f"{addr}:{port}"]
    assert server.refused_by_server == server.refused_by_client == server.refused == refused
    assert server.events == 3 * refused  # rst_sent, rst_received, refused
    assert server.detail_lost > server.events // 2 and received < count  # the ring buffer overflowed
    for kind in ("rst_sent", "rst_received", "refused"):
        c = counters[kind]
        assert c["lost"] > 0 and c["seen"] == c["counted"] + c["uncounted"], (kind, c)
    assert all(r.node == "storm" and r.bucket_ns == 100_000_000 for r in records)
