"""ruff, mypy and import-linter are part of the checks: the suite fails when any finds a problem.

The import contracts (which package may import which, who may import the Kubernetes client and bcc)
are in pyproject.toml, ``[tool.importlinter]``.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

BIN = Path(sys.executable).parent


def _tool(name: str) -> str:
    path = BIN / name
    if path.exists():
        return str(path)
    found = shutil.which(name)
    if found is None:
        pytest.skip(f"{name} is not installed (it is a dev extra: pip install -e '.[dev]')")
    return found


def test_ruff_check_is_clean() -> None:
    proc = subprocess.run([_tool("ruff"), "check", "auditor", "tests", "bench"], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_mypy_is_clean() -> None:
    proc = subprocess.run([_tool("mypy")], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_import_contracts_are_kept() -> None:
    proc = subprocess.run(
        [_tool("lint-imports"), "--no-cache", "--no-logo"], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
