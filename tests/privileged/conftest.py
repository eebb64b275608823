"""Probe and agent tests load global eBPF programs and storm loopback: they take the host lock."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import exclusive_host, require_root, require_tool


@pytest.fixture(scope="session", autouse=True)
def _own_the_host() -> Iterator[None]:
    """Another session's lab or storm would show up in these tests' exact counts (and theirs in ours)."""
    with exclusive_host():
        yield


@pytest.fixture
def netns() -> Iterator[tuple[str, int]]:
    """A fresh network namespace with loopback up: (name, inode), deleted afterwards."""
    require_root()
    require_tool("ip")
    name = f"pv{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True, timeout=10)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True, timeout=10)
        yield name, os.stat(Path("/run/netns") / name).st_ino
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False, timeout=10)


# A refusal storm inside a namespace: `count` connects to a closed port of a loopback address of its own,
# back to back; prints how many were refused (the storm's own count).
_STORM = """
import socket, sys
addr, port, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
refused = 0
for _ in range(count):
    s = socket.socket()
    try:
        s.connect((addr, port))
    except ConnectionRefusedError:
        refused += 1
    s.close()
print(refused)
"""


def refusal_storm(netns: str, addr: str, port: int, count: int) -> int:
    """Run the storm in ``netns`` (bounded: ``count`` connects, 120 s); the connections it saw refused."""
    out = subprocess.run(["ip", "netns", "exec", netns, sys.executable, "-c", _STORM, addr, str(port), str(count)],
                         capture_output=True, text=True, timeout=120, check=True)  # fmt: skip
    return int(out.stdout)
