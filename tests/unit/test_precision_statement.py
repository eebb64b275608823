"""Issue 14, item 4: with only one-second object timestamps, the report says by how much the
recommendation may be inflated, and names the precise recorder; with receipt times it says nothing.

Input: the shipped lab example (a 1.0 s propagation delay, preStop 0), once as recorded (``observedAt`` on
every event) and once as a plain ``kubectl --watch`` writes it (``observedAt`` removed).
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from auditor.report.document import precision_statement
from tests.conftest import REPO

EXAMPLE = REPO / "examples" / "rollout"


def _plain_kubectl(path: Path) -> Path:
    """The example's stream without receipt times: what `kubectl get --watch -o json` writes."""
    text = (EXAMPLE / "kube.json").read_text()
    dec, i, out = json.JSONDecoder(), 0, []
    while True:
        while i < len(text) and text[i].isspace():
            i += 1
        if i >= len(text):
            break
        obj, i = dec.raw_decode(text, i)
        assert obj.pop("observedAt", None) is not None
        out.append(json.dumps(obj))
    path.write_text("\n".join(out) + "\n")
    return path


def _analyze(kube: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "auditor", "analyze", "--pcap", f"lab-node={EXAMPLE / 'node.pcap'}",
           "--kube", str(kube), *extra]  # fmt: skip
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return proc


@pytest.fixture(scope="module")
def truth() -> dict[str, Any]:
    return dict(json.loads((EXAMPLE / "truth.json").read_text()))


def test_coarse_times_say_how_much_the_recommendation_may_be_inflated(tmp_path: Path, truth: dict[str, Any]) -> None:
    doc = json.loads(_analyze(_plain_kubectl(tmp_path / "plain.json"), "--json").stdout)
    p = doc["precision"]
    rec = doc["recommendation"]
    real = max((e["t_rule_removed_after"] - e["t_delete"]) / 1e9 for e in truth["old_pods"])
    # the engine's delay is the real one plus up to the one-second truncation of the deletion time
    assert real - 0.05 <= rec["max_propagation_delay_s"] <= real + 1.0
    assert p["coarse_delays"] > 0 and p["precise_delays"] == 0 and p["resolution_s"] == 1.0
    # what the recommendation would be with the delays one second shorter, by the engine's own rule
    lower = max(rec["max_propagation_delay_s"] - 1.0, 0.0)
    assert p["prestop_seconds_at_least"] == max(1, math.ceil(lower + rec["margin_seconds"]))
    assert p["inflation_s"] == rec["prestop_seconds"] - p["prestop_seconds_at_least"]
    # the real delay (1.0 s here) needs ceil(real + margin): the lower bound never goes under it
    assert p["prestop_seconds_at_least"] <= math.ceil(real + rec["margin_seconds"]) <= rec["prestop_seconds"]
    statement = p["statement"]
    assert "may be up to 1 s too long" in statement and "auditor record --kube-only" in statement
    n = len(truth["old_pods"])
    assert f"the propagation delays of {n} of {n} terminations" in statement
    if p["inflation_s"]:
        assert f"recommended preStop of {rec['prestop_seconds']} s may be {int(p['inflation_s'])} s more" in statement
    # the terminal, HTML and Markdown reports say it too
    term = _analyze(tmp_path / "plain.json", "--html", str(tmp_path / "r.html")).stdout
    assert "precision: the propagation delays of" in " ".join(term.split())
    assert "auditor record --kube-only" in (tmp_path / "r.html").read_text()
    _analyze(tmp_path / "plain.json", "--html", str(tmp_path / "r.md"))
    assert "> precision: the propagation delays of" in (tmp_path / "r.md").read_text()


def test_receipt_times_need_no_statement(truth: dict[str, Any]) -> None:
    doc = json.loads(_analyze(EXAMPLE / "kube.json", "--json").stdout)
    p = doc["precision"]
    assert p["coarse_delays"] == 0 and p["precise_delays"] > 0
    assert p["statement"] is None and p["inflation_s"] == 0.0
    real = max((e["t_rule_removed_after"] - e["t_delete"]) / 1e9 for e in truth["old_pods"])
    assert doc["recommendation"]["prestop_seconds"] == math.ceil(real + doc["recommendation"]["margin_seconds"])
    assert "precision:" not in _analyze(EXAMPLE / "kube.json").stdout


def _doc(rows: list[tuple[float, bool]], prestop: int, worst: float) -> dict[str, Any]:
    rec = {"prestop_seconds": prestop, "max_propagation_delay_s": worst, "margin_seconds": 0.5, "max_drain_s": None}
    episodes = [{"nodes": [{"propagation_delay_s": d, "propagation_delay_precise": ok}], "consumers": []}
                for d, ok in rows]  # fmt: skip
    return {"recommendation": rec, "episodes": episodes}


def test_a_precise_delay_above_the_coarse_ones_keeps_the_recommendation() -> None:
    # the largest delay is precise: the coarse ones, even shortened, change nothing
    p = precision_statement(_doc([(2.2, True), (1.9, False)], 3, 2.2))
    assert p["statement"] is not None and p["inflation_s"] == 0.0 and p["prestop_seconds_at_least"] is None
    assert "1 of 2 terminations" in p["statement"]


def test_a_coarse_delay_cannot_shrink_below_a_precise_one() -> None:
    # coarse 2.3 s -> at least 1.3 s, but a precise 1.8 s was measured: 1.8 + 0.5 -> 3 s; no inflation
    p = precision_statement(_doc([(2.3, False), (1.8, True)], 3, 2.3))
    assert p["prestop_seconds_at_least"] == 3 and p["inflation_s"] == 0.0
    assert "stays the same either way" in p["statement"]
    # without the precise one it could be 2 s
    p = precision_statement(_doc([(2.3, False)], 3, 2.3))
    assert p["prestop_seconds_at_least"] == 2 and p["inflation_s"] == 1.0
    assert "may be 1 s more than needed (2 s would do then)" in p["statement"]
