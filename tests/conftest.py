"""Shared test helpers.

Tests that need root (network namespaces, iptables, bcc) run in CI, which is root; they skip only
where the capability is really missing, and say why.
"""

from __future__ import annotations

import os
import shutil
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
