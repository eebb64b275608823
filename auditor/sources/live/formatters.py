"""Names for raw kernel values (``state_raw``, ``reason_raw``), kept apart from the decoders.

The enum tables differ across kernels, so they are read from the running kernel (BTF enums, or the
``__print_symbolic`` table of a tracepoint's print fmt) and passed in; TCP states are fixed.
"""

from __future__ import annotations

from collections.abc import Mapping

TCP_STATES: dict[int, str] = {
    1: "ESTABLISHED",
    2: "SYN_SENT",
    3: "SYN_RECV",
    4: "FIN_WAIT1",
    5: "FIN_WAIT2",
    6: "TIME_WAIT",
    7: "CLOSE",
    8: "CLOSE_WAIT",
    9: "LAST_ACK",
    10: "LISTEN",
    11: "CLOSING",
    12: "NEW_SYN_RECV",
    13: "BOUND_INACTIVE",
}


def tcp_state_name(state_raw: int) -> str:
    return TCP_STATES.get(state_raw, f"STATE_{state_raw}")


def enum_names(values: Mapping[str, int], prefix: str) -> dict[int, str]:
    """Invert a BTF enum (name -> value) into value -> name, dropping ``prefix`` from names."""
    out: dict[int, str] = {}
    for name, value in values.items():
        out.setdefault(value, name.removeprefix(prefix))
    return out


def rst_reason_name(reason_raw: int, table: Mapping[int, str]) -> str:
    """``enum sk_rst_reason`` (from BTF, prefix SK_RST_REASON_ removed), e.g. NO_SOCKET."""
    return table.get(reason_raw, f"REASON_{reason_raw}")


def drop_reason_name(reason_raw: int, table: Mapping[int, str]) -> str:
    """``enum skb_drop_reason`` (kfree_skb print fmt, or BTF without SKB_DROP_REASON_), e.g. NO_SOCKET."""
    return table.get(reason_raw, f"REASON_{reason_raw}")
