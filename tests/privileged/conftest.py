"""Probe and agent tests load global eBPF programs and storm loopback: they take the host lock."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conftest import exclusive_host


@pytest.fixture(scope="session", autouse=True)
def _own_the_host() -> Iterator[None]:
    """Another session's lab or storm would show up in these tests' exact counts (and theirs in ours)."""
    with exclusive_host():
        yield
