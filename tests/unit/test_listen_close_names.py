"""Wildcard listen_close events named by their network namespace's addresses (no root)."""

from __future__ import annotations

from auditor.agent.listeners import NetnsAddressBook, parse_fib_trie, parse_if_inet6
from auditor.model.packet import PacketEvent

FIB = """Local:
  +-- 0.0.0.0/0 3 0 4
     |-- 10.244.0.11
        /32 host LOCAL
     |-- 127.0.0.1
        /32 host LOCAL
"""


def test_parsers_read_local_addresses() -> None:
    assert parse_fib_trie(FIB) == {"10.244.0.11", "127.0.0.1"}
    line = "fd000000000000000000000000000007 02 80 00 80 eth0\nfe800000000000000000000000000001 02 40 20 80 eth0\n"
    assert parse_if_inet6(line) == {"fd00::7"}


def test_wildcard_listener_becomes_the_pod_ip() -> None:
    book = NetnsAddressBook(refresh_s=3600)
    book._scanned = 1e18  # no /proc scan in this test
    book.addresses[42] = ("10.244.0.11",)
    ev = PacketEvent(1, "listen_close", 4, "0.0.0.0", 8080, "0.0.0.0", 0, netns=42, source="ebpf")
    other = PacketEvent(2, "listen_close", 4, "0.0.0.0", 8080, "0.0.0.0", 0, netns=7, source="ebpf")
    out = book.resolve([ev, other])
    assert [e.src for e in out] == ["10.244.0.11", "0.0.0.0"]
    assert (book.resolved, book.unresolved) == (1, 1)
