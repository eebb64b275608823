"""Decoding down to the first TCP header / ICMP unreachable through every supported encapsulation.

Frames are built with scapy, so the expected rows are known by construction; the MPLS, PPPoE and 802.2
SNAP frames and the malformed headers are byte literals, each with tcpdump's line for it.
"""

from __future__ import annotations

import struct
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
from tests.unit.test_capture_formats import T0, write_pcap

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
    assert row["tcp_flags"] == 0x02  # the quoted segment's flags: a SYN
    assert row["encap"] == ("" if v6 else "vlan")


def test_icmp_unreachable_quoting_only_eight_bytes_has_no_flags(tmp_path: Path) -> None:
    # RFC 792 asks for the first 8 bytes of the datagram: ports and sequence number, no flags
    quoted = bytes(IP(src="10.244.1.7", dst="10.244.2.5") / TCP(sport=40000, dport=8080, flags="FA", seq=9))[:28]
    pkt = Ether(dst=MAC) / IP(src="10.244.9.9", dst="10.244.1.7") / ICMP(type=3, code=1) / quoted
    row = read_capture(write_pcap(tmp_path / "u8.pcap", [bytes(pkt)])).events.iloc[0]
    assert (row["sport"], row["dport"], row["seq"], row["tcp_flags"]) == (40000, 8080, 9, 0)


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


# ---- byte-literal frames: MPLS, PPPoE and 802.2 SNAP down to TCP; malformed IP/TCP headers ----------
# Written out header by header; the comment above each is tcpdump 4.99's line for it (tcpdump -nn -e).

ETH = "02 00 00 00 00 02  02 00 00 00 00 01"  # dst, src
SYN4 = (
    "45 00 00 28 00 01 00 00 40 06 64 6b  0a f4 01 07  0a 60 00 0a"  # IPv4 10.244.1.7 > 10.96.0.10
    "9c 40 1f 90  00 00 03 e8  00 00 00 00  50 02 fa f0  de d4 00 00"  # TCP 40000 > 8080 [S] seq 1000
)
SYN6 = (
    "60 00 00 00  00 14 06 40"  # IPv6, payload length 20, next header TCP, hop limit 64
    "fd 00 00 00 00 00 00 00 00 00 00 00 00 00 00 07  fd 00 00 00 00 00 00 00 00 00 00 00 00 00 00 10"
    "9c 40 1f 90  00 00 03 e8  00 00 00 00  50 02 fa f0  fb 20 00 00"  # TCP 40000 > 8080 [S] seq 1000
)
RST4 = (
    "45 00 00 28 00 02 00 00 40 06 64 6a  0a 60 00 0a  0a f4 01 07"  # IPv4 10.96.0.10 > 10.244.1.7
    "1f 90 9c 40  00 00 00 00  00 00 03 e9  50 14 00 00  d9 b2 00 00"  # TCP 8080 > 40000 [R.] ack 1001
)

# 02:00:00:00:00:01 > 02:00:00:00:00:02, ethertype MPLS unicast (0x8847), length 58: MPLS (label 16, tc 0,
#   [S], ttl 64) 10.244.1.7.40000 > 10.96.0.10.8080: Flags [S], seq 1000, win 64240, length 0
MPLS_SYN = bytes.fromhex(ETH + "88 47" + "00 01 01 40" + SYN4)
# 02:00:00:00:00:01 > 02:00:00:00:00:02, ethertype MPLS multicast (0x8848), length 82: MPLS (label 1000,
#   tc 0, ttl 64) (label 17, tc 0, [S], ttl 64) fd00::7.40000 > fd00::10.8080: Flags [S], seq 1000, win
#   64240, length 0
MPLS2_SYN6 = bytes.fromhex(ETH + "88 48" + "00 3e 80 40" + "00 01 11 40" + SYN6)
# 02:00:00:00:00:01 > 02:00:00:00:00:02, ethertype 802.1Q (0x8100), length 66: vlan 7, p 0, ethertype MPLS
#   unicast (0x8847), MPLS (label 1000, tc 0, ttl 64) (label 17, tc 0, [S], ttl 64) 10.244.1.7.40000 >
#   10.96.0.10.8080: Flags [S], seq 1000, win 64240, length 0
VLAN_MPLS2_SYN = bytes.fromhex(ETH + "81 00 00 07 88 47" + "00 3e 80 40" + "00 01 11 40" + SYN4)
# 02:00:00:00:00:01 > 02:00:00:00:00:02, ethertype PPPoE S (0x8864), length 62: PPPoE  [ses 0x11] IP
#   (0x0021), length 42: 10.96.0.10.8080 > 10.244.1.7.40000: Flags [R.], seq 0, ack 1001, win 0, length 0
PPPOE_RST = bytes.fromhex(ETH + "88 64" + "11 00 00 11 00 2a" + "00 21" + RST4)
# 02:00:00:00:00:01 > 02:00:00:00:00:02, ethertype 802.1Q (0x8100), length 90: vlan 209, p 0, ethertype
#   802.1Q (0x8100), vlan 7, p 0, ethertype PPPoE S (0x8864), PPPoE  [ses 0x11] IP6 (0x0057), length 62:
#   fd00::7.40000 > fd00::10.8080: Flags [S], seq 1000, win 64240, length 0
QINQ_PPPOE_SYN6 = bytes.fromhex(ETH + "81 00 00 d1  81 00 00 07  88 64" + "11 00 00 11 00 3e 00 57" + SYN6)
# 02:00:00:00:00:01 > 02:00:00:00:00:02, 802.3, length 48: LLC, dsap SNAP (0xaa) Individual, ssap SNAP
#   (0xaa) Command, ctrl 0x03: oui Ethernet (0x000000), ethertype IPv4 (0x0800), length 40: 10.244.1.7.40000
#   > 10.96.0.10.8080: Flags [S], seq 1000, win 64240, length 0
SNAP_SYN = bytes.fromhex(ETH + "00 30" + "aa aa 03 00 00 00 08 00" + SYN4)
# (Linux cooked, protocol 0x0004) Out 02:00:00:00:00:01 802.2, length 84: LLC, dsap SNAP (0xaa) Individual,
#   ssap SNAP (0xaa) Command, ctrl 0x03: oui Ethernet (0x000000), ethertype IPv6 (0x86dd), length 60:
#   fd00::7.40000 > fd00::10.8080: Flags [S], seq 1000, win 64240, length 0
SLL_SNAP_SYN6 = bytes.fromhex(
    "00 04 00 01 00 06 02 00 00 00 00 01 00 00 00 04" + "aa aa 03 00 00 00 86 dd" + SYN6
)

ENCAP_FRAMES = [  # name, frame, link type, encap column, kind, IP family
    ("mpls", MPLS_SYN, 1, "mpls", "tcp_syn", 4),
    ("mpls 2 labels multicast v6", MPLS2_SYN6, 1, "mpls", "tcp_syn", 6),
    ("vlan mpls 2 labels", VLAN_MPLS2_SYN, 1, "vlan+mpls", "tcp_syn", 4),
    ("pppoe rst", PPPOE_RST, 1, "pppoe", "tcp_rst", 4),
    ("qinq pppoe v6", QINQ_PPPOE_SYN6, 1, "vlan+vlan+pppoe", "tcp_syn", 6),
    ("snap", SNAP_SYN, 1, "snap", "tcp_syn", 4),
    ("sll llc snap v6", SLL_SNAP_SYN6, 113, "snap", "tcp_syn", 6),
]


@pytest.mark.parametrize(
    ("name", "frame", "linktype", "encap", "kind", "family"), ENCAP_FRAMES, ids=[f[0] for f in ENCAP_FRAMES]
)
def test_encapsulations_down_to_tcp(
    tmp_path: Path, name: str, frame: bytes, linktype: int, encap: str, kind: str, family: int
) -> None:
    result = read_capture(write_pcap(tmp_path / "e.pcap", [frame], linktype=linktype))
    s = result.summary
    rst = kind == "tcp_rst"
    assert (s.frames, s.tcp, s.tcp_syn, s.tcp_rst) == (1, 1, int(not rst), int(rst))
    assert (s.skipped, s.malformed, s.errors) == (0, 0, [])
    row = result.events.iloc[0]
    assert (str(row["kind"]), str(row["encap"]), row["family"]) == (kind, encap, family)
    client, pod = ("fd00::7", "fd00::10") if family == 6 else ("10.244.1.7", "10.96.0.10")
    if rst:
        assert (row["src"], row["sport"], row["dst"], row["dport"]) == (pod, 8080, client, 40000)
        assert (row["ack"], row["tcp_flags"]) == (1001, 0x14)
    else:
        assert (row["src"], row["sport"], row["dst"], row["dport"]) == (client, 40000, pod, 8080)
        assert (row["seq"], row["tcp_flags"]) == (1000, 0x02)


def test_encapsulations_that_are_not_ip_are_not_tcp(tmp_path: Path) -> None:
    frames = [
        bytes.fromhex(ETH + "88 47" + "00 00 d1 40" + "00 00 00 00" + SYN4),  # GAL (13) + control word
        bytes.fromhex(ETH + "88 47" + "00 01 00 40" + "00 01 00 40"),  # no bottom of stack before the end
        bytes.fromhex(ETH + "88 64" + "11 00 00 11 00 2a" + "c0 21" + RST4),  # PPP LCP, not IP
        bytes.fromhex(ETH + "00 30" + "aa aa 03 00 00 0c 08 00" + SYN4),  # Cisco OUI: 0x0800 is no ethertype
        bytes.fromhex(ETH + "00 30" + "42 42 03 00 00 00 08 00" + SYN4),  # STP's SAPs, not SNAP
    ]
    s = read_capture(write_pcap(tmp_path / "n.pcap", frames)).summary
    assert (s.frames, s.tcp, s.skipped, s.malformed) == (5, 0, 0, 0)


def test_ethernet_padding_after_pppoe_and_802_3_length(tmp_path: Path) -> None:
    # the PPPoE length and the 802.3 length end the frame: trailing bytes are padding, not payload
    frames = [
        bytes.fromhex(ETH + "88 64" + "11 00 00 11 00 2a" + "00 21" + RST4) + b"\xee" * 8,
        bytes.fromhex(ETH + "00 30" + "aa aa 03 00 00 00 08 00" + SYN4) + b"\xee" * 8,
    ]
    ev = read_capture(write_pcap(tmp_path / "p.pcap", frames)).events
    assert list(ev["payload_len"]) == [0, 0]
    assert list(ev["encap"].astype(str)) == ["pppoe", "snap"]


def _pcap_with_lengths(path: Path, records: list[tuple[bytes, int]]) -> Path:
    """A pcap file whose records give (captured bytes, length on the wire)."""
    out = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, 1)]
    for i, (frame, wire) in enumerate(records):
        out.append(struct.pack("<IIII", T0 + i, 0, len(frame), wire) + frame)
    path.write_bytes(b"".join(out))
    return path


# 02:00:00:00:00:01 > 02:00:00:00:00:02, ethertype IPv4 (0x0800), length 54: bad-len 0
TOTAL_LENGTH_0 = bytes.fromhex(
    ETH + "08 00" + "45 00 00 00 00 04 00 00 40 06 64 90  0a f4 01 07  0a 60 00 0a"
    "9c 40 1f 90  00 00 03 e9  00 00 00 00  50 04 00 00  d9 d6 00 00"  # TCP 40000 > 8080 [R] seq 1001
)
MALFORMED = [
    ("ipv4 total length 0", TOTAL_LENGTH_0),
    # 02:00:00:00:00:01 > 02:00:00:00:00:02, ethertype IPv4 (0x0800), length 54: bad-len 19
    ("ipv4 total length < header", TOTAL_LENGTH_0[:16] + b"\x00\x13" + TOTAL_LENGTH_0[18:]),
    # 02:00:00:00:00:01 > 02:00:00:00:00:02, ethertype IPv4 (0x0800), length 54: bad-hlen 16
    ("ipv4 ihl 4", TOTAL_LENGTH_0[:14] + b"\x44\x00\x00\x28" + TOTAL_LENGTH_0[18:]),
    # 02:00:00:00:00:01 > 02:00:00:00:00:02, ethertype IPv4 (0x0800), length 54: 10.244.1.7.40000 >
    #   10.96.0.10.8080:  tcp 4 [bad hdr length 16 - too short, < 20]
    ("tcp data offset 4", bytes.fromhex(ETH + "08 00" + SYN4)[:46] + b"\x40\x02" + bytes(6)),
    # 02:00:00:00:00:01 > 02:00:00:00:00:02, ethertype IPv6 (0x86dd), length 74: fd00::7 > fd00::10: [|tcp]
    #   (payload length 0 and no hop-by-hop jumbo option, next header TCP)
    ("ipv6 payload length 0", bytes.fromhex(ETH + "86 dd" + SYN6.replace("00 14 06 40", "00 00 06 40"))),
    # 02:00:00:00:00:01 > 02:00:00:00:00:02, ethertype MPLS unicast (0x8847), length 58: MPLS (label 16,
    #   tc 0, [S], ttl 64) bad-len 0
    ("mpls ipv4 total length 0", bytes.fromhex(ETH + "88 47" + "00 01 01 40") + TOTAL_LENGTH_0[14:]),
]


@pytest.mark.parametrize(("name", "frame"), MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_ip_or_tcp_header_is_not_tcp(tmp_path: Path, name: str, frame: bytes) -> None:
    result = read_capture(write_pcap(tmp_path / "m.pcap", [bytes.fromhex(ETH + "08 00" + SYN4), frame]))
    s = result.summary
    assert (s.frames, s.tcp, s.tcp_syn, s.tcp_rst, s.skipped, s.malformed) == (2, 1, 1, 0, 1, 1)
    assert len(result.events) == 1
    assert s.errors == [
        "1 frame(s) with a malformed IP or TCP header (first: frame 2) not decoded, counted as skipped"
    ]


def test_snaplen_cut_is_not_malformed_and_big_tcp_is_tcp(tmp_path: Path) -> None:
    syn = bytes.fromhex(ETH + "08 00" + SYN4)
    # Linux BIG TCP (IPv4): a GSO packet over 64 KiB has total length 0; tcpdump:
    # 02:00:00:00:00:01 > 02:00:00:00:00:02, ethertype IPv4 (0x0800), length 70054: bad-len 0
    big = bytearray(TOTAL_LENGTH_0 + b"d" * 70000)
    big[14 + 33] = 0x11  # FIN/ACK
    records = [
        (syn[:20], len(syn)),  # IPv4 header cut by a 20-byte snaplen: not decoded, not damage
        (syn[:46], len(syn)),  # TCP flags cut off
        (bytes(big), len(big)),
        (bytes(big[:54]), len(big)),  # the same, captured with -s 54
        (TOTAL_LENGTH_0, len(TOTAL_LENGTH_0) + 30),  # length 0 on an 84-byte frame: still malformed
    ]
    result = read_capture(_pcap_with_lengths(tmp_path / "c.pcap", records))
    s = result.summary
    assert (s.frames, s.tcp, s.tcp_fin, s.skipped, s.malformed) == (5, 2, 2, 1, 1)
    assert list(result.events["payload_len"]) == [70000, 70000]
    assert "first: frame 5" in s.errors[0]
