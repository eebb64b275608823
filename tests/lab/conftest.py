"""Lab runs as session fixtures: each scenario runs once, whichever test files use it.

``gap_run`` (preStop 0, delay 1 s), ``gap2_run`` (delay 2 s), ``safe_run`` (preStop 3 s),
``keepalive_run`` (keep-alive load, server aborting kept-alive connections after 0.3 s).
Each needs root, hey, tcpdump and iptables-nft-restore, and skips with the reason otherwise.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conftest import exclusive_host, require_root, require_tool
from tests.lab import LabConfig, LabRun, run_rollout


@pytest.fixture(scope="session", autouse=True)
def _own_the_host() -> Iterator[None]:
    """Lab tests assert exact counts: no other session's lab or storm may run beside them."""
    with exclusive_host():
        yield


def _run(tmp_path_factory: pytest.TempPathFactory, name: str, cfg: LabConfig) -> LabRun:
    require_root()
    require_tool("hey", "tcpdump", "iptables-nft-restore", "ip")
    return run_rollout(cfg, tmp_path_factory.mktemp(name))


@pytest.fixture(scope="session")
def gap_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabRun]:
    yield _run(tmp_path_factory, "gap", LabConfig(prestop=0, delay=1.0))


@pytest.fixture(scope="session")
def gap2_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabRun]:
    yield _run(tmp_path_factory, "gap2", LabConfig(prestop=0, delay=2.0))


@pytest.fixture(scope="session")
def safe_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabRun]:
    yield _run(tmp_path_factory, "safe", LabConfig(prestop=3, delay=1.0))


@pytest.fixture(scope="session")
def keepalive_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabRun]:
    # by default the server then leaves kept-alive connections open and aborts them after 0.3 s;
    # 30 workers: enough connections that each old pod holds some
    cfg = LabConfig(prestop=0, delay=1.0, keepalive=True, workers=30)
    assert cfg.keep_idle and cfg.drain == 0.3
    yield _run(tmp_path_factory, "keepalive", cfg)
