"""The shipped example's analysis does not change when the engine is refactored.

``tests/data/golden/rollout-analyze.json`` is ``auditor analyze --json`` on ``examples/rollout`` as the
engine produced it before the typed-pipeline rewrite (issue 9, commit f1194e8). Any change to an
episode, a cause count, a timeline or the recommendation shows here as a diff of the JSON document.
"""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import REPO

GOLDEN = REPO / "tests" / "data" / "golden" / "rollout-analyze.json"
ARGS = [
    "analyze", "--json", "--pcap", "examples/rollout/node.pcap", "--kube", "examples/rollout/kube.json",
    "--client", "examples/rollout/hey.txt", "--node", "lab-node",
]  # fmt: skip


def _run() -> dict[str, object]:
    proc = subprocess.run(
        [sys.executable, "-m", "auditor", *ARGS], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    doc: dict[str, object] = json.loads(proc.stdout)
    return doc


def test_example_rollout_document_is_unchanged() -> None:
    golden = json.loads(GOLDEN.read_text(encoding="utf-8"))
    doc = _run()
    for key in ("verdict", "verdict_line", "recommendation", "causes", "nodes", "rollouts", "episodes",
                "client", "reconciliation", "precision"):  # fmt: skip
        assert doc[key] == golden[key], key
    # what was read is the same too (new counters may be added, none may change)
    inputs = doc["inputs"]
    assert isinstance(inputs, dict)
    for key, value in golden["inputs"].items():
        assert inputs.get(key) == value, key


def test_notebook_api_gives_the_same_document() -> None:
    import auditor

    golden = json.loads(GOLDEN.read_text(encoding="utf-8"))
    a = auditor.analyze(
        pcaps=str(REPO / "examples/rollout/node.pcap"), kube=str(REPO / "examples/rollout/kube.json"),
        client=str(REPO / "examples/rollout/hey.txt"), node="lab-node",
    )  # fmt: skip
    doc = a.document()
    for key in ("verdict", "recommendation", "causes", "nodes", "rollouts", "episodes"):
        assert doc[key] == golden[key], key
