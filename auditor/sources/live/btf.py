"""Read struct member offsets and enum values from kernel BTF (``/sys/kernel/btf/vmlinux``).

The probes read a few kernel struct fields (``sk->__sk_common.skc_net``, ``skb->dev``...). Their
offsets differ between kernels, and the installed headers may be for another kernel than the
running one, so offsets come from the running kernel's own BTF and reach the C code as ``-D``
flags. Pure Python: :func:`parse_btf` takes bytes, so it is tested on a handmade blob.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

from auditor.errors import AuditorError

VMLINUX_BTF = Path("/sys/kernel/btf/vmlinux")
_MAGIC = 0xEB9F

# BTF kinds (include/uapi/linux/btf.h)
INT, PTR, ARRAY, STRUCT, UNION, ENUM, FWD, TYPEDEF, VOLATILE, CONST, RESTRICT = range(1, 12)
FUNC, FUNC_PROTO, VAR, DATASEC, FLOAT, DECL_TAG, TYPE_TAG, ENUM64 = range(12, 20)
_MODIFIERS = (TYPEDEF, VOLATILE, CONST, RESTRICT, TYPE_TAG)


@dataclass(frozen=True, slots=True)
class Member:
    name: str
    type_id: int
    bit_offset: int


@dataclass(slots=True)
class BtfType:
    kind: int
    name: str
    size_or_type: int
    members: list[Member] = field(default_factory=list)
    enum_values: dict[str, int] = field(default_factory=dict)


@dataclass(slots=True)
class Btf:
    """The types of one BTF blob, indexed by id (id 0 is void)."""

    types: list[BtfType]
    by_name: dict[tuple[int, str], int]

    def find(self, kind: int, name: str) -> BtfType:
        type_id = self.by_name.get((kind, name))
        if type_id is None:
            raise KeyError(f"no BTF type {name!r} of kind {kind}")
        return self.types[type_id]

    def resolve(self, type_id: int) -> BtfType:
        """Follow typedefs and qualifiers to the underlying type."""
        t = self.types[type_id]
        for _ in range(32):
            if t.kind not in _MODIFIERS:
                return t
            t = self.types[t.size_or_type]
        return t

    def member_offset(self, struct_name: str, path: str) -> int:
        """Byte offset of ``a.b.c`` inside ``struct struct_name``, looking through anonymous members."""
        t = self.find(STRUCT, struct_name)
        total_bits = 0
        for part in path.split("."):
            found = _find_member(self, t, part)
            if found is None:
                raise KeyError(f"struct {struct_name}: no member {path!r}")
            bits, t = found
            total_bits += bits
        if total_bits % 8:
            raise KeyError(f"struct {struct_name}: member {path!r} is a bit field")
        return total_bits // 8

    def enum_values(self, enum_name: str) -> dict[str, int]:
        type_id = self.by_name.get((ENUM, enum_name), self.by_name.get((ENUM64, enum_name)))
        if type_id is None:
            raise KeyError(f"no BTF enum {enum_name!r}")
        return dict(self.types[type_id].enum_values)


def _find_member(btf: Btf, t: BtfType, name: str, depth: int = 0) -> tuple[int, BtfType] | None:
    if depth > 8:
        return None
    for m in t.members:
        target = btf.resolve(m.type_id)
        if m.name == name:
            return m.bit_offset, target
        if not m.name and target.kind in (STRUCT, UNION):
            inner = _find_member(btf, target, name, depth + 1)
            if inner is not None:
                return m.bit_offset + inner[0], inner[1]
    return None


def parse_btf(blob: bytes) -> Btf:
    """Parse a raw BTF blob (little-endian, as the kernel exposes it)."""
    if len(blob) < 24:
        raise ValueError("BTF blob too short")
    magic, _version, _flags, hdr_len = struct.unpack_from("<HBBI", blob, 0)
    if magic != _MAGIC:
        raise ValueError(f"not BTF (magic {magic:#x})")
    type_off, type_len, str_off, str_len = struct.unpack_from("<IIII", blob, 8)
    strings = blob[hdr_len + str_off : hdr_len + str_off + str_len]

    def name_at(off: int) -> str:
        end = strings.find(b"\0", off)
        return strings[off : end if end >= 0 else len(strings)].decode("ascii", "replace")

    types: list[BtfType] = [BtfType(0, "void", 0)]
    by_name: dict[tuple[int, str], int] = {}
    pos, end = hdr_len + type_off, hdr_len + type_off + type_len
    while pos < end:
        name_off, info, size_or_type = struct.unpack_from("<III", blob, pos)
        pos += 12
        kind, vlen, kflag = (info >> 24) & 0x1F, info & 0xFFFF, info >> 31
        t = BtfType(kind, name_at(name_off), size_or_type)
        if kind in (INT, VAR, DECL_TAG):
            pos += 4
        elif kind == ARRAY:
            pos += 12
        elif kind in (STRUCT, UNION):
            for _ in range(vlen):
                m_name, m_type, m_off = struct.unpack_from("<III", blob, pos)
                pos += 12
                t.members.append(Member(name_at(m_name), m_type, m_off & 0xFFFFFF if kflag else m_off))
        elif kind == ENUM:
            for _ in range(vlen):
                e_name, e_val = struct.unpack_from("<Ii", blob, pos)
                pos += 8
                t.enum_values[name_at(e_name)] = e_val
        elif kind == ENUM64:
            for _ in range(vlen):
                e_name, lo, hi = struct.unpack_from("<III", blob, pos)
                pos += 12
                t.enum_values[name_at(e_name)] = lo | (hi << 32)
        elif kind == FUNC_PROTO:
            pos += 8 * vlen
        elif kind == DATASEC:
            pos += 12 * vlen
        elif kind not in (PTR, FWD, TYPEDEF, VOLATILE, CONST, RESTRICT, FUNC, FLOAT, TYPE_TAG):
            raise ValueError(f"unknown BTF kind {kind} at byte {pos - 12}")
        if t.name:
            by_name.setdefault((kind, t.name), len(types))
        types.append(t)
    return Btf(types, by_name)


def load_vmlinux_btf(path: Path = VMLINUX_BTF) -> Btf:
    """The running kernel's BTF; an AuditorError if the kernel has none."""
    try:
        return parse_btf(path.read_bytes())
    except OSError as exc:
        raise AuditorError(
            f"cannot read kernel BTF ({exc.strerror})",
            where=str(path),
            hint="the live probes need a kernel built with CONFIG_DEBUG_INFO_BTF=y",
        ) from exc
    except ValueError as exc:
        raise AuditorError(f"unreadable kernel BTF: {exc}", where=str(path)) from exc
