"""libpcap -> pcapng (the C extension ``_pcapcap``) and the bounded capture loop of ``auditor capture``."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from auditor.errors import AuditorError

# TCP SYN / SYN-ACK / RST / FIN over IPv4 (libpcap's tcp[] walks IPv4 options and skips later
# fragments); over IPv6 with TCP right after the fixed header (libpcap's tcp[] is IPv4 only); ICMP
# destination unreachable; ICMPv6 destination unreachable (type 1) right after the fixed header.
BASE_FILTER = (
    "(tcp[tcpflags] & (tcp-syn|tcp-rst|tcp-fin) != 0)"
    " or (ip6[6] == 6 and ip6[53] & 0x07 != 0)"
    " or (icmp[icmptype] == icmp-unreach)"
    " or (ip6[6] == 58 and ip6[40] == 1)"
)
# The headers auditor's reader decodes, with room for one tunnel: Linux cooked v2 (20) + outer IPv4
# (20) + UDP (8) + VXLAN (8) + Ethernet (14) + IPv6 (40) + ICMPv6 (8) + the quoted IPv6 header (40)
# and its ports and sequence number (8) = 166 bytes; a TCP header with options ends well before.
DEFAULT_SNAPLEN = 192
USERAPPL = "auditor capture"  # shb_userappl: a file this tool wrote (its ISB is expected at the end)
# the ``file`` of the events the agent's capture source records (``source`` stays "pcap": the engine treats
# them as packets, NAT copies included); a log segment holding them came from an agent without eBPF
LIVE_FILE = "(live capture)"
_NODE_RE = re.compile(r"(?:^|\s)node=(\S+)")


def capture_filter(extra: str | None = None) -> str:
    """The kernel filter: what the analysis reads, narrowed by ``extra`` (a libpcap expression)."""
    extra = (extra or "").strip()
    return f"({BASE_FILTER}) and ({extra})" if extra else BASE_FILTER


def node_description(node: str) -> str:
    """The interface description naming the node (``if_description``)."""
    return f"node={node}"


def node_from_description(text: str) -> str:
    """The node a ``node=NAME`` interface description names ('' if none)."""
    m = _NODE_RE.search(text or "")
    return m.group(1) if m else ""


def engine_available() -> tuple[bool, str]:
    """(True, libpcap's version) or (False, why not)."""
    try:
        from auditor.sources import _pcapcap  # type: ignore[attr-defined]
    except ImportError as exc:
        return False, f"the capture extension is not built ({exc})"
    ok, text = _pcapcap.available()
    return bool(ok), str(text)


class Engine(Protocol):
    """What :func:`run_capture` drives: the libpcap engine or the scapy fallback."""

    name: str
    linktype: int
    snaplen: int

    def header(self) -> bytes: ...

    def dispatch(self, max_ms: int, max_bytes: int, fd: int) -> tuple[int, int, bytes]: ...

    def stats(self) -> tuple[int, int, int]: ...

    def trailer(self, start_ns: int, end_ns: int, delivered: int) -> bytes: ...

    def close(self) -> None: ...


class LiveCapture:
    """One libpcap capture (activated, the filter set in the kernel) that produces pcapng blocks.

    ``dispatch(max_ms, max_bytes, fd)`` captures for up to ``max_ms`` (the GIL released) and writes
    the packet blocks to ``fd``, or returns them when ``fd`` < 0: ``(packets, bytes, data)``.
    """

    name = "libpcap"

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
        ok, why = engine_available()
        if not ok:
            raise AuditorError(
                why, "libpcap", "install libpcap (Debian: libpcap0.8) and build auditor (pip install .)"
            )
        from auditor.sources import _pcapcap  # type: ignore[attr-defined]

        self.interface, self.node, self.timeout_ms = interface, node, timeout_ms
        self.filter = capture_filter(extra_filter)
        try:
            self._h = _pcapcap.Handle(interface, snaplen, self.filter, buffer_mb << 20, timeout_ms, netns)
        except ValueError as exc:
            raise AuditorError(
                str(exc), "--filter", "give a libpcap filter expression (man pcap-filter)"
            ) from None
        except OSError as exc:
            raise AuditorError(
                f"cannot capture: {exc}", interface,
                "run as root (or with CAP_NET_RAW) and name an existing interface (ip link), or 'any'",
            ) from None  # fmt: skip
        self.linktype: int = self._h.linktype
        self.snaplen: int = self._h.snaplen

    def header(self) -> bytes:
        return bytes(self._h.header(self.interface, node_description(self.node), USERAPPL))

    def dispatch(self, max_ms: int, max_bytes: int, fd: int) -> tuple[int, int, bytes]:
        packets, nbytes, data = self._h.dispatch(max_ms, max_bytes, fd)
        return int(packets), int(nbytes), bytes(data)

    def stats(self) -> tuple[int, int, int]:
        recv, drop, ifdrop = self._h.stats()
        return int(recv), int(drop), int(ifdrop)

    def trailer(self, start_ns: int, end_ns: int, delivered: int) -> bytes:
        return bytes(self._h.statistics_block(start_ns, end_ns, delivered))

    def close(self) -> None:
        self._h.close()


@dataclass
class CaptureStats:
    """What one capture did: packets written, the kernel's counts, why it stopped."""

    file: str = ""
    engine: str = ""
    interface: str = ""
    node: str = ""
    snaplen: int = 0
    filter: str = ""
    packets: int = 0  # packet blocks written
    bytes: int = 0  # file size
    received: int = 0  # ps_recv: packets that passed the filter (including dropped ones)
    dropped: int = 0  # ps_drop: matching packets the kernel dropped (ring full): lost input
    if_dropped: int = 0  # ps_ifdrop: the interface's own drops (all traffic, not only matching)
    start_ns: int = 0
    end_ns: int = 0
    stopped_by: str = ""  # duration | max-mb | signal
    cpu_s: float = 0.0  # this process's CPU time during the capture
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def run_capture(
    engine: Engine,
    path: str,
    duration_s: float | None = None,
    max_bytes: int = 0,
    stop: Callable[[], bool] = lambda: False,
    progress: Callable[[CaptureStats], None] | None = None,
    progress_s: float = 1.0,
) -> CaptureStats:
    """Capture into ``path`` (pcapng) until ``duration_s``, ``max_bytes`` or ``stop()``; then drain
    what the ring still holds, write the statistics block and close. The file is readable (whole
    blocks) at every moment: each dispatch writes whole blocks."""
    st = CaptureStats(file=path, engine=engine.name, snaplen=engine.snaplen,
                      interface=getattr(engine, "interface", ""), node=getattr(engine, "node", ""),
                      filter=getattr(engine, "filter", ""))  # fmt: skip
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise AuditorError(f"cannot write: {exc.strerror}", path, "give a writable path with -w") from None
    cpu0 = time.process_time()
    try:
        head = engine.header()
        os.write(fd, head)
        st.bytes = len(head)
        st.start_ns = time.time_ns()
        started = time.monotonic()
        last_progress = started
        reserve = 128  # the statistics block at the end
        while True:
            if stop():
                st.stopped_by = "signal"
                break
            elapsed = time.monotonic() - started
            if duration_s is not None and elapsed >= duration_s:
                st.stopped_by = "duration"
                break
            room = max_bytes - st.bytes - reserve if max_bytes else 0
            if max_bytes and room <= 0:
                st.stopped_by = "max-mb"
                break
            slice_ms = 200 if duration_s is None else max(1, min(200, int((duration_s - elapsed) * 1000)))
            n, b, _ = engine.dispatch(slice_ms, room, fd)
            st.packets += n
            st.bytes += b
            if progress is not None and time.monotonic() - last_progress >= progress_s:
                last_progress = time.monotonic()
                st.received, st.dropped, st.if_dropped = engine.stats()
                progress(st)
        if st.stopped_by != "max-mb":
            # a TPACKET_V3 block is handed over when full or when its timeout retires it: wait that long
            n, b, _ = engine.dispatch(int(getattr(engine, "timeout_ms", 100)) + 50, 0, fd)
            st.packets += n
            st.bytes += b
        st.end_ns = time.time_ns()
        st.received, st.dropped, st.if_dropped = engine.stats()
        tail = engine.trailer(st.start_ns, st.end_ns, st.packets)
        os.write(fd, tail)
        st.bytes += len(tail)
    except OSError as exc:
        raise AuditorError(f"capture failed: {exc}", path, "check the disk space and the interface") from None
    finally:
        os.close(fd)
        engine.close()
        st.cpu_s = time.process_time() - cpu0
    return st
