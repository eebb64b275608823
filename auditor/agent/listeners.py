"""Name the listener of a ``listen_close`` event: a wildcard address (0.0.0.0, ::) becomes the pod's IPs.

A server bound to any address reports ``src = 0.0.0.0`` when it stops listening, so nothing ties the
event to a pod. The event carries its network namespace's inode; :class:`NetnsAddressBook` knows the
addresses configured in each namespace, read from ``/proc/<pid>/ns/net`` and that process's
``/proc/<pid>/net/fib_trie`` and ``if_inet6`` (the agent runs with hostPID). A namespace with exactly
the pod's addresses (loopback aside) names the pod; a namespace with no non-loopback address, or one
we cannot read, leaves the event as it is (and it is counted as ``unresolved``).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

from auditor.model.packet import PacketEvent

if TYPE_CHECKING:
    import pandas as pd

WILDCARDS = ("0.0.0.0", "::")


def parse_fib_trie(text: str) -> set[str]:
    """The local IPv4 host addresses in ``/proc/net/fib_trie`` (``|-- A`` followed by ``/32 host LOCAL``)."""
    out: set[str] = set()
    last = ""
    for line in text.splitlines():
        s = line.strip()
        if s.startswith("|--"):
            last = s[3:].strip()
        elif s.startswith("/32 host LOCAL") and last:
            out.add(last)
    return out


def parse_if_inet6(text: str) -> set[str]:
    """Global-scope addresses in ``/proc/net/if_inet6`` (32 hex digits, index, prefix, scope, flags, name)."""
    out: set[str] = set()
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 4 and len(parts[0]) == 32 and parts[3] == "00":
            out.add(str(ipaddress.IPv6Address(bytes.fromhex(parts[0]))))
    return out


def _usable(addr: str) -> bool:
    ip = ipaddress.ip_address(addr)
    return not (ip.is_loopback or ip.is_link_local or ip.is_unspecified)


class NetnsAddressBook:
    """netns inode -> its addresses; rescans ``/proc`` at most every ``refresh_s`` (and on a miss)."""

    def __init__(self, proc: Path = Path("/proc"), refresh_s: float = 1.0) -> None:
        self.proc, self.refresh_s = proc, refresh_s
        self.addresses: dict[int, tuple[str, ...]] = {}  # kept after the namespace is gone
        self.resolved = 0
        self.unresolved = 0
        self._scanned = 0.0

    def refresh(self) -> None:
        """Read the addresses of every namespace a process lives in (each namespace once per scan)."""
        self._scanned = time.monotonic()
        seen: set[int] = set()
        try:
            pids = [e for e in os.listdir(self.proc) if e.isdigit()]
        except OSError:
            return
        for pid in pids:
            try:
                inode = os.stat(self.proc / pid / "ns" / "net").st_ino
                if inode in seen:
                    continue
                seen.add(inode)
                v4 = parse_fib_trie((self.proc / pid / "net" / "fib_trie").read_text())
                v6 = parse_if_inet6((self.proc / pid / "net" / "if_inet6").read_text())
            except (OSError, ValueError):
                continue  # the process exited meanwhile, or no permission
            found = tuple(sorted(a for a in v4 | v6 if _usable(a)))
            if found or inode not in self.addresses:  # a namespace seen before its addresses were set
                self.addresses[inode] = found

    def lookup(self, inode: int) -> tuple[str, ...]:
        """The namespace's addresses (rescanning once if unknown and the last scan is not fresh)."""
        if not self.addresses.get(inode) and time.monotonic() - self._scanned > 0.05:
            self.refresh()
        return self.addresses.get(inode, ())

    def tick(self) -> None:
        if time.monotonic() - self._scanned >= self.refresh_s:
            self.refresh()

    def resolve(self, events: list[PacketEvent]) -> list[PacketEvent]:
        """Replace each wildcard ``listen_close`` by one event per address of its namespace."""
        self.tick()
        if not any(e.kind == "listen_close" and e.src in WILDCARDS for e in events):
            return events
        out: list[PacketEvent] = []
        for e in events:
            if e.kind != "listen_close" or e.src not in WILDCARDS or not e.netns:
                out.append(e)
                continue
            addrs = [a for a in self.lookup(e.netns) if e.src == "::" or ":" not in a]
            if not addrs:
                self.unresolved += 1
                out.append(e)
                continue
            self.resolved += 1
            out += [dataclasses.replace(e, src=a, family=6 if ":" in a else 4) for a in addrs]
        return out

    def resolve_frame(self, frame: pd.DataFrame) -> pd.DataFrame:
        """:meth:`resolve` for a packet table: only the wildcard ``listen_close`` rows become objects."""
        self.tick()
        if frame.empty:
            return frame
        wild = (frame["kind"] == "listen_close") & frame["src"].isin(WILDCARDS)
        if not wild.any():
            return frame
        from auditor.agent.frames import concat_packet_frames, frame_events
        from auditor.model.packet import packet_frame

        named = packet_frame(self.resolve(frame_events(frame.loc[wild])))
        both = concat_packet_frames([frame.loc[~wild], named])
        return both.sort_values("time", kind="stable", ignore_index=True)
