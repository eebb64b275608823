"""Which tracepoints each probe family hooks, and the ``-D`` flags that tell its C code where fields are.

Pure: everything here works on parsed format files and BTF, so it is tested without root.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

from auditor.sources.live.btf import Btf
from auditor.sources.live.tracefs import TracepointFormat


@dataclass(frozen=True, slots=True)
class Hook:
    """One tracepoint: ``system:event``, the cflags prefix of its fields and the C function attached."""

    system: str
    event: str
    prefix: str
    fn_name: str
    required: tuple[str, ...]

    @property
    def define(self) -> str:
        return f"TP_{self.event.upper()}"


_SPLIT_ADDRS = ("sport", "dport", "saddr", "daddr", "saddr_v6", "daddr_v6")

# family name -> (C file, hooks)
FAMILIES: dict[str, tuple[str, tuple[Hook, ...]]] = {
    "tcp_reset": (
        "tcp_reset.c",
        (
            Hook("tcp", "tcp_send_reset", "SR", "on_tcp_send_reset", ("skaddr", "saddr", "daddr")),
            Hook("tcp", "tcp_receive_reset", "RR", "on_tcp_receive_reset", ("skaddr", *_SPLIT_ADDRS)),
        ),
    ),
    "sock_state": (
        "sock_state.c",
        (
            Hook(
                "sock",
                "inet_sock_set_state",
                "SS",
                "on_inet_sock_set_state",
                ("skaddr", "oldstate", "newstate", "family", *_SPLIT_ADDRS),
            ),
        ),
    ),
    "icmp_send": (
        "icmp_send.c",
        (
            Hook(
                "icmp",
                "icmp_send",
                "IS",
                "on_icmp_send",
                ("skbaddr", "type", "code", "saddr", "daddr", "sport", "dport"),
            ),
        ),
    ),
    "skb_drop": (
        "skb_drop.c",
        (Hook("skb", "kfree_skb", "KF", "on_kfree_skb", ("skbaddr", "location", "protocol")),),
    ),
}

# -D name -> (struct, member path) read from BTF
KERNEL_OFFSETS: dict[str, tuple[str, str]] = {
    "OFF_SK_NET": ("sock_common", "skc_net"),
    "OFF_SK_STATE": ("sock_common", "skc_state"),
    "OFF_NET_INUM": ("net", "ns.inum"),
    "OFF_SKB_DEV": ("sk_buff", "dev"),
    "OFF_SKB_SK": ("sk_buff", "sk"),
    "OFF_SKB_HEAD": ("sk_buff", "head"),
    "OFF_SKB_NETWORK_HEADER": ("sk_buff", "network_header"),
    "OFF_DEV_NET": ("net_device", "nd_net"),
}


# -D name -> (struct, member path) the raw tracepoint program of tcp_send_reset reads besides (a socket's
# own addresses, as the tracepoint's record has them); without them that program is not used
RAW_SEND_RESET_OFFSETS: dict[str, tuple[str, str]] = {
    "OFF_SK_FAMILY": ("sock_common", "skc_family"),
    "OFF_INET_SPORT": ("inet_sock", "inet_sport"),  # skc_num is 0 once a closed socket left its port
    "OFF_SK_DPORT": ("sock_common", "skc_dport"),
    "OFF_SK_RCV_SADDR": ("sock_common", "skc_rcv_saddr"),
    "OFF_SK_DADDR": ("sock_common", "skc_daddr"),
    "OFF_SK_V6_RCV_SADDR": ("sock_common", "skc_v6_rcv_saddr"),
    "OFF_SK_V6_DADDR": ("sock_common", "skc_v6_daddr"),
}


class LayoutError(ValueError):
    """A tracepoint lacks a field the probe needs: that signal is disabled."""


def hook_cflags(fmt: TracepointFormat, hook: Hook) -> list[str]:
    """``-D<P>_OFF_<FIELD>=n`` and ``-D<P>_HAS_<FIELD>=1`` for every field, plus layout switches."""
    missing = [name for name in hook.required if not fmt.has(name)]
    sockaddr = fmt.has("saddr") and fmt.field("saddr").size >= 16
    if hook.prefix == "SR" and not sockaddr:
        missing += [name for name in _SPLIT_ADDRS if not fmt.has(name)]
    if missing:
        raise LayoutError(f"{hook.system}:{hook.event} has no field {', '.join(missing)}")
    end = max(f.offset + f.size for f in fmt.fields.values())
    flags = [f"-D{hook.define}=1", f"-D{hook.prefix}_REC_SIZE={(end + 7) // 8 * 8}"]
    for f in fmt.fields.values():
        if f.name.startswith("common_"):
            continue
        key = f.name.upper()
        flags += [f"-D{hook.prefix}_OFF_{key}={f.offset}", f"-D{hook.prefix}_HAS_{key}=1"]
    if sockaddr:
        flags.append(f"-D{hook.prefix}_SOCKADDR=1")
    return flags


def kernel_offset_cflags(btf: Btf) -> list[str]:
    """Struct member offsets of the running kernel; KeyError names the first one missing."""
    return [f"-D{name}={btf.member_offset(s, path)}" for name, (s, path) in KERNEL_OFFSETS.items()]


def raw_send_reset_cflags(btf: Btf) -> list[str] | None:
    """``-DSR_RAW=1`` and the offsets of :data:`RAW_SEND_RESET_OFFSETS`; None when the BTF lacks one
    (e.g. no IPv6 in the kernel): the record-based program is used then."""
    try:
        return ["-DSR_RAW=1"] + [
            f"-D{name}={btf.member_offset(s, path)}" for name, (s, path) in RAW_SEND_RESET_OFFSETS.items()
        ]
    except KeyError:
        return None


POD_CIDR_STRUCT = struct.Struct("<IIII8s8s8s8s")  # struct pod_cidr in skb_drop.c


def pack_pod_cidr(cidr: str) -> bytes:
    """One ``struct pod_cidr`` entry: network and mask in network byte order; ValueError if bad."""
    net = ipaddress.ip_network(cidr, strict=False)
    addr, mask = net.network_address.packed, net.netmask.packed
    if net.version == 4:
        v4_net, v4_mask = struct.unpack("<I", addr)[0], struct.unpack("<I", mask)[0]
        return POD_CIDR_STRUCT.pack(2, v4_net, v4_mask, 0, b"", b"", b"", b"")
    return POD_CIDR_STRUCT.pack(10, 0, 0, 0, addr[:8], addr[8:], mask[:8], mask[8:])
