"""Shared test helpers.

Tests that need root (network namespaces, iptables, bcc) run in CI, which is root; they skip only
where the capability is really missing, and say why.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"
CORPUS = SHARED / "corpus"


def require_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces / iptables / bcc); CI runs as root")


def require_tool(*names: str) -> None:
    for name in names:
        if shutil.which(name) is None:
            pytest.skip(f"needs the '{name}' command (installed by .ci/install)")


@pytest.fixture
def root() -> None:
    require_root()


# Lab rollouts and probe storms own the host while they run: the eBPF probes are global, the lab
# removes namespaces left by crashed runs before it starts, and the tests assert exact counts. Two
# sessions (a developer's and a CI clone's, or two helpers) therefore take turns through this lock.
HOST_LOCK = Path(os.environ.get("AUDITOR_TEST_HOST_LOCK", "/run/lock/auditor-lab.lock"))
_host_lock_depth = 0
_host_lock_fd = -1
_host_lock_mutex = threading.Lock()


@contextmanager
def exclusive_host() -> Iterator[None]:
    """Hold the host-wide lab lock (re-entrant within this process; blocks while another holds it)."""
    global _host_lock_depth, _host_lock_fd
    with _host_lock_mutex:
        if _host_lock_depth == 0:
            HOST_LOCK.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(HOST_LOCK, os.O_RDWR | os.O_CREAT, 0o666)
            fcntl.flock(fd, fcntl.LOCK_EX)
            _host_lock_fd = fd
        _host_lock_depth += 1
    try:
        yield
    finally:
        with _host_lock_mutex:
            _host_lock_depth -= 1
            if _host_lock_depth == 0:
                os.close(_host_lock_fd)  # closing the descriptor releases the flock
                _host_lock_fd = -1
