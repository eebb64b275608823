"""What ``auditor capture`` writes besides packets, as the reader sees it: the node in the interface
description (no ``NODE=`` prefix needed), the kernel's drops in the interface statistics block (lost
input in every report), and a file of its own cut before that block (drops unknown, said so).

The files are built here block by block (pcapng spec), independently of the C writer; the privileged
tests check the C writer's files with tcpdump and this reader.
"""

from __future__ import annotations

import struct
from pathlib import Path

from auditor.model.kube import KubeInput, endpoint_frame, event_frame
from auditor.sources.capture import read_capture
from auditor.sources.inputs import load_inputs
from auditor.sources.packet_inputs import read_packet_inputs


def _opt(code: int, value: bytes) -> bytes:
    return struct.pack("<HH", code, len(value)) + value + b"\0" * (-len(value) % 4)


def _block(btype: int, body: bytes) -> bytes:
    return struct.pack("<II", btype, 12 + len(body)) + body + struct.pack("<I", 12 + len(body))


def _shb(appl: str) -> bytes:
    return _block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1) + _opt(4, appl.encode()) + b"\0" * 4)


def _idb(name: str, desc: str) -> bytes:
    body = (
        struct.pack("<HHI", 101, 0, 192) + _opt(2, name.encode()) + _opt(3, desc.encode()) + _opt(9, b"\x09")
    )
    return _block(1, body + b"\0" * 4)


def _syn(t_ns: int, sport: int) -> bytes:
    """A raw-IP (link type 101) SYN 10.0.0.1:sport -> 10.244.0.5:8080 at t_ns."""
    tcp = struct.pack("!HHIIBBHHH", sport, 8080, 1000, 0, 5 << 4, 0x02, 1024, 0, 0)
    ip = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 40, 0, 0, 64, 6, 0, bytes([10, 0, 0, 1]), bytes([10, 244, 0, 5])
    )
    pkt = ip + tcp
    body = struct.pack("<IIIII", 0, t_ns >> 32, t_ns & 0xFFFFFFFF, len(pkt), len(pkt)) + pkt
    return _block(6, body)


def _isb(osdrop: int, ifdrop: int, recv: int) -> bytes:
    def q(v: int) -> bytes:
        return struct.pack("<Q", v)

    body = (
        struct.pack("<III", 0, 0, 0) + _opt(4, q(recv)) + _opt(5, q(ifdrop)) + _opt(7, q(osdrop)) + b"\0" * 4
    )
    return _block(5, body)


def _no_kube() -> KubeInput:
    return KubeInput({}, endpoint_frame([]), event_frame([]))


T0 = 1_767_000_000_000_000_000


def _capture(
    path: Path, *, node: str = "node-a", isb: bytes | None = b"", appl: str = "auditor capture"
) -> Path:
    data = _shb(appl) + _idb("any", f"node={node}") + _syn(T0, 40000) + _syn(T0 + 1_000_000, 40001)
    data += _isb(7, 3, 9) if isb == b"" else (isb or b"")
    path.write_bytes(data)
    return path


def test_node_from_interface_description(tmp_path: Path) -> None:
    path = _capture(tmp_path / "anything.pcapng", node="worker-7")
    res = read_capture(path, node_from_file=True)
    assert res.summary.node == "worker-7"
    assert list(res.events["node"].astype(str)) == ["worker-7", "worker-7"]
    packets, info = read_packet_inputs([str(path)])  # no NODE= prefix: the file's node
    assert set(packets["node"].astype(str)) == {"worker-7"}
    assert info["captures"][0]["node"] == "worker-7"


def test_explicit_prefix_wins_over_the_file(tmp_path: Path) -> None:
    path = _capture(tmp_path / "c.pcapng", node="worker-7")
    packets, info = read_packet_inputs([f"other={path}"])
    assert set(packets["node"].astype(str)) == {"other"}
    assert info["captures"][0]["node"] == "other"


def test_kernel_drops_are_lost_input(tmp_path: Path) -> None:
    path = _capture(tmp_path / "c.pcapng")
    s = read_capture(path).summary
    assert (s.dropped, s.if_dropped, s.writer) == (7, 3, "auditor capture")
    inputs = load_inputs([str(path)], _no_kube())
    assert inputs.info["capture_dropped"] == 7
    assert any("capture dropped 7 packet(s)" in p for p in inputs.problems)
    assert any("interface(s) dropped 3 packet(s)" in p for p in inputs.problems)
    assert [c.lost for c in inputs.coverage] == [7]  # the evidence counts them: no SAFE from this span


def test_no_drops_no_problem(tmp_path: Path) -> None:
    path = _capture(tmp_path / "c.pcapng", isb=_isb(0, 0, 2))
    inputs = load_inputs([str(path)], _no_kube())
    assert read_capture(path).summary.dropped == 0
    assert inputs.problems == [] and [c.lost for c in inputs.coverage] == [0]


def test_cut_before_its_statistics(tmp_path: Path) -> None:
    path = _capture(tmp_path / "c.pcapng", isb=None)
    s = read_capture(path).summary
    assert s.dropped is None and s.frames == 2
    assert any("no interface statistics block" in e for e in s.errors)
    other = _capture(tmp_path / "d.pcapng", isb=None, appl="Dumpcap (Wireshark) 4.0")
    assert read_capture(other).summary.errors == []  # other tools' files need no statistics block


def test_later_statistics_blocks_replace_earlier_ones(tmp_path: Path) -> None:
    path = _capture(tmp_path / "c.pcapng", isb=_isb(2, 0, 5) + _isb(5, 1, 9))  # cumulative counts
    assert read_capture(path).summary.dropped == 5


def _segment(tmp_path: Path, file: str) -> Path:
    """An agent log segment holding one SYN recorded with ``file`` (as its capture source writes it)."""
    from auditor.model.packet import PacketEvent
    from auditor.sinks.eventlog import EventLog

    log = EventLog(tmp_path, "node-c", "jsonl", clock=lambda: 1_795_000_000.0)
    log.write(
        [PacketEvent(T0, "tcp_syn", 4, "10.0.0.1", 40000, "10.244.0.5", 8080, 0x02, node="node-c", file=file)]
    )
    log.close()
    (seg,) = tmp_path.glob("events-node-c-*")
    return seg


def test_agent_capture_source_said_in_reports(tmp_path: Path) -> None:
    from auditor.sources.pcaplive.engine import LIVE_FILE

    inputs = load_inputs([str(_segment(tmp_path / "a", LIVE_FILE))], _no_kube())
    assert inputs.problems == [
        "node-c: the agent recorded packets by capture (no eBPF): refusals and resets without the kernel's reasons"
    ]
    other = load_inputs([str(_segment(tmp_path / "b", ""))], _no_kube())  # not from the capture source
    assert other.problems == []
