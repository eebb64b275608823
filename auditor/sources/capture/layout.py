"""The packed event record written by ``auditor/sources/_scan.c`` and the names of its codes."""

from __future__ import annotations

import numpy as np

# Mirrors ``event_t`` in _scan.c (96 bytes, native byte order, no padding).
EVENT_DTYPE = np.dtype(
    [
        ("time_ns", "<i8"),
        ("frame", "<u8"),
        ("src", "V16"),
        ("dst", "V16"),
        ("reporter", "V16"),
        ("seq", "<u4"),
        ("ack", "<u4"),
        ("payload_len", "<u4"),
        ("encap", "<u4"),
        ("iface", "<u4"),
        ("sport", "<u2"),
        ("dport", "<u2"),
        ("tcp_flags", "<u2"),
        ("kind", "u1"),
        ("family", "u1"),
        ("icmp_type", "u1"),
        ("icmp_code", "u1"),
        ("rfamily", "u1"),
        ("pad", "u1"),
    ]
)

# kind codes 1..5 in _scan.c, in this order
KIND_NAMES: tuple[str, ...] = ("tcp_syn", "tcp_synack", "tcp_rst", "tcp_fin", "icmp_unreachable")

# encap nibble codes in _scan.c (outermost first in the packed chain); "mpls" is one label stack
ENCAP_NAMES: dict[int, str] = {
    1: "vlan",
    2: "vxlan",
    3: "geneve",
    4: "gre",
    5: "ipip",
    6: "mpls",
    7: "pppoe",
    8: "snap",
}

# counters array layout in _scan.c (C_MALFORMED_FIRST: the frame number of the first malformed one)
(
    C_FRAMES,
    C_TCP,
    C_RST,
    C_SYN,
    C_FIN,
    C_UNREACH,
    C_SKIPPED,
    C_UNSUPPORTED,
    C_MALFORMED,
    C_MALFORMED_FIRST,
) = range(10)
N_COUNTERS = 10

# interface table layout in _scan.c (int64 fields per interface)
IF_LINKTYPE, IF_RES_KIND, IF_RES_EXP, IF_OFFSET_S, IF_FRAMES = range(5)
IF_FIELDS = 8

SUPPORTED_LINKTYPES: dict[int, str] = {
    0: "NULL",
    1: "EN10MB",
    12: "RAW",
    14: "RAW",
    101: "RAW",
    108: "LOOP",
    113: "LINUX_SLL",
    228: "IPV4",
    229: "IPV6",
    276: "LINUX_SLL2",
}

# a few unsupported ones, to name them in messages (libpcap's names)
OTHER_LINKTYPES: dict[int, str] = {
    6: "IEEE802",
    7: "ARCNET_BSD",
    8: "SLIP",
    9: "PPP",
    10: "FDDI",
    50: "PPP_HDLC",
    51: "PPP_ETHER",
    104: "C_HDLC",
    105: "IEEE802_11",
    107: "FRELAY",
    119: "PRISM_HEADER",
    127: "IEEE802_11_RADIO",
    129: "ARCNET_LINUX",
    138: "APPLE_IP_OVER_IEEE1394",
    143: "DOCSIS",
    149: "USER2",
    163: "IEEE802_11_RADIO_AVS",
    192: "PPI",
    195: "IEEE802_15_4",
    220: "USB_LINUX_MMAPPED",
    239: "NFLOG",
    258: "PKTAP",
    271: "VSOCK",
}


def linktype_name(linktype: int) -> str:
    """libpcap's name of a link type (LINKTYPE_<n> if unknown here)."""
    return SUPPORTED_LINKTYPES.get(linktype) or OTHER_LINKTYPES.get(linktype) or f"LINKTYPE_{linktype}"


def encap_name(code: int) -> str:
    """Decode the packed nibble chain into 'vlan+vxlan' (outermost first)."""
    parts: list[str] = []
    while code:
        parts.append(ENCAP_NAMES.get(code & 0xF, "?"))
        code >>= 4
    return "+".join(reversed(parts))
