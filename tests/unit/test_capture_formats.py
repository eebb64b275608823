"""Capture framing: pcap byte orders and ns, pcapng sections/interfaces/blocks, damage, bad input.

Files are written here with struct (packets built with scapy), so every count is known by construction.
"""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether

from auditor.errors import InputError
from auditor.model.packet import PACKET_COLUMNS
from auditor.sources.capture import iter_event_batches, read_capture, summarize_capture

T0 = 1_700_000_000  # seconds


def tcp_frame(flags: str, sport: int = 40000, dst: str = "10.96.0.10") -> bytes:
    return bytes(Ether() / IP(src="10.244.1.7", dst=dst) / TCP(sport=sport, dport=8080, flags=flags))


def ip_packet(flags: str, sport: int = 40000) -> bytes:
    return bytes(IP(src="10.244.1.7", dst="10.96.0.10") / TCP(sport=sport, dport=8080, flags=flags))


def write_pcap(
    path: Path,
    frames: list[bytes],
    linktype: int = 1,
    order: str = "<",
    nsec: bool = False,
    times: list[tuple[int, int]] | None = None,
) -> Path:
    """A classic pcap file; ``times`` are (seconds, fraction in µs or ns)."""
    magic = 0xA1B23C4D if nsec else 0xA1B2C3D4
    out = [struct.pack(order + "IHHiIII", magic, 2, 4, 0, 0, 262144, linktype)]
    for i, frame in enumerate(frames):
        sec, frac = times[i] if times else (T0 + i, 0)
        out.append(struct.pack(order + "IIII", sec, frac, len(frame), len(frame)) + frame)
    path.write_bytes(b"".join(out))
    return path


def _pad(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % 4)


def _option(code: int, value: bytes, order: str) -> bytes:
    return struct.pack(order + "HH", code, len(value)) + _pad(value)


def ng_block(btype: int, body: bytes, order: str = "<") -> bytes:
    body = _pad(body)
    n = len(body) + 12
    return struct.pack(order + "II", btype, n) + body + struct.pack(order + "I", n)


def ng_shb(order: str = "<") -> bytes:
    return ng_block(0x0A0D0D0A, struct.pack(order + "IHHq", 0x1A2B3C4D, 1, 0, -1), order)


def ng_idb(
    linktype: int, name: str = "", tsresol: int | None = None, tsoffset: int = 0, order: str = "<"
) -> bytes:
    opts = b""
    if name:
        opts += _option(2, name.encode(), order)
    if tsresol is not None:
        opts += _option(9, bytes([tsresol]), order)
    if tsoffset:
        opts += _option(14, struct.pack(order + "q", tsoffset), order)
    if opts:
        opts += _option(0, b"", order)
    return ng_block(1, struct.pack(order + "HHI", linktype, 0, 262144) + opts, order)


def ng_epb(iface: int, ts: int, frame: bytes, order: str = "<") -> bytes:
    head = struct.pack(order + "IIIII", iface, ts >> 32, ts & 0xFFFFFFFF, len(frame), len(frame))
    return ng_block(6, head + frame, order)


def ng_spb(frame: bytes, order: str = "<") -> bytes:
    return ng_block(3, struct.pack(order + "I", len(frame)) + frame, order)


def ng_pb(iface: int, ts: int, frame: bytes, order: str = "<") -> bytes:
    head = struct.pack(order + "HHIIII", iface, 0, ts >> 32, ts & 0xFFFFFFFF, len(frame), len(frame))
    return ng_block(2, head + frame, order)


@pytest.mark.parametrize("order", ["<", ">"])
@pytest.mark.parametrize("nsec", [False, True])
def test_pcap_byte_orders_and_resolutions(tmp_path: Path, order: str, nsec: bool) -> None:
    frac = 123_456_789 if nsec else 123_456
    frames = [tcp_frame("S"), tcp_frame("SA"), tcp_frame("A"), tcp_frame("R"), tcp_frame("FA")]
    times = [(T0, frac)] * len(frames)
    path = write_pcap(tmp_path / "x.pcap", frames, order=order, nsec=nsec, times=times)
    result = read_capture(path, node="node-a")
    s = result.summary
    assert (s.frames, s.tcp, s.tcp_syn, s.tcp_rst, s.tcp_fin, s.skipped) == (5, 5, 1, 1, 1, 0)
    assert s.link_types == {"EN10MB": 5}
    ev = result.events
    assert list(ev["kind"].astype(str)) == ["tcp_syn", "tcp_synack", "tcp_rst", "tcp_fin"]
    assert list(ev["frame"]) == [1, 2, 4, 5]
    want_ns = T0 * 1_000_000_000 + (frac if nsec else frac * 1000)
    assert int(ev["time"].iloc[0].value) == want_ns  # exact, no float rounding
    assert set(ev["node"].astype(str)) == {"node-a"}
    assert set(ev["source"].astype(str)) == {"pcap"}
    assert set(ev["file"].astype(str)) == {"x.pcap"}
    row = ev.iloc[0]
    assert (row["src"], row["sport"], row["dst"], row["dport"], row["family"]) == (
        "10.244.1.7",
        40000,
        "10.96.0.10",
        8080,
        4,
    )


def test_pcapng_sections_interfaces_and_blocks(tmp_path: Path) -> None:
    raw = ip_packet("S", sport=1)
    data = b"".join(
        [
            ng_shb("<"),
            ng_idb(1, "eth0", tsresol=9, tsoffset=10),  # ns, +10 s
            ng_idb(101, "tun0"),  # default µs
            ng_epb(0, 5, tcp_frame("S", sport=2)),
            ng_block(0x0BAD, b"unknown block, skipped by its length"),
            ng_epb(1, 7, raw),
            ng_block(5, b"\0" * 16),  # interface statistics
            # a second section, big-endian, new interfaces, a power-of-two resolution
            ng_shb(">"),
            ng_idb(229, "v6", tsresol=0x80 | 10, order=">"),  # 2^-10 s
            ng_idb(1, "eth1", order=">"),
            ng_epb(0, 3 << 10, bytes(ipv6_packet()), order=">"),
            ng_spb(bytes(ipv6_packet("R")), order=">"),  # SPB: interface 0
            ng_pb(1, 1, tcp_frame("F", sport=4), order=">"),
        ]
    )
    path = tmp_path / "x.pcapng"
    path.write_bytes(data)
    result = read_capture(path)
    s = result.summary
    assert (s.frames, s.tcp, s.tcp_syn, s.tcp_rst, s.tcp_fin, s.errors) == (5, 5, 3, 1, 1, [])
    assert s.link_types == {"EN10MB": 2, "RAW": 1, "IPV6": 2}
    ev = result.events
    assert list(ev["interface"].astype(str)) == ["eth0", "tun0", "v6", "v6", "eth1"]
    assert list(ev["frame"]) == [1, 2, 3, 4, 5]
    times = [int(t.value) for t in ev["time"]]
    assert times[0] == 10 * 1_000_000_000 + 5
    assert times[1] == 7_000
    assert times[2] == 3 * 1_000_000_000
    assert times[3] == 0  # simple packet blocks carry no timestamp
    assert list(ev["sport"])[:2] == [2, 1]
    assert ev["family"].iloc[2] == 6


def ipv6_packet(flags: str = "S") -> object:
    from scapy.layers.inet6 import IPv6

    return IPv6(src="fd00::7", dst="fd00::1") / TCP(sport=5, dport=80, flags=flags)


def test_truncated_tail_reads_up_to_the_damage(tmp_path: Path) -> None:
    path = write_pcap(tmp_path / "t.pcap", [tcp_frame("S"), tcp_frame("R"), tcp_frame("S")])
    data = path.read_bytes()
    path.write_bytes(data[:-10])
    s = summarize_capture(path)
    assert (s.frames, s.tcp_syn, s.tcp_rst, s.skipped) == (2, 1, 1, 1)
    assert len(s.errors) == 1
    assert s.errors[0].startswith("truncated record at byte ")
    assert "(frame 3)" in s.errors[0]


def test_truncated_pcapng_block(tmp_path: Path) -> None:
    data = ng_shb() + ng_idb(1) + ng_epb(0, 1, tcp_frame("S")) + ng_epb(0, 2, tcp_frame("R"))
    path = tmp_path / "t.pcapng"
    path.write_bytes(data[:-7])
    s = summarize_capture(path)
    assert (s.frames, s.tcp_syn, s.tcp_rst, s.skipped) == (1, 1, 0, 1)
    assert "truncated block" in s.errors[0]


@pytest.mark.parametrize("blen", [0, 8, 13, 0x7FFFFFF0])
def test_bad_pcapng_block_length_stops_cleanly(tmp_path: Path, blen: int) -> None:
    bad = struct.pack("<II", 6, blen) + b"\0" * 40
    path = tmp_path / "z.pcapng"
    path.write_bytes(ng_shb() + ng_idb(1) + ng_epb(0, 1, tcp_frame("S")) + bad)
    s = summarize_capture(path)
    assert (s.frames, s.tcp_syn) == (1, 1)
    assert "bad block length" in s.errors[0]


def test_huge_pcap_record_length_is_damage(tmp_path: Path) -> None:
    path = write_pcap(tmp_path / "h.pcap", [tcp_frame("S")])
    path.write_bytes(path.read_bytes() + struct.pack("<IIII", T0, 0, 0xFFFFFFF0, 0xFFFFFFF0) + b"x" * 64)
    s = summarize_capture(path)
    assert (s.frames, s.tcp_syn, s.skipped) == (1, 1, 1)
    assert "corrupt record header at byte" in s.errors[0]


def test_large_file_crosses_read_windows(tmp_path: Path) -> None:
    # records straddle the 4 MiB window boundary many times; counts must not drift
    frames = [tcp_frame("S") + b"p" * 1401] * 7000  # odd size: records straddle window edges
    frames += [tcp_frame("R")] * 3
    path = write_pcap(tmp_path / "big.pcap", frames)
    batches = list(iter_event_batches(path))
    assert sum(b.num_rows for b in batches) == 7003
    s = summarize_capture(path)
    assert (s.frames, s.tcp_syn, s.tcp_rst, s.errors) == (7003, 7000, 3, [])


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"", "empty file"),
        (b"hello, this is not a capture at all" * 10, "not a pcap or pcapng capture"),
        (b"\xd4\xc3\xb2\xa1\x02\x00", "truncated pcap file header"),
    ],
)
def test_unreadable_files_raise_one_line(tmp_path: Path, content: bytes, reason: str) -> None:
    path = tmp_path / "bad.pcap"
    path.write_bytes(content)
    with pytest.raises(InputError) as info:
        summarize_capture(path)
    line = info.value.line()
    assert reason in line and str(path) in line and "\n" not in line


def test_unsupported_link_type_is_named(tmp_path: Path) -> None:
    path = write_pcap(tmp_path / "wifi.pcap", [b"\0" * 40], linktype=127)
    with pytest.raises(InputError, match=r"IEEE802_11_RADIO \(127\)"):
        summarize_capture(path)
    ng = tmp_path / "wifi.pcapng"
    ng.write_bytes(ng_shb() + ng_idb(127) + ng_epb(0, 1, b"\0" * 40))
    with pytest.raises(InputError, match="unsupported link type"):
        summarize_capture(ng)


def test_mixed_pcapng_counts_unsupported_frames_as_skipped(tmp_path: Path) -> None:
    ng = tmp_path / "mixed.pcapng"
    ng.write_bytes(
        ng_shb() + ng_idb(127) + ng_idb(1) + ng_epb(0, 1, b"\0" * 40) + ng_epb(1, 1, tcp_frame("S"))
    )
    s = summarize_capture(ng)
    assert (s.frames, s.tcp_syn, s.skipped) == (2, 1, 1)
    assert s.link_types == {"IEEE802_11_RADIO": 1, "EN10MB": 1}


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="cannot open"):
        summarize_capture(tmp_path / "nope.pcap")


def test_empty_capture_is_valid(tmp_path: Path) -> None:
    path = write_pcap(tmp_path / "none.pcap", [])
    result = read_capture(path)
    assert result.summary.frames == 0 and result.summary.errors == []
    assert len(result.events) == 0 and list(result.events.columns) == list(PACKET_COLUMNS)


def test_later_pcapng_section_of_unknown_major_version_ends_the_read(tmp_path: Path) -> None:
    first = ng_shb() + ng_idb(1) + ng_epb(0, 1, tcp_frame("S"))
    shb_v2 = ng_block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 2, 0, -1))
    path = tmp_path / "two.pcapng"
    path.write_bytes(first + shb_v2 + ng_idb(1) + ng_epb(0, 2, tcp_frame("R")))
    s = summarize_capture(path)
    assert (s.frames, s.tcp_syn, s.tcp_rst, s.skipped) == (1, 1, 0, 1)
    assert s.errors == [
        f"unsupported pcapng version 2.0 in the section header at byte {len(first)} (only 1.x exists): "
        "that section and the rest not read"
    ]
    # pcapng 1.2 (written by some tools) is read like 1.0
    v12 = ng_block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 2, -1))
    path.write_bytes(v12 + ng_idb(1) + ng_epb(0, 1, tcp_frame("S")))
    assert summarize_capture(path).tcp_syn == 1
