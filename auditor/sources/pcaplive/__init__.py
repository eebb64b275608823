"""Packet capture on a live interface (``auditor capture`` and the agent's ``--source capture``).

The engine is libpcap through the C extension ``auditor/sources/_pcapcap.c`` (libpcap loaded at run
time; on Linux a TPACKET_V3 ring with the BPF filter in the kernel), writing pcapng blocks from C:
a section header, one interface block whose description names the node (``node=NAME``, what
``auditor analyze`` reads instead of a ``NODE=`` prefix), the packets (EPB, nanosecond times) and at
the end an interface statistics block (ISB) with the kernel's counts (``ps_recv``, ``ps_drop``,
``ps_ifdrop``). Where libpcap is missing, :mod:`auditor.sources.pcaplive.fallback` sniffs with scapy
(filtered in Python, far lower ceiling).

Only what the analysis reads is captured: TCP SYN, SYN-ACK, RST, FIN and ICMP / ICMPv6 destination
unreachable, headers only (:data:`DEFAULT_SNAPLEN`).
"""

from __future__ import annotations

from auditor.sources.pcaplive.engine import (
    BASE_FILTER,
    DEFAULT_SNAPLEN,
    CaptureStats,
    LiveCapture,
    capture_filter,
    engine_available,
    node_description,
    run_capture,
)

__all__ = [
    "BASE_FILTER",
    "DEFAULT_SNAPLEN",
    "CaptureStats",
    "LiveCapture",
    "capture_filter",
    "engine_available",
    "node_description",
    "run_capture",
]
