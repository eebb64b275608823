"""The terminal report: tables per rollout and episode, then the verdict (``auditor analyze``)."""

from __future__ import annotations

import sys
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from auditor.correlate.causes import CAUSES


def _t(iso: str | None, precise: bool = True) -> str:
    if not iso:
        return "-"
    text = iso[11:23]  # HH:MM:SS.mmm
    return text if precise else f"~{iso[11:19]}"


def _s(v: float | None, digits: int = 3) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def render_terminal(doc: dict[str, Any], console: Console | None = None) -> None:
    con = console or Console(width=None if sys.stdout.isatty() else 160)
    inputs = doc["inputs"]
    con.print(f"[bold]auditor analyze[/bold]  nodes: {', '.join(inputs.get('nodes') or ['-'])}")
    _inputs_line(con, inputs)
    for rollout in doc["rollouts"]:
        eps = [e for e in doc["episodes"] if e["rollout"] == rollout["rollout"]]
        table = Table(
            title=f"rollout {rollout['rollout']}: {rollout['episodes']} termination(s)", title_justify="left"
        )
        for col in ("pod", "ip", "node", "deleted", "listener closed", "rule removed", "delay s", "gap s"):
            table.add_column(col, no_wrap=True)
        for c in CAUSES[:3]:
            table.add_column(c.replace("_", " "), justify="right")
        for e in eps:
            for n in e["nodes"] or [{}]:
                table.add_row(
                    e["pod"],
                    e["ip"],
                    n.get("node") or "-",
                    _t(e["deleted"], e["deleted_precise"]),
                    _t(n.get("listener_closed")) + _src(n.get("listener_closed_source")),
                    _t(n.get("rule_removed")) + _src(n.get("rule_removed_source")),
                    _s(n.get("propagation_delay_s")),
                    _s(n.get("gap_s")),
                    *(str((n.get("causes") or {}).get(c, 0)) for c in CAUSES[:3]),
                )
        con.print(table)
    causes = Table(title="failed connections by cause", title_justify="left")
    for c in CAUSES:
        causes.add_column(c, justify="right")
    causes.add_row(*(str(doc["causes"][c]) for c in CAUSES))
    con.print(causes)
    if doc["nodes"]:
        nodes = Table(
            title="propagation delay per node (deletion -> this node stopped routing)", title_justify="left"
        )
        for col in ("node", "episodes", "median s", "max s", "max gap s"):
            nodes.add_column(col, justify="right")
        for n in doc["nodes"]:
            nodes.add_row(
                n["node"] or "-",
                str(n["episodes_measured"]),
                _s(n["median_propagation_delay_s"]),
                _s(n["max_propagation_delay_s"]),
                _s(n["max_gap_s"]),
            )
        con.print(nodes)
    for rollout in doc["rollouts"]:
        consumers = rollout.get("consumers") or {}
        if not consumers:
            continue
        table = Table(title=f"consumers of {rollout['rollout']} (deletion -> last new connection to the pod)",
                      title_justify="left")  # fmt: skip
        for col in ("kind", "consumer", "nodes", "max delay s", "max gap s", "refused", "resets"):
            table.add_column(col, justify="right" if col.endswith(("s", "refused")) else "left")
        for c in consumers.values():
            table.add_row(c["kind"], c["consumer"], ",".join(c["nodes"]), _s(c["max_propagation_delay_s"]),
                          _s(c["max_gap_s"]), str(c["refused"]), str(c["resets"]))  # fmt: skip
        con.print(table)
    rec = doc["recommendation"]
    if rec and rec.get("prestop_seconds"):
        con.print(
            f"recommendation: preStop sleep >= {rec['prestop_seconds']} s, terminationGracePeriodSeconds >= "
            f"{rec['termination_grace_period_seconds']} s  ({rec['basis']})"
        )
    statement = (doc.get("precision") or {}).get("statement")
    if statement:
        con.print(f"[yellow]{escape(statement)}[/yellow]", soft_wrap=True)
    recon = doc.get("reconciliation")
    if recon:
        con.print(
            f"client ({recon['client_tool']}): {recon['client_requests']} requests, {recon['client_failed']} failed "
            f"({recon['client_refused']} refused, {recon['client_reset']} reset/EOF); the nodes attribute "
            f"{recon['node_refused']} refused and {recon['node_reset']} reset to terminations "
            f"({recon['node_unrelated']} other failures are unrelated, e.g. probes of pods not yet listening)"
        )
        placed = recon.get("placed")
        if placed:
            con.print(
                f"  client failures on the timeline: {placed['matched']} matched to node failures, "
                f"{placed['unexplained']} unexplained inside terminations, {placed['outside_terminations']} "
                "outside any termination"
            )
        for note in recon["notes"]:
            con.print(f"  note: {note}")
    con.print("times: HH:MM:SS.mmm UTC are precise; ~HH:MM:SS are Kubernetes object times (1 s resolution)")
    style = {"GAP": "bold red", "SAFE": "bold green"}.get(doc["verdict"], "bold yellow")
    reasons = list(doc.get("verdict_reasons") or [])
    if doc["verdict"] == "INCONCLUSIVE" and len(reasons) > 1:
        con.print("what the inputs lack:")
        for r in reasons[:10]:
            con.print(f"  - {r}", soft_wrap=True, markup=False)
        if len(reasons) > 10:
            con.print(f"  ... and {len(reasons) - 10} more (see --json)")
    con.print(f"[{style}]{escape(doc['verdict_line'])}[/{style}]", soft_wrap=True)


def _src(source: str | None) -> str:
    if not source:
        return ""
    return "*" if source.startswith("inferred") else ""


def _inputs_line(con: Console, inputs: dict[str, Any]) -> None:
    parts = [
        f"packet events {inputs.get('packet_events', 0)}",
        f"failures {inputs.get('failures', 0)} ({inputs.get('failures_unmatched', 0)} outside any termination)",
    ]
    if "capture_frames" in inputs:
        parts.append(f"frames {inputs['capture_frames']} (skipped {inputs.get('capture_skipped', 0)})")
    if "kube_events_read" in inputs:
        kinds = inputs.get("kube_skipped_kinds") or {}
        which = ": " + ", ".join(f"{n} {k}" for k, n in kinds.items()) if kinds else ""
        parts.append(
            f"kube events {inputs['kube_events_read']} (skipped {inputs.get('kube_events_skipped', 0)}{which})"
        )
    if "dataplane_records" in inputs:
        parts.append(f"dataplane records {inputs['dataplane_records']}")
    con.print("inputs: " + "; ".join(parts))
    problems = list(inputs.get("problems") or [])
    for p in problems[:10]:
        con.print(f"  [yellow]warning[/yellow]: {p}")
    if len(problems) > 10:
        con.print(f"  ... and {len(problems) - 10} more problems (see --json)")
    con.print(
        "  (* = time inferred from packets: rule removed = last SYN routed to the pod; listener closed = between "
        "its last SYN-ACK and its first refusal)"
    )
