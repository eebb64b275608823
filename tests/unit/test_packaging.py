"""An installed auditor (a wheel, as the DaemonSet's image installs it) carries the probes' C sources."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_wheel_ships_every_probe_source_and_finds_them(tmp_path: Path) -> None:
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), str(REPO)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert built.returncode == 0, built.stderr[-2000:]
    (wheel,) = tmp_path.glob("auditor-*.whl")
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as z:
        z.extractall(site)
    sources = sorted(p.name for p in (REPO / "probes").iterdir() if p.suffix in (".c", ".h"))
    assert "nft_commit.c" in sources and "common.h" in sources
    shipped = site / "auditor" / "_probes"
    assert sorted(p.name for p in shipped.iterdir()) == sources
    for name in sources:
        assert (shipped / name).read_bytes() == (REPO / "probes" / name).read_bytes(), name
    # the installed copy (no checkout beside it) resolves its own _probes directory
    env = {"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"}
    found = subprocess.run(
        [sys.executable, "-I", "-c", "import sys; sys.path.insert(0, sys.argv[1]); "
         "from auditor.sources.live.probes_dir import find_probes_dir; print(find_probes_dir())", str(site)],
        capture_output=True, text=True, timeout=60, env=env, cwd=tmp_path,
    )  # fmt: skip
    assert found.returncode == 0, found.stderr
    assert Path(found.stdout.strip()) == shipped
