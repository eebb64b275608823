"""What ``auditor rollout-test`` prints: the static audit, each test, the patch, before / after; and the
``--json`` document (stable keys: ``workload``, ``server``, ``static``, ``evidence``, ``tests``,
``patch``, ``applied``, ``before_after``, ``verdict``, ``exit_code``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from auditor.rollout.workload import grace_seconds, replicas

if TYPE_CHECKING:
    from pathlib import Path

    from auditor.rollout.runner import Outcome, TestRun

SCHEMA_VERSION = 1


def pct(failed: int, requests: int) -> str:
    """``0.70%``, ``0%`` (nothing failed), ``<0.01%``."""
    if not failed or not requests:
        return "0%"
    value = 100.0 * failed / requests
    return "<0.01%" if value < 0.01 else f"{value:.2f}%"


def static_lines(outcome: Outcome, obj: dict[str, Any]) -> list[str]:
    ref = outcome.ref
    n = replicas(ref.kind, obj)
    lines = [
        f"static audit of {ref.qualified} ({n if n is not None else '?'} replica(s), terminationGracePeriodSeconds "
        f"{grace_seconds(obj)} s); {outcome.support.line()}",
    ]
    for f in outcome.findings:
        lines.append(f"  {f.line()}")
        if f.severity != "note":
            lines.append(f"      why: {f.why}")
            lines.append(f"      fix: {f.fix}")
    lines.append(outcome.evidence_line)
    return lines


def client_line(run: TestRun) -> str:
    c = run.analysis.client
    return (f"{c.requests:,} requests, {c.failed:,} failed ({pct(c.failed, c.requests)}): {c.classes()}; "
            f"502s: {c.http_502:,}")  # fmt: skip


def test_lines(run: TestRun) -> list[str]:
    a = run.analysis
    lines = [
        f"test {run.label}: load {run.load} -> {run.url}; restart at {run.restart_at}",
        f"  rollout complete in {run.rollout_s:.1f} s ({run.rollout_summary})",
        f"  load: {client_line(run)}",
        f"  evidence: {'node agents + client' if a.mode == 'agents' else 'the client alone'}; "
        f"{a.terminations} termination(s) analyzed",
    ]
    lines += attribution_lines(run)
    lines += [f"  note: {n}" for n in run.notes + a.notes]
    lines.append(f"  {a.line}")
    return lines


def attribution_lines(run: TestRun) -> list[str]:
    """Where the client's failed requests went on the nodes' timeline (agents' evidence only): matched one
    to one to a node's failure of a termination, unexplained inside one, or outside any; and the
    reconciliation's notes on a difference."""
    recon = run.analysis.document.get("reconciliation") if run.analysis.mode == "agents" else None
    if not isinstance(recon, dict):
        return []
    placed = recon.get("placed")
    lines = []
    if isinstance(placed, dict) and placed.get("requests_failed"):
        matched = (placed.get("by_placement") or {}).get("matched") or {}
        by_class = ", ".join(f"{c} {n:,}" for c, n in sorted(matched.items())) or "-"
        lines.append(
            f"  attributed: {placed['matched']:,} of the client's {placed['requests_failed']:,} failed request(s) "
            f"matched one to one to the nodes' failures of the terminations ({by_class}); "
            f"{placed['unexplained']:,} unexplained inside terminations, {placed['outside_terminations']:,} "
            "outside any termination"
        )  # fmt: skip
    lines += [f"  attribution note: {n}" for n in recon.get("notes") or []]
    return lines


def patch_lines(outcome: Outcome, patch_out: Path | None) -> list[str]:
    patch = outcome.patch
    if patch is None:
        return []
    what = "measured" if outcome.measured else "NOT measured"
    lines = [f"fix ({what}): preStop >= {patch.prestop_seconds} s, terminationGracePeriodSeconds {patch.grace_seconds} s "
             f"(>= {patch.grace_needed} s needed); {outcome.patch_basis}"]  # fmt: skip
    lines += [f"  change: {c}" for c in patch.changes] or ["  no change: the workload already has it"]
    lines += [f"  WARNING: {w}" for w in patch.warnings]
    if patch_out is not None:
        lines.append(f"  patch written to {patch_out} (kubectl -n {outcome.ref.namespace} patch {outcome.ref.kind} "
                     f"{outcome.ref.name} --patch-file {patch_out})")  # fmt: skip
    else:
        lines += ["", patch.text.rstrip("\n"), ""]
    return lines


def before_after(outcome: Outcome) -> list[str]:
    """``before: ...`` / ``after: ...`` and ``0.70% failed -> 0%`` (only when the patch was applied)."""
    if not outcome.applied or len(outcome.tests) < 2:
        return []
    before, after = outcome.tests[0], outcome.tests[-1]
    out = []
    for label, run in (("before", before), ("after", after)):
        c = run.analysis.client
        out.append(f"{label + ':':7} {c.requests:,} requests, {c.failed:,} failed ({pct(c.failed, c.requests)}): "
                   f"{c.classes()}; 502s: {c.http_502:,}; {run.analysis.verdict}")  # fmt: skip
    b, a = before.analysis, after.analysis
    out.append(f"{pct(b.client.failed, b.client.requests)} failed -> {pct(a.client.failed, a.client.requests)}: "
               f"{b.verdict} -> {a.verdict}")  # fmt: skip
    return out


def closing_lines(outcome: Outcome) -> list[str]:
    """After the tests (the static audit, each test and the patch are printed as they come)."""
    lines = [f"note: {n}" for n in outcome.notes]
    lines += before_after(outcome)
    lines.append(f"verdict: {outcome.verdict} (exit {outcome.exit_code})")
    return lines


def document(outcome: Outcome, patch_out: Path | None, cleanup: list[str]) -> dict[str, Any]:
    ref = outcome.ref
    return {
        "schema_version": SCHEMA_VERSION,
        "workload": {"kind": ref.kind_name, "namespace": ref.namespace, "name": ref.name},
        "server": {"version": outcome.server.text, "native_sleep": outcome.support.native,
                   "sleep_action_state": outcome.support.state},
        "static": [f.as_dict() for f in outcome.findings],
        "evidence": outcome.evidence_line,
        "tests": [t.as_dict() for t in outcome.tests],
        "patch": {**outcome.patch.as_dict(), "measured": outcome.measured, "basis": outcome.patch_basis,
                  "file": str(patch_out) if patch_out else None} if outcome.patch else None,
        "applied": outcome.applied,
        "apply_rollout_seconds": outcome.apply_rollout_s,
        "before_after": before_after(outcome),
        "notes": outcome.notes,
        "cleanup": cleanup,
        "verdict": outcome.verdict,
        "exit_code": outcome.exit_code,
    }


__all__ = ["attribution_lines", "before_after", "client_line", "closing_lines", "document", "patch_lines", "pct", "static_lines", "test_lines"]
