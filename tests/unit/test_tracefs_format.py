"""Tracepoint format parsing, the -D flags built from it, and BTF offsets: no root needed."""

from __future__ import annotations

import struct

import pytest

from auditor.sources.live.btf import ENUM, INT, PTR, STRUCT, UNION, parse_btf
from auditor.sources.live.environment import kernel_supports_ringbuf, pick_headers, split_tree_cflags
from auditor.sources.live.layout import FAMILIES, LayoutError, hook_cflags, pack_pod_cidr
from auditor.sources.live.tracefs import parse_format

# tcp:tcp_send_reset on 5.15: split addresses, host-order ports, no reason.
SEND_RESET_5_15 = """name: tcp_send_reset
ID: 1453
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:unsigned char common_flags;\toffset:2;\tsize:1;\tsigned:0;
\tfield:unsigned char common_preempt_count;\toffset:3;\tsize:1;\tsigned:0;
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;

\tfield:const void * skbaddr;\toffset:8;\tsize:8;\tsigned:0;
\tfield:const void * skaddr;\toffset:16;\tsize:8;\tsigned:0;
\tfield:int state;\toffset:24;\tsize:4;\tsigned:1;
\tfield:__u16 sport;\toffset:28;\tsize:2;\tsigned:0;
\tfield:__u16 dport;\toffset:30;\tsize:2;\tsigned:0;
\tfield:__u16 family;\toffset:32;\tsize:2;\tsigned:0;
\tfield:__u8 saddr[4];\toffset:34;\tsize:4;\tsigned:0;
\tfield:__u8 daddr[4];\toffset:38;\tsize:4;\tsigned:0;
\tfield:__u8 saddr_v6[16];\toffset:42;\tsize:16;\tsigned:0;
\tfield:__u8 daddr_v6[16];\toffset:58;\tsize:16;\tsigned:0;

print fmt: "family=%s sport=%hu", __print_symbolic(REC->family, { 2, "AF_INET" }), REC->sport
"""

# tcp:tcp_send_reset on 6.10+: sockaddr-sized addresses and an enum sk_rst_reason.
SEND_RESET_6_10 = """name: tcp_send_reset
ID: 2280
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:unsigned char common_flags;\toffset:2;\tsize:1;\tsigned:0;
\tfield:unsigned char common_preempt_count;\toffset:3;\tsize:1;\tsigned:0;
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;

\tfield:const void * skbaddr;\toffset:8;\tsize:8;\tsigned:0;
\tfield:const void * skaddr;\toffset:16;\tsize:8;\tsigned:0;
\tfield:int state;\toffset:24;\tsize:4;\tsigned:1;
\tfield:enum sk_rst_reason reason;\toffset:28;\tsize:4;\tsigned:0;
\tfield:__u8 saddr[sizeof(struct sockaddr_in6)];\toffset:32;\tsize:28;\tsigned:0;
\tfield:__u8 daddr[sizeof(struct sockaddr_in6)];\toffset:60;\tsize:28;\tsigned:0;

print fmt: "skbaddr=%p skaddr=%p src=%pISpc dest=%pISpc state=%s reason=%s", REC->skbaddr
"""

KFREE_SKB = """name: kfree_skb
ID: 2310
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:void * skbaddr;\toffset:8;\tsize:8;\tsigned:0;
\tfield:void * location;\toffset:16;\tsize:8;\tsigned:0;
\tfield:unsigned short protocol;\toffset:32;\tsize:2;\tsigned:0;
\tfield:enum skb_drop_reason reason;\toffset:36;\tsize:4;\tsigned:0;

print fmt: "reason: %s", __print_symbolic(REC->reason, { 2, "NOT_SPECIFIED" }, { 3, "NO_SOCKET" },\
 { 0x10, "IP_RPFILTER" })
"""


def _hook(event: str):
    return next(h for _, hooks in FAMILIES.values() for h in hooks if h.event == event)


def test_old_layout_fields() -> None:
    fmt = parse_format(SEND_RESET_5_15)
    assert (fmt.name, fmt.event_id) == ("tcp_send_reset", 1453)
    assert fmt.field("sport").offset == 28 and fmt.field("sport").size == 2
    assert fmt.field("saddr").array_len == "4" and fmt.field("saddr").size == 4
    assert fmt.field("saddr_v6").offset == 42
    assert fmt.field("state").signed and fmt.field("state").c_type == "int"
    assert fmt.field("skaddr").c_type == "const void *"
    assert not fmt.has("reason")


def test_new_layout_fields() -> None:
    fmt = parse_format(SEND_RESET_6_10)
    saddr = fmt.field("saddr")
    assert (saddr.offset, saddr.size, saddr.array_len) == (32, 28, "sizeof(struct sockaddr_in6)")
    assert fmt.field("reason").c_type == "enum sk_rst_reason"
    assert fmt.field("daddr").offset == 60
    assert not fmt.has("sport")


def test_cflags_old_layout_uses_split_addresses() -> None:
    flags = hook_cflags(parse_format(SEND_RESET_5_15), _hook("tcp_send_reset"))
    assert "-DTP_TCP_SEND_RESET=1" in flags
    assert "-DSR_OFF_SPORT=28" in flags and "-DSR_OFF_DADDR_V6=58" in flags
    assert "-DSR_HAS_FAMILY=1" in flags
    assert "-DSR_REC_SIZE=80" in flags  # daddr_v6 ends at 74, rounded up to 8
    assert "-DSR_SOCKADDR=1" not in flags and "-DSR_HAS_REASON=1" not in flags
    assert not any("COMMON" in f for f in flags)


def test_cflags_new_layout_uses_sockaddr_and_reason() -> None:
    flags = hook_cflags(parse_format(SEND_RESET_6_10), _hook("tcp_send_reset"))
    assert "-DSR_SOCKADDR=1" in flags
    assert "-DSR_OFF_REASON=28" in flags and "-DSR_HAS_REASON=1" in flags
    assert "-DSR_OFF_SADDR=32" in flags and "-DSR_OFF_DADDR=60" in flags
    assert "-DSR_REC_SIZE=88" in flags  # daddr ends at 60 + 28, copied whole to the stack


def test_missing_field_disables_hook() -> None:
    text = SEND_RESET_5_15.replace("\tfield:__u16 dport;\toffset:30;\tsize:2;\tsigned:0;\n", "")
    with pytest.raises(LayoutError, match="dport"):
        hook_cflags(parse_format(text), _hook("tcp_send_reset"))


def test_print_symbols_give_drop_reason_names() -> None:
    fmt = parse_format(KFREE_SKB)
    assert fmt.print_symbols() == {2: "NOT_SPECIFIED", 3: "NO_SOCKET", 16: "IP_RPFILTER"}
    assert "-DKF_OFF_REASON=36" in hook_cflags(fmt, _hook("kfree_skb"))


def test_format_without_fields_is_rejected() -> None:
    with pytest.raises(ValueError, match="no fields"):
        parse_format("name: nothing\nID: 1\nformat:\n")


def test_pod_cidr_packing() -> None:
    # struct pod_cidr: u32 family, u32 v4_net, u32 v4_mask (network order bytes), pad, v6 net/mask
    packed = pack_pod_cidr("10.244.1.7/16")
    family, net, mask, _pad = struct.unpack_from("<IIII", packed)
    assert family == 2
    assert struct.pack("<I", net) == bytes([10, 244, 0, 0])
    assert struct.pack("<I", mask) == bytes([255, 255, 0, 0])
    v6 = pack_pod_cidr("fd00:10::/64")
    assert struct.unpack_from("<I", v6)[0] == 10
    assert v6[16:24] == bytes.fromhex("fd00001000000000") and v6[40:48] == b"\0" * 8
    assert v6[32:40] == b"\xff" * 8
    with pytest.raises(ValueError):
        pack_pod_cidr("10.0.0.300/8")


def _btf_blob() -> bytes:
    """A tiny BTF: int, ptr, struct inner {int a; int b}, struct outer {ptr p; union {inner in;}; }, enum."""
    strings = b"\0int\0a\0b\0inner\0outer\0p\0in\0color\0RED\0BLUE\0"

    def off(name: bytes) -> int:
        return strings.index(b"\0" + name + b"\0") + 1

    def info(kind: int, vlen: int = 0) -> int:
        return (kind << 24) | vlen

    types = b"".join(
        [
            struct.pack("<IIII", off(b"int"), info(INT), 4, 32),  # 1: int
            struct.pack("<III", 0, info(PTR), 1),  # 2: int *
            struct.pack("<III", off(b"inner"), info(STRUCT, 2), 8)  # 3: struct inner
            + struct.pack("<III", off(b"a"), 1, 0)
            + struct.pack("<III", off(b"b"), 1, 32),
            struct.pack("<III", 0, info(UNION, 1), 8)  # 4: anonymous union { struct inner in; }
            + struct.pack("<III", off(b"in"), 3, 0),
            struct.pack("<III", off(b"outer"), info(STRUCT, 2), 16)  # 5: struct outer
            + struct.pack("<III", off(b"p"), 2, 0)
            + struct.pack("<III", 0, 4, 64),
            struct.pack("<III", off(b"color"), info(ENUM, 2), 4)  # 6: enum color
            + struct.pack("<Ii", off(b"RED"), 1)
            + struct.pack("<Ii", off(b"BLUE"), 2),
        ]
    )
    header = struct.pack("<HBBIIIII", 0xEB9F, 1, 0, 24, 0, len(types), len(types), len(strings))
    return header + types + strings


def test_btf_member_offsets_through_anonymous_union() -> None:
    btf = parse_btf(_btf_blob())
    assert btf.member_offset("outer", "p") == 0
    assert btf.member_offset("outer", "in") == 8
    assert btf.member_offset("outer", "in.b") == 12
    assert btf.member_offset("inner", "b") == 4
    assert btf.enum_values("color") == {"RED": 1, "BLUE": 2}
    with pytest.raises(KeyError):
        btf.member_offset("outer", "nope")


def test_btf_rejects_garbage() -> None:
    with pytest.raises(ValueError):
        parse_btf(b"\0" * 32)


def test_ringbuf_needs_5_8() -> None:
    assert kernel_supports_ringbuf("6.18.44-fc-v595")
    assert kernel_supports_ringbuf("5.8.0")
    assert not kernel_supports_ringbuf("5.4.0-150-generic")


def test_pick_headers_debian_split_tree(tmp_path) -> None:
    for name in ("linux-headers-6.1.0-56-amd64", "linux-headers-5.10.0-9-amd64"):
        (tmp_path / name / "include").mkdir(parents=True)
        (tmp_path / name / ".config").write_text("")
    (tmp_path / "linux-headers-6.1.0-56-common" / "include" / "linux").mkdir(parents=True)
    picked = pick_headers("6.18.44-fc-v595", "x86_64", tmp_path)
    assert picked is not None
    source, flags = picked
    assert source.name == "linux-headers-6.1.0-56-common"
    assert f"-I{tmp_path}/linux-headers-6.1.0-56-amd64/arch/x86/include/generated" in flags
    assert pick_headers("6.18.0", "x86_64", tmp_path / "empty") is None


def test_preset_common_tree_finds_generated_sibling(tmp_path) -> None:
    common = tmp_path / "linux-headers-6.1.0-56-common"
    (common / "include" / "linux").mkdir(parents=True)
    (tmp_path / "linux-headers-6.1.0-56-amd64" / "include" / "generated").mkdir(parents=True)
    flags = split_tree_cflags(common, "x86_64")
    assert flags[0] == f"-I{tmp_path}/linux-headers-6.1.0-56-amd64/include"
    assert split_tree_cflags(tmp_path / "linux-headers-6.1.0-56-amd64", "x86_64") == []
