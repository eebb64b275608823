"""Decoding down to the first TCP header / ICMP unreachable through every supported encapsulation.

Frames are built with scapy, so the expected rows are known by construction.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from scapy.contrib.geneve import GENEVE
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import (
    ICMPv6DestUnreach,
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
    IPv6ExtHdrRouting,
)
from scapy.layers.ipsec import AH
from scapy.layers.l2 import GRE, CookedLinux, CookedLinuxV2, Dot1AD, Dot1Q, Ether
from scapy.layers.vxlan import VXLAN

from auditor.sources.capture import read_capture
from tests.unit.test_capture_formats import write_pcap

MAC = "02:00:00:00:00:02"
SYN = TCP(sport=40000, dport=8080, flags="S", seq=1000)
INNER4 = IP(src="10.244.1.7", dst="10.96.0.10") / SYN
INNER6 = IPv6(src="fd00::7", dst="fd00::10") / SYN
OUTER = IP(src="192.168.0.1", dst="192.168.0.2")


def one_event(tmp_path: Path, frame: bytes, linktype: int = 1) -> dict[str, object]:
    result = read_capture(write_pcap(tmp_path / "one.pcap", [frame], linktype=linktype))
    s = result.summary
    assert (s.frames, s.tcp, s.tcp_syn, s.skipped) == (1, 1, 1, 0)
    assert len(result.events) == 1
    row = result.events.iloc[0]
    return {k: (str(v) if k in ("src", "dst", "encap", "kind") else v) for k, v in row.items()}


CASES = [
    ("ethernet", Ether(dst=MAC) / INNER4, 1, "", 4),
    ("vlan", Ether(dst=MAC) / Dot1Q(vlan=7) / INNER4, 1, "vlan", 4),
    ("qinq", Ether(dst=MAC) / Dot1AD(vlan=1) / Dot1Q(vlan=2) / INNER6, 1, "vlan+vlan", 6),
    ("three tags", Ether(dst=MAC) / Dot1Q() / Dot1Q() / Dot1Q() / INNER4, 1, "vlan+vlan+vlan", 4),
    (
        "ip options",
        Ether(dst=MAC) / IP(src="10.244.1.7", dst="10.96.0.10", options=b"\x01" * 8) / SYN,
        1,
        "",
        4,
    ),
    ("sll", CookedLinux(proto=0x0800) / INNER4, 113, "", 4),
    ("sll vlan", CookedLinux(proto=0x8100) / Dot1Q() / INNER6, 113, "vlan", 6),
    ("sll2", CookedLinuxV2(proto=0x86DD) / INNER6, 276, "", 6),
    ("raw v4", INNER4, 101, "", 4),
    ("raw v6 dlt 12", INNER6, 12, "", 6),
    ("raw dlt 14", INNER4, 14, "", 4),
    ("ipv4 link", INNER4, 228, "", 4),
    ("ipv6 link", INNER6, 229, "", 6),
    ("null le v4", b"\x02\x00\x00\x00" + bytes(INNER4), 0, "", 4),
    ("null be v6 (30)", b"\x00\x00\x00\x1e" + bytes(INNER6), 0, "", 6),
    ("null le v6 (24)", b"\x18\x00\x00\x00" + bytes(INNER6), 0, "", 6),
    ("null le v6 (28)", b"\x1c\x00\x00\x00" + bytes(INNER6), 0, "", 6),
    ("loop", b"\x00\x00\x00\x02" + bytes(INNER4), 108, "", 4),
    (
        "v6 ext headers",
        Ether(dst=MAC)
        / IPv6(src="fd00::7", dst="fd00::10")
        / IPv6ExtHdrHopByHop()
        / IPv6ExtHdrRouting()
        / IPv6ExtHdrDestOpt()
        / IPv6ExtHdrFragment(offset=0, m=0)
        / SYN,
        1,
        "",
        6,
    ),
    ("v6 ah", Ether(dst=MAC) / IPv6(src="fd00::7", dst="fd00::10") / AH(nh=6, payloadlen=1) / SYN, 1, "", 6),
    (
        "vxlan 4789",
        Ether(dst=MAC) / OUTER / UDP(dport=4789) / VXLAN(vni=42) / Ether(dst=MAC) / INNER4,
        1,
        "vxlan",
        4,
    ),
    (
        "vxlan 8472",
        Ether(dst=MAC) / OUTER / UDP(dport=8472) / VXLAN(vni=1) / Ether(dst=MAC) / Dot1Q() / INNER6,
        1,
        "vxlan+vlan",
        6,
    ),
    (
        "geneve eth",
        Ether(dst=MAC) / OUTER / UDP(dport=6081) / GENEVE(proto=0x6558) / Ether(dst=MAC) / INNER4,
        1,
        "geneve",
        4,
    ),
    (
        "geneve opts ip",
        Ether(dst=MAC)
        / OUTER
        / UDP(dport=6081)
        / GENEVE(proto=0x0800, optionlen=2, options=b"\x01" * 8)
        / INNER4,
        1,
        "geneve",
        4,
    ),
    ("gre ip", Ether(dst=MAC) / OUTER / GRE(proto=0x0800) / INNER4, 1, "gre", 4),
    (
        "gre key seq csum",
        Ether(dst=MAC)
        / OUTER
        / GRE(proto=0x86DD, chksum_present=1, key_present=1, seqnum_present=1, key=5, seqence_number=9)
        / INNER6,
        1,
        "gre",
        6,
    ),
    ("gre teb", Ether(dst=MAC) / OUTER / GRE(proto=0x6558) / Ether(dst=MAC) / INNER4, 1, "gre", 4),
    ("ipip", Ether(dst=MAC) / IP(src="192.168.0.1", dst="192.168.0.2", proto=4) / INNER4, 1, "ipip", 4),
    ("6in4", Ether(dst=MAC) / IP(src="192.168.0.1", dst="192.168.0.2", proto=41) / INNER6, 1, "ipip", 6),
    (
        "vlan+vxlan",
        Ether(dst=MAC) / Dot1Q() / OUTER / UDP(dport=4789) / VXLAN() / Ether(dst=MAC) / INNER4,
        1,
        "vlan+vxlan",
        4,
    ),
]


@pytest.mark.parametrize(("name", "pkt", "linktype", "encap", "family"), CASES, ids=[c[0] for c in CASES])
def test_first_tcp_header_is_found(
    tmp_path: Path, name: str, pkt: object, linktype: int, encap: str, family: int
) -> None:
    row = one_event(tmp_path, bytes(pkt), linktype)  # type: ignore[call-overload]
    assert row["kind"] == "tcp_syn"
    assert row["encap"] == encap
    assert row["family"] == family
    assert (row["sport"], row["dport"], row["seq"], row["tcp_flags"]) == (40000, 8080, 1000, 0x02)
    assert row["src"] == ("10.244.1.7" if family == 4 else "fd00::7")
    assert row["dst"] == ("10.96.0.10" if family == 4 else "fd00::10")


def test_rst_wins_and_payload_length(tmp_path: Path) -> None:
    frames = [
        bytes(Ether(dst=MAC) / IP(src="1.1.1.1", dst="2.2.2.2") / TCP(flags="RA", ack=77) / b"abc"),
        bytes(Ether(dst=MAC) / IP(src="1.1.1.1", dst="2.2.2.2") / TCP(flags="SR")),
        bytes(Ether(dst=MAC) / IP(src="1.1.1.1", dst="2.2.2.2") / TCP(flags="FPA") / (b"z" * 10)),
        bytes(Ether(dst=MAC) / IP(src="1.1.1.1", dst="2.2.2.2") / TCP(flags="PA") / b"data"),
    ]
    result = read_capture(write_pcap(tmp_path / "k.pcap", frames))
    s = result.summary
    assert (s.tcp, s.tcp_rst, s.tcp_syn, s.tcp_fin) == (4, 2, 1, 1)
    ev = result.events
    assert list(ev["kind"].astype(str)) == ["tcp_rst", "tcp_rst", "tcp_fin"]
    assert list(ev["payload_len"]) == [3, 0, 10]
    assert ev["ack"].iloc[0] == 77


def test_fragments_only_the_first_has_l4(tmp_path: Path) -> None:
    frames = [
        bytes(Ether(dst=MAC) / IP(src="1.1.1.1", dst="2.2.2.2", frag=3) / TCP(flags="S")),  # later fragment
        bytes(
            Ether(dst=MAC)
            / IPv6(src="fd00::1", dst="fd00::2")
            / IPv6ExtHdrFragment(offset=5)
            / TCP(flags="S")
        ),
        bytes(Ether(dst=MAC) / IP(src="1.1.1.1", dst="2.2.2.2", flags="DF") / TCP(flags="S")),
    ]
    s = read_capture(write_pcap(tmp_path / "f.pcap", frames)).summary
    assert (s.frames, s.tcp, s.tcp_syn) == (3, 1, 1)


@pytest.mark.parametrize("v6", [False, True])
def test_icmp_unreachable_quotes_the_failed_connection(tmp_path: Path, v6: bool) -> None:
    if v6:
        quoted = IPv6(src="fd00::7", dst="fd00::10") / TCP(sport=40000, dport=8080, flags="S", seq=5)
        pkt = Ether(dst=MAC) / IPv6(src="fd00::99", dst="fd00::7") / ICMPv6DestUnreach(code=4) / quoted
    else:
        quoted = IP(src="10.244.1.7", dst="10.96.0.10") / TCP(sport=40000, dport=8080, flags="S", seq=5)
        pkt = (
            Ether(dst=MAC) / Dot1Q() / IP(src="10.244.9.9", dst="10.244.1.7") / ICMP(type=3, code=3) / quoted
        )
    result = read_capture(write_pcap(tmp_path / "u.pcap", [bytes(pkt)]))
    s = result.summary
    # TCP quoted inside an ICMP error is an ICMP event, not a TCP frame
    assert (s.frames, s.tcp, s.tcp_syn, s.icmp_unreachable) == (1, 0, 0, 1)
    row = result.events.iloc[0]
    assert str(row["kind"]) == "icmp_unreachable"
    assert (row["src"], row["sport"], row["dst"], row["dport"]) == (
        ("fd00::7", 40000, "fd00::10", 8080) if v6 else ("10.244.1.7", 40000, "10.96.0.10", 8080)
    )
    assert row["reporter"] == ("fd00::99" if v6 else "10.244.9.9")
    assert (row["icmp_type"], row["icmp_code"]) == ((1, 4) if v6 else (3, 3))
    assert row["seq"] == 5
    assert row["encap"] == ("" if v6 else "vlan")


def test_other_icmp_and_udp_are_not_events(tmp_path: Path) -> None:
    frames = [
        bytes(Ether(dst=MAC) / IP() / ICMP(type=8)),
        bytes(Ether(dst=MAC) / IP() / ICMP(type=11) / IP() / TCP()),
        bytes(Ether(dst=MAC) / IP() / UDP(dport=53) / b"q"),
        bytes(Ether(dst=MAC, type=0x0806) / (b"\0" * 28)),
        bytes(Ether(dst=MAC) / IP(src="1.1.1.1", dst="2.2.2.2") / TCP(flags="S"))[
            : 14 + 20 + 10
        ],  # flags cut off
    ]
    result = read_capture(write_pcap(tmp_path / "o.pcap", frames))
    s = result.summary
    assert (s.frames, s.tcp, s.icmp_unreachable, s.skipped) == (5, 0, 0, 0)
    assert len(result.events) == 0
