"""File framing: pcap / pcapng headers, chunked reading and interfaces; the per-packet loop is C.

``scan_file`` yields the packed event records of a capture in chunks (numpy structured arrays of
``EVENT_DTYPE``) and fills a ``CaptureSummary`` as it goes. Damage stops the read where it is and
becomes a one-line message in ``summary.errors``; a file that cannot be read at all raises
``InputError``.
"""

from __future__ import annotations

import os
import re
import struct
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from io import BufferedReader

import numpy as np

from auditor.errors import AuditorError, InputError
from auditor.sources import _scan  # type: ignore[attr-defined]
from auditor.sources.capture import layout as L
from auditor.sources.capture.summary import CaptureSummary

CHUNK = 4 << 20  # bytes read per step
MAX_RECORD = 16 << 20  # larger record/block lengths are damage, not data
SHB = 0x0A0D0D0A
IDB = 1
ISB = 5
AUDITOR_WRITER = "auditor capture"  # shb_userappl of auditor capture's files (they end with an ISB)
_NODE_RE = re.compile(r"(?:^|\s)node=(\S+)")
_PCAP_MAGIC = {  # first four bytes -> (byte order, nanosecond timestamps)
    b"\xd4\xc3\xb2\xa1": ("<", False),
    b"\xa1\xb2\xc3\xd4": (">", False),
    b"\x4d\x3c\xb2\xa1": ("<", True),
    b"\xa1\xb2\x3c\x4d": (">", True),
}
_NEED_MORE, _OTHER_BLOCK, _CORRUPT = 0, 1, 2
_HINT = "give a pcap or pcapng file written by tcpdump -w, tshark -w or dumpcap"
_VERSION_HINT = (
    "no tool writes another major version: the file is damaged or not a pcapng capture; "
    "re-capture with tcpdump -w, tshark -w or dumpcap"
)
_LINK_HINT = (
    "auditor reads Ethernet, Linux cooked (SLL/SLL2), raw IP, IPv4/IPv6 and BSD loopback captures; "
    "capture with tcpdump -i any or on an Ethernet interface"
)


@dataclass
class _State:
    """Reading state shared by both formats."""

    path: str
    summary: CaptureSummary
    counters: np.ndarray = field(default_factory=lambda: np.zeros(L.N_COUNTERS, dtype=np.uint64))
    interfaces: list[str] = field(default_factory=list)  # global interface names, by index
    unsupported: set[str] = field(default_factory=set)
    # (section, interface) -> (osdrop, ifdrop) of its last statistics block (the counts are cumulative)
    drops: dict[tuple[int, int], tuple[int | None, int | None]] = field(default_factory=dict)
    sections: int = 0

    def interface_index(self, name: str) -> int:
        if name not in self.interfaces:
            self.interfaces.append(name)
        return self.interfaces.index(name)

    def add_link_frames(self, linktype: int, frames: int) -> None:
        name = L.linktype_name(linktype)
        if linktype not in L.SUPPORTED_LINKTYPES:
            self.unsupported.add(f"{name} ({linktype})")
        if frames:
            self.summary.link_types[name] = self.summary.link_types.get(name, 0) + frames


def scan_file(
    path: str | os.PathLike[str], summary: CaptureSummary
) -> Iterator[tuple[np.ndarray, list[str]]]:
    """Yield (events, interface names) per chunk; ``events['iface']`` indexes the names list."""
    name = os.fspath(path)
    summary.file = os.path.basename(name)
    if _scan.COUNTERS != L.N_COUNTERS:  # a stale build of _scan.c (the tests do not rebuild it)
        raise AuditorError(
            f"the capture scanner extension is out of date ({_scan.COUNTERS} counters, "
            f"this code needs {L.N_COUNTERS})",
            _scan.__file__,
            "rebuild it: .venv/bin/python setup.py build_ext --inplace (or pip install -e .)",
        )
    try:
        f = open(name, "rb")  # noqa: SIM115 - closed below, generator
    except OSError as exc:
        raise InputError(
            f"cannot open: {exc.strerror or exc}", name, "check the path and permissions"
        ) from None
    state = _State(name, summary)
    with f:
        head = f.read(24)
        if not head:
            raise InputError("empty file, not a capture", name, _HINT)
        if head[:4] == struct.pack("<I", SHB):
            yield from _scan_pcapng(f, head, state)
        elif head[:4] in _PCAP_MAGIC:
            yield from _scan_pcap(f, head, state)
        else:
            raise InputError(f"not a pcap or pcapng capture (starts with 0x{head[:4].hex()})", name, _HINT)
    _finish(state)


def _finish(state: _State) -> None:
    s, c = state.summary, state.counters
    osdrops = [d[0] for d in state.drops.values() if d[0] is not None]
    ifdrops = [d[1] for d in state.drops.values() if d[1] is not None]
    s.dropped = sum(osdrops) if osdrops else None
    s.if_dropped = sum(ifdrops) if ifdrops else None
    if s.dropped:
        s.errors.append(f"capture dropped {s.dropped} packet(s) in the kernel (ring full): lost input")
    if s.if_dropped:
        s.errors.append(f"the capturing interface(s) dropped {s.if_dropped} packet(s) of any kind meanwhile "
                        "(isb_ifdrop): some may have been refusals or resets")  # fmt: skip
    if s.writer.startswith(AUDITOR_WRITER) and not state.drops:
        s.errors.append("no interface statistics block at the end: the capture was cut before it finished "
                        "(killed, disk full?); its kernel drops are unknown")  # fmt: skip
    s.frames = int(c[L.C_FRAMES])
    s.tcp, s.tcp_rst, s.tcp_syn, s.tcp_fin = (int(c[i]) for i in (L.C_TCP, L.C_RST, L.C_SYN, L.C_FIN))
    s.icmp_unreachable = int(c[L.C_UNREACH])
    s.malformed = int(c[L.C_MALFORMED])
    s.skipped += int(c[L.C_SKIPPED]) + int(c[L.C_UNSUPPORTED]) + s.malformed
    if s.malformed:
        s.errors.append(
            f"{s.malformed} frame(s) with a malformed IP or TCP header (first: frame "
            f"{int(c[L.C_MALFORMED_FIRST])}) not decoded, counted as skipped"
        )
    decodable = s.frames - int(c[L.C_SKIPPED]) - int(c[L.C_UNSUPPORTED])
    if state.unsupported and decodable == 0:
        kinds = ", ".join(sorted(state.unsupported))
        raise InputError(f"unsupported link type {kinds}", state.path, _LINK_HINT)
    if s.frames == 0 and s.errors:
        raise InputError(f"no readable packet: {s.errors[0]}", state.path, _HINT)


class _Window:
    """A fixed read buffer over the file (no per-chunk allocation: keeps peak memory flat).

    ``data[:end]`` holds file bytes from offset ``base``; ``refill(pos)`` keeps ``data[pos:end]``
    (a partial record), moves it to the front and reads more behind it.
    """

    def __init__(self, f: BufferedReader, head: bytes, base: int) -> None:
        self.f = f
        self.data = bytearray(CHUNK)
        self.data[: len(head)] = head
        self.base, self.end, self.eof = base, len(head), False
        self._fill()

    def _fill(self) -> None:
        with memoryview(self.data) as mv:
            while self.end < len(self.data) and not self.eof:
                got = self.f.readinto(mv[self.end :])
                if not got:
                    self.eof = True
                self.end += got or 0

    def view(self) -> memoryview:
        return memoryview(self.data)[: self.end]

    def refill(self, pos: int) -> tuple[int, bool]:
        """Drop bytes before ``pos`` and read more; returns (new pos, whether more was read)."""
        if self.eof:
            return pos, False
        tail = self.end - pos
        self.data[:tail] = self.data[pos : self.end]
        self.base += pos
        self.end = tail
        if tail > len(self.data) // 2:  # a record larger than half the buffer: grow
            self.data.extend(bytes(len(self.data)))
        before = self.end
        self._fill()
        return 0, self.end > before


def _events(raw: bytes, remap: np.ndarray | None = None) -> np.ndarray:
    ev = np.frombuffer(raw, dtype=L.EVENT_DTYPE)
    if remap is not None:
        ev = ev.copy()
        ev["iface"] = remap[ev["iface"]]
    return ev


def _scan_pcap(f: BufferedReader, head: bytes, state: _State) -> Iterator[tuple[np.ndarray, list[str]]]:
    if len(head) < 24:
        raise InputError("truncated pcap file header", state.path, _HINT)
    order, nsec = _PCAP_MAGIC[head[:4]]
    snaplen, linkfield = struct.unpack(order + "II", head[16:24])
    linktype = linkfield & 0x03FFFFFF
    if linktype not in L.SUPPORTED_LINKTYPES:
        name = L.linktype_name(linktype)
        raise InputError(f"unsupported link type {name} ({linktype})", state.path, _LINK_HINT)
    swapped = (order == "<") != (sys.byteorder == "little")
    maxcap = min(max(snaplen, 262144), MAX_RECORD)
    state.interfaces.append("")
    win = _Window(f, b"", 24)
    pos, frames = 0, 0
    c = state.counters
    while True:
        pos, n, raw, status = _scan.scan_pcap(win.view(), pos, swapped, nsec, linktype, frames, maxcap, c)
        frames += n
        if raw:
            yield _events(raw), state.interfaces
        where = f"at byte {win.base + pos} (frame {frames + 1})"
        if status == _CORRUPT:
            incl = struct.unpack_from(order + "I", win.data, pos + 8)[0]
            state.summary.errors.append(
                f"corrupt record header {where}: captured length {incl} exceeds {maxcap}; rest not read"
            )
            state.summary.skipped += 1
            break
        pos, more = win.refill(pos)
        if not more:
            if pos < win.end:
                state.summary.errors.append(f"truncated record {where}: file ends mid-packet")
                state.summary.skipped += 1
            break
    state.add_link_frames(linktype, frames)


@dataclass
class _Section:
    """One pcapng section: byte order and its interface table (the C side reads ``table``)."""

    order: str = "<"
    table: np.ndarray = field(default_factory=lambda: np.zeros((0, L.IF_FIELDS), dtype=np.int64))
    remap: list[int] = field(default_factory=list)


def _close_section(sec: _Section, state: _State) -> None:
    for row in sec.table:
        state.add_link_frames(int(row[L.IF_LINKTYPE]), int(row[L.IF_FRAMES]))


def _read_idb(body: bytes, sec: _Section, state: _State) -> None:
    o = sec.order
    linktype = struct.unpack(o + "H", body[0:2])[0]
    name, res_kind, res_exp, offset = "", 0, 6, 0
    i = 8
    while i + 4 <= len(body):
        code, length = struct.unpack(o + "HH", body[i : i + 4])
        value = body[i + 4 : i + 4 + length]
        if code == 0 or len(value) < length:
            break
        if code == 2:
            name = value.split(b"\0", 1)[0].decode("utf-8", "replace")
        elif code == 3 and not state.summary.node:
            m = _NODE_RE.search(value.split(b"\0", 1)[0].decode("utf-8", "replace"))
            state.summary.node = m.group(1) if m else ""
        elif code == 9 and length >= 1:
            res_kind, res_exp = (1, value[0] & 0x7F) if value[0] & 0x80 else (0, value[0])
        elif code == 14 and length >= 8:
            offset = struct.unpack(o + "q", value[:8])[0]
        i += 4 + ((length + 3) & ~3)
    row = np.zeros((1, L.IF_FIELDS), dtype=np.int64)
    row[0, [L.IF_LINKTYPE, L.IF_RES_KIND, L.IF_RES_EXP, L.IF_OFFSET_S]] = (
        linktype,
        res_kind,
        res_exp,
        offset,
    )
    sec.table = np.vstack([sec.table, row])
    sec.remap.append(state.interface_index(name))
    if linktype not in L.SUPPORTED_LINKTYPES:
        state.unsupported.add(f"{L.linktype_name(linktype)} ({linktype})")


def _options(body: bytes, order: str) -> Iterator[tuple[int, bytes]]:
    i = 0
    while i + 4 <= len(body):
        code, length = struct.unpack(order + "HH", body[i : i + 4])
        value = body[i + 4 : i + 4 + length]
        if code == 0 or len(value) < length:
            return
        yield code, value
        i += 4 + ((length + 3) & ~3)


def _shb_userappl(options: bytes, order: str) -> str:
    for code, value in _options(options, order):
        if code == 4:
            return value.split(b"\0", 1)[0].decode("utf-8", "replace")
    return ""


def _read_isb(body: bytes, sec: _Section, state: _State) -> None:
    """Interface statistics: isb_osdrop (7, dropped by the capturing OS) and isb_ifdrop (5)."""
    o = sec.order
    ifid = struct.unpack(o + "I", body[0:4])[0]
    osdrop = ifdrop = None
    for code, value in _options(body[12:], o):
        if code == 7 and len(value) >= 8:
            osdrop = struct.unpack(o + "Q", value[:8])[0]
        elif code == 5 and len(value) >= 8:
            ifdrop = struct.unpack(o + "Q", value[:8])[0]
    if osdrop is not None or ifdrop is not None:
        state.drops[(state.sections, ifid)] = (osdrop, ifdrop)


def _known_version(buf: bytearray, pos: int, blen: int, order: str, base: int, state: _State) -> bool:
    """Whether the section header at ``pos`` is pcapng 1.x; if not, the file's first section is
    refused (``InputError``) and a later one ends the read with a message (the sections before it
    were read)."""
    if blen < 16:  # no version fields: the block-length check has the last word
        return True
    major, minor = struct.unpack_from(order + "HH", buf, pos + 12)
    if major == 1:
        return True
    offset = base + pos
    what = (
        f"unsupported pcapng version {major}.{minor} in the section header at byte {offset} (only 1.x exists)"
    )
    if offset == 0:
        raise InputError(what, state.path, _VERSION_HINT)
    state.summary.errors.append(f"{what}: that section and the rest not read")
    state.summary.skipped += 1
    return False


def _scan_pcapng(f: BufferedReader, head: bytes, state: _State) -> Iterator[tuple[np.ndarray, list[str]]]:
    win = _Window(f, head, 0)
    pos, frames = 0, 0
    sec: _Section | None = None
    errors = state.summary.errors

    def more() -> bool:
        nonlocal pos
        pos, got = win.refill(pos)
        return got

    while True:
        status = _OTHER_BLOCK
        if sec is not None:
            pos, n, raw, status = _scan.scan_pcapng(
                win.view(),
                pos,
                (sec.order == "<") != (sys.byteorder == "little"),
                sec.table,
                frames,
                MAX_RECORD,
                state.counters,
            )
            frames += n
            if raw:
                yield _events(raw, np.asarray(sec.remap, dtype=np.uint32)), state.interfaces
        where = f"at byte {win.base + pos}"
        if status == _NEED_MORE or win.end - pos < 12:
            if more():
                continue
            if pos < win.end:
                errors.append(f"truncated block {where} (frame {frames + 1}): file ends mid-block")
                state.summary.skipped += 1
            break
        if status == _CORRUPT:
            errors.append(f"corrupt block {where} (frame {frames + 1}): bad block length; rest not read")
            state.summary.skipped += 1
            break
        buf = win.data
        btype = struct.unpack_from("<I", buf, pos)[0]
        if btype == SHB:
            bom = bytes(buf[pos + 8 : pos + 12])
            order = "<" if bom == b"\x4d\x3c\x2b\x1a" else ">" if bom == b"\x1a\x2b\x3c\x4d" else ""
            if not order:
                errors.append(f"corrupt section header {where}: bad byte-order magic; rest not read")
                break
            if sec is not None:
                _close_section(sec, state)
            sec = _Section(order=order)
        assert sec is not None
        btype, blen = struct.unpack_from(sec.order + "II", buf, pos)
        if blen < 12 or blen % 4 or blen > MAX_RECORD:
            errors.append(
                f"corrupt block {where} (frame {frames + 1}): bad block length {blen}; rest not read"
            )
            state.summary.skipped += 1
            break
        while win.end - pos < blen and more():
            pass
        if win.end - pos < blen:
            errors.append(f"truncated block {where} (frame {frames + 1}): file ends mid-block")
            state.summary.skipped += 1
            break
        if btype == SHB and not _known_version(win.data, pos, blen, sec.order, win.base, state):
            break
        if btype == SHB:
            state.sections += 1
            if state.sections == 1:
                state.summary.writer = _shb_userappl(bytes(buf[pos + 24 : pos + blen - 4]), sec.order)
        if btype == IDB and blen >= 20:
            _read_idb(bytes(buf[pos + 8 : pos + blen - 4]), sec, state)
        if btype == ISB and blen >= 24:
            _read_isb(bytes(buf[pos + 8 : pos + blen - 4]), sec, state)
        pos += blen
    if sec is not None:
        _close_section(sec, state)
