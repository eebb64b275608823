"""The notebooks execute top to bottom on the shipped example with the venv's kernel and produce plots.

Each notebook runs in a kernel started from this interpreter (a kernelspec written for the test and
found first through ``JUPYTER_PATH``, so a user's or the system's ``python3`` kernelspec cannot
shadow it; a last cell checks ``sys.prefix``), with ``notebooks/`` as the working directory; a
failing cell fails the test. Committed notebooks carry no outputs.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

NOTEBOOKS = REPO / "notebooks"
EXAMPLE = REPO / "examples" / "rollout"
# at least this many cells of each notebook render a figure
KERNEL = "auditor-test-venv"
MIN_PLOTS = {"01-example-rollout.ipynb": 4, "02-your-own-capture.ipynb": 4}

pytestmark = [
    # jupyter_core/jupyter_client announce path and API migrations as DeprecationWarnings
    pytest.mark.filterwarnings("ignore::DeprecationWarning:jupyter_core.*"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning:jupyter_client.*"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning:zmq.*"),
    pytest.mark.filterwarnings("ignore:Proactor event loop:RuntimeWarning"),
]


def _notebooks() -> list[Path]:
    return sorted(NOTEBOOKS.glob("*.ipynb"))


def test_there_are_notebooks_without_outputs() -> None:
    names = [p.name for p in _notebooks()]
    assert set(MIN_PLOTS) <= set(names)
    for path in _notebooks():
        nb = json.loads(path.read_text())
        for cell in nb["cells"]:
            if cell["cell_type"] == "code":
                assert cell.get("outputs") == [], f"{path.name}: clear the outputs before committing"
                assert cell.get("execution_count") is None, f"{path.name}: clear the execution counts"


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(MIN_PLOTS))
def test_notebook_executes_and_plots(name: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    if not (EXAMPLE / "node.pcap").exists():
        pytest.skip("examples/rollout is not in this checkout")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    spec = tmp_path / "jupyter" / "kernels" / KERNEL
    spec.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (spec / "kernel.json").write_text(
        json.dumps({"argv": argv, "display_name": KERNEL, "language": "python"})
    )
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    # which interpreter runs the kernel: must be the one running the tests (the venv)
    nb.cells.append(nbformat.v4.new_code_cell("import sys\nprint(sys.prefix)", id="probe-interpreter"))
    client = nbclient.NotebookClient(
        nb,
        kernel_name=KERNEL,
        timeout=300,  # per cell
        startup_timeout=120,
        resources={"metadata": {"path": str(NOTEBOOKS)}},
    )
    client.execute()  # raises CellExecutionError on the first failing cell

    probe = nb.cells[-1].outputs
    printed = "".join(o.get("text", "") for o in probe if o.get("output_type") == "stream")
    assert Path(printed.strip()).resolve() == Path(sys.prefix).resolve()

    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors
    plots = [
        c.id
        for c in nb.cells
        if c.cell_type == "code"
        and any(
            "image/png" in o.get("data", {})
            for o in c.outputs
            if o.output_type in ("display_data", "execute_result")
        )
    ]
    assert len(plots) >= MIN_PLOTS[name], f"only {len(plots)} cells produced a plot: {plots}"
    text = "".join(
        o.get("text", "") + str(o.get("data", {}).get("text/plain", ""))
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.outputs
    )
    assert "GAP default/web" in text  # the verdict of the example is printed
