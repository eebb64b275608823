"""Tracepoint format files: where each field of a tracepoint record sits.

``/sys/kernel/tracing/events/<system>/<event>/format`` lists every field with its offset and
size; the layouts differ across kernels (``tcp_send_reset`` switched to sockaddr-sized
addresses and gained a ``reason`` in 6.10), so the probes read fields at offsets parsed here
and passed to C as ``-D`` flags. :func:`parse_format` is pure and tested on literals.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

TRACEFS_ROOTS = (Path("/sys/kernel/tracing"), Path("/sys/kernel/debug/tracing"))

_FIELD = re.compile(
    r"^\s*field:(?P<decl>[^;]+);\s*offset:(?P<offset>\d+);\s*size:(?P<size>\d+);\s*signed:(?P<signed>-?\d+);"
)
_DECL = re.compile(r"^(?P<type>.*?)\s*\b(?P<name>[A-Za-z_]\w*)\s*(?:\[(?P<len>[^\]]*)\])?\s*$")
_SYMBOL = re.compile(r"\{\s*(-?\d+|0x[0-9a-fA-F]+)\s*,\s*\"([^\"]*)\"\s*\}")


@dataclass(frozen=True, slots=True)
class TracepointField:
    name: str
    c_type: str  # e.g. "__u8", "enum sk_rst_reason", "const void *"
    offset: int
    size: int
    signed: bool
    array_len: str | None = None  # "4", "sizeof(struct sockaddr_in6)", ... or None


@dataclass(frozen=True, slots=True)
class TracepointFormat:
    """One parsed format file."""

    name: str
    event_id: int
    fields: dict[str, TracepointField]
    print_fmt: str

    def has(self, name: str) -> bool:
        return name in self.fields

    def field(self, name: str) -> TracepointField:
        try:
            return self.fields[name]
        except KeyError:
            raise KeyError(f"tracepoint {self.name} has no field {name!r}") from None

    def print_symbols(self) -> dict[int, str]:
        """The ``__print_symbolic`` table of the print fmt (e.g. skb drop reason names)."""
        return {int(v, 0): text for v, text in _SYMBOL.findall(self.print_fmt)}


def parse_format(text: str) -> TracepointFormat:
    """Parse the text of a tracefs ``format`` file; ValueError if it has no fields."""
    name, event_id, print_fmt = "", 0, ""
    fields: dict[str, TracepointField] = {}
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("name:"):
            name = stripped.split(":", 1)[1].strip()
        elif stripped.startswith("ID:"):
            event_id = int(stripped.split(":", 1)[1])
        elif stripped.startswith("print fmt:"):
            print_fmt = stripped.split(":", 1)[1].strip()
        else:
            m = _FIELD.match(line)
            if m is None:
                continue
            d = _DECL.match(m["decl"].strip())
            if d is None:
                continue
            fields[d["name"]] = TracepointField(
                name=d["name"],
                c_type=d["type"].strip(),
                offset=int(m["offset"]),
                size=int(m["size"]),
                signed=m["signed"] == "1",
                array_len=d["len"],
            )
    if not fields:
        raise ValueError(f"no fields in tracepoint format {name or '<unnamed>'}")
    return TracepointFormat(name=name, event_id=event_id, fields=fields, print_fmt=print_fmt)


def find_tracefs(mount_if_missing: bool = False) -> Path | None:
    """The tracefs directory holding ``events/``; optionally mount tracefs (root only) if absent."""
    for root in TRACEFS_ROOTS:
        if (root / "events").is_dir():
            return root
    if mount_if_missing and TRACEFS_ROOTS[0].is_dir():
        subprocess.run(
            ["mount", "-t", "tracefs", "tracefs", str(TRACEFS_ROOTS[0])],
            check=False,
            capture_output=True,
            timeout=10,
        )
        if (TRACEFS_ROOTS[0] / "events").is_dir():
            return TRACEFS_ROOTS[0]
    return None


def read_format(tracefs: Path, system: str, event: str) -> TracepointFormat | None:
    """The format of ``system:event``, or None if this kernel has no such tracepoint."""
    path = tracefs / "events" / system / event / "format"
    try:
        return parse_format(path.read_text())
    except (OSError, ValueError):
        return None
