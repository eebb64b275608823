"""The fallback engine where libpcap is missing: scapy's Linux packet socket, filtered in Python.

Without libpcap there is no filter compiler (scapy asks tcpdump, which needs libpcap), so every packet
of the interface crosses into Python and is tested there: the ceiling is far lower than libpcap's
(bench/README.md). Its blocks are the same pcapng as the C engine's; the kernel's drops come from the
socket's PACKET_STATISTICS.
"""

from __future__ import annotations

import os
import socket
import struct
import time
from typing import Any

from auditor.errors import AuditorError
from auditor.sources.pcaplive.engine import DEFAULT_SNAPLEN, USERAPPL, node_description

_SOL_PACKET, _PACKET_STATISTICS = 263, 6
_LINKTYPE_ETHERNET, _LINKTYPE_LINUX_SLL = 1, 113


def _opt(code: int, value: bytes) -> bytes:
    return struct.pack("<HH", code, len(value)) + value + b"\0" * (-len(value) % 4)


def _block(btype: int, body: bytes) -> bytes:
    n = 12 + len(body)
    return struct.pack("<II", btype, n) + body + struct.pack("<I", n)


def _wanted(ip: bytes) -> bool:
    """The built-in filter in Python: TCP SYN/RST/FIN, ICMP/ICMPv6 unreachable (no extra filter)."""
    if not ip:
        return False
    v = ip[0] >> 4
    if v == 4 and len(ip) >= 20:
        ihl, proto = (ip[0] & 15) * 4, ip[9]
        if struct.unpack_from("!H", ip, 6)[0] & 0x1FFF:
            return False
        if proto == 6 and len(ip) >= ihl + 14:
            return bool(ip[ihl + 13] & 0x07)
        return proto == 1 and len(ip) > ihl and ip[ihl] == 3
    if v == 6 and len(ip) >= 41:
        if ip[6] == 6 and len(ip) >= 54:
            return bool(ip[53] & 0x07)
        return ip[6] == 58 and ip[40] == 1
    return False


class ScapyCapture:
    """Same interface as :class:`~auditor.sources.pcaplive.engine.LiveCapture`."""

    name = "scapy"

    def __init__(
        self,
        interface: str,
        node: str,
        snaplen: int = DEFAULT_SNAPLEN,
        extra_filter: str | None = None,
        buffer_mb: int = 32,
        timeout_ms: int = 100,
        netns: str | None = None,
    ) -> None:
        if extra_filter:
            raise AuditorError("--filter needs libpcap (it compiles the expression)", "--filter",
                               "install libpcap (Debian: libpcap0.8) or drop --filter")  # fmt: skip
        if netns:
            raise AuditorError(
                "--netns needs the libpcap engine", "--netns", "install libpcap (Debian: libpcap0.8)"
            )
        try:
            from scapy.arch.linux import L2ListenSocket
        except ImportError as exc:
            raise AuditorError(f"neither libpcap nor scapy is available ({exc})", "auditor capture",
                               "install libpcap (Debian: libpcap0.8)") from None  # fmt: skip
        self.interface, self.node, self.snaplen, self.timeout_ms = interface, node, snaplen, timeout_ms
        self.filter = "built-in (in Python)"
        try:
            self._sock: Any = L2ListenSocket(iface=None if interface == "any" else interface, promisc=False)
        except OSError as exc:
            raise AuditorError(
                f"cannot capture: {exc}", interface, "run as root (or with CAP_NET_RAW)"
            ) from None
        self._raw: socket.socket = self._sock.ins
        self._raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, buffer_mb << 20)
        self._raw.settimeout(timeout_ms / 1000)
        self.linktype = _LINKTYPE_LINUX_SLL if interface == "any" else _LINKTYPE_ETHERNET
        self._recv = self._drop = 0

    def header(self) -> bytes:
        shb = struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1) + _opt(4, USERAPPL.encode()) + b"\0" * 4
        idb = (struct.pack("<HHI", self.linktype, 0, self.snaplen) + _opt(2, self.interface.encode())
               + _opt(3, node_description(self.node).encode()) + _opt(9, b"\x09") + b"\0" * 4)  # fmt: skip
        return _block(0x0A0D0D0A, shb) + _block(1, idb)

    def _frame(self, data: bytes, addr: Any) -> bytes | None:
        """The captured frame in this capture's link type, or None if it does not match."""
        proto, pkttype, hatype, hwaddr = socket.ntohs(addr[1]), addr[2], addr[3], addr[4]
        if pkttype == 4 and hatype == 772:  # loopback: each packet comes out and back in; keep it once
            return None
        if self.linktype == _LINKTYPE_LINUX_SLL:
            ip = data[14:] if hatype in (1, 772) else data  # Ethernet, loopback: SLL carries the protocol
            if not _wanted(ip):
                return None
            return (
                struct.pack(
                    "!HHH8sH", pkttype, hatype, min(len(hwaddr), 8), hwaddr[:8].ljust(8, b"\0"), proto
                )
                + ip
            )
        return data if _wanted(data[14:]) else None

    def dispatch(self, max_ms: int, max_bytes: int, fd: int) -> tuple[int, int, bytes]:
        end = time.monotonic() + max_ms / 1000
        out: list[bytes] = []
        n = size = 0
        while time.monotonic() < end and not (max_bytes and size >= max_bytes):
            try:
                data, addr = self._raw.recvfrom(65535)
            except TimeoutError:
                continue
            except BlockingIOError:
                continue
            frame = self._frame(data, addr)
            if frame is None:
                continue
            ts = time.time_ns()
            cap = frame[: self.snaplen]
            body = struct.pack("<IIIII", 0, ts >> 32, ts & 0xFFFFFFFF, len(cap), len(frame))
            block = _block(6, body + cap + b"\0" * (-len(cap) % 4))
            out.append(block)
            n += 1
            size += len(block)
            self._recv += 1
        data = b"".join(out)
        if fd >= 0:
            os.write(fd, data)
            return n, len(data), b""
        return n, len(data), data

    def stats(self) -> tuple[int, int, int]:
        raw = self._raw.getsockopt(_SOL_PACKET, _PACKET_STATISTICS, 8)  # resets the kernel's counters
        _packets, drops = struct.unpack("II", raw)
        self._drop += drops
        return self._recv + self._drop, self._drop, 0

    def trailer(self, start_ns: int, end_ns: int, delivered: int) -> bytes:
        recv, drop, ifdrop = self.stats()

        def ts(v: int) -> bytes:
            return struct.pack("<II", v >> 32, v & 0xFFFFFFFF)

        body = (struct.pack("<I", 0) + ts(end_ns) + _opt(2, ts(start_ns)) + _opt(3, ts(end_ns))
                + _opt(4, struct.pack("<Q", recv)) + _opt(5, struct.pack("<Q", ifdrop))
                + _opt(7, struct.pack("<Q", drop)) + _opt(8, struct.pack("<Q", delivered)) + b"\0" * 4)  # fmt: skip
        return _block(5, body)

    def close(self) -> None:
        self._sock.close()
