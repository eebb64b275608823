"""The shipped example's analysis does not change when the engine is refactored.

``tests/data/golden/rollout-analyze.json`` is ``auditor analyze --json`` on ``examples/rollout`` as the
engine produced it before the typed-pipeline rewrite (issue 9, commit f1194e8). Any change to an
episode, a cause count, a timeline or the recommendation shows here as a diff of the JSON document.
Fields added since (evidence, verdict reasons, client formats) are allowed: every value the golden
document holds must be in today's, equal, except the verdict sentences, rewritten in issue 10.
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


REWRITTEN = {"verdict_line"}  # issue 10: one clear sentence per verdict


def assert_holds(golden: object, doc: object, where: str = "") -> None:
    """Every value of ``golden`` is in ``doc``, equal (dicts may have gained keys)."""
    if isinstance(golden, dict):
        assert isinstance(doc, dict), where
        for key, value in golden.items():
            if key not in REWRITTEN:
                assert key in doc, f"{where}.{key} missing"
                assert_holds(value, doc[key], f"{where}.{key}")
    elif isinstance(golden, list):
        assert isinstance(doc, list) and len(doc) == len(golden), where
        for i, (g, d) in enumerate(zip(golden, doc, strict=True)):
            assert_holds(g, d, f"{where}[{i}]")
    else:
        assert doc == golden, f"{where}: {doc!r} != {golden!r}"


def test_example_rollout_document_is_unchanged() -> None:
    golden = json.loads(GOLDEN.read_text(encoding="utf-8"))
    doc = _run()
    assert_holds(golden, doc)
    assert isinstance(doc["verdict_line"], str) and doc["verdict_line"].startswith("GAP default/web: 168 ")


def test_notebook_api_gives_the_same_document() -> None:
    import auditor

    golden = json.loads(GOLDEN.read_text(encoding="utf-8"))
    a = auditor.analyze(
        pcaps=str(REPO / "examples/rollout/node.pcap"), kube=str(REPO / "examples/rollout/kube.json"),
        client=str(REPO / "examples/rollout/hey.txt"), node="lab-node",
    )  # fmt: skip
    doc = a.document()
    for key in ("verdict", "recommendation", "causes", "nodes", "rollouts", "episodes"):
        assert_holds(golden[key], doc[key], key)
