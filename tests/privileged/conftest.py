"""Probe and agent tests load global eBPF programs and storm loopback: they take the host lock."""

from __future__ import annotations

import os
import subprocess
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
