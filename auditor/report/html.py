"""HTML (self-contained, PNGs inlined) or Markdown (PNGs beside it) report with a timeline per rollout."""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Any

from auditor.correlate.audit import AuditResult
from auditor.correlate.causes import CAUSES
from auditor.report.plots import plot_delay_distribution, plot_rollout_timeline


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    return buf.getvalue()


def _figures(res: AuditResult) -> list[tuple[str, bytes]]:
    figs = [(f"timeline of {r.rollout}", _png(plot_rollout_timeline(res, r.rollout))) for r in res.rollouts]
    if not res.timelines.empty:
        figs.append(("propagation delay per node", _png(plot_delay_distribution(res))))
    return figs


def _episode_rows(doc: dict[str, Any]) -> list[list[str]]:
    rows = []
    for e in doc["episodes"]:
        for n in e["nodes"] or [{}]:
            rows.append(
                [
                    e["rollout"],
                    e["pod"],
                    e["ip"],
                    n.get("node") or "-",
                    (e["deleted"] or "-") + ("" if e["deleted_precise"] else " (coarse)"),
                    f"{n.get('listener_closed') or '-'} ({n.get('listener_closed_source') or '-'})",
                    f"{n.get('rule_removed') or '-'} ({n.get('rule_removed_source') or '-'})",
                    "-" if n.get("propagation_delay_s") is None else f"{n['propagation_delay_s']:.3f}",
                    "-" if n.get("gap_s") is None else f"{n['gap_s']:.3f}",
                    *(str((n.get("causes") or {}).get(c, 0)) for c in CAUSES[:3]),
                ]
            )
    return rows


HEADERS = ["rollout", "pod", "ip", "node", "deleted", "listener closed", "rule removed", "delay s", "gap s",
           "propagation gap", "inflight reset", "after removal"]  # fmt: skip


def write_report(res: AuditResult, doc: dict[str, Any], path: str | Path) -> list[Path]:
    """Write the report; returns the files written (the report and, for Markdown, its PNGs)."""
    out = Path(path)
    figs = _figures(res)
    rec = doc["recommendation"] or {}
    statement = (doc.get("precision") or {}).get("statement")
    if out.suffix.lower() in (".md", ".markdown"):
        written = []
        lines = [f"# auditor report\n\n**{doc['verdict_line']}**\n"]
        if doc.get("verdict_reasons"):
            lines.append(
                "What the inputs lack:\n\n" + "\n".join(f"- {r}" for r in doc["verdict_reasons"]) + "\n"
            )
        if rec.get("prestop_seconds"):
            lines.append(
                f"Recommendation: preStop sleep >= {rec['prestop_seconds']} s, terminationGracePeriodSeconds >= "
                f"{rec['termination_grace_period_seconds']} s ({rec['basis']}).\n"
            )
        if statement:
            lines.append(f"> {statement}\n")
        lines.append("| " + " | ".join(CAUSES) + " |\n|" + "---|" * len(CAUSES))
        lines.append("| " + " | ".join(str(doc["causes"][c]) for c in CAUSES) + " |\n")
        lines.append("| " + " | ".join(HEADERS) + " |\n|" + "---|" * len(HEADERS))
        lines += ["| " + " | ".join(r) + " |" for r in _episode_rows(doc)]
        for i, (title, png) in enumerate(figs):
            img = out.with_name(f"{out.stem}-{i}.png")
            img.write_bytes(png)
            written.append(img)
            lines.append(f"\n## {title}\n\n![{title}]({img.name})")
        lines.append(f"\nInputs: `{doc['inputs']}`\n")
        out.write_text("\n".join(lines) + "\n")
        return [out, *written]
    esc = html.escape
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>auditor report</title>",
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:2px 6px;font-size:90%}.GAP{color:#b00}.SAFE{color:#070}"
        ".INCONCLUSIVE{color:#a60}</style>",
        "</head><body><h1>auditor report</h1>",
        f"<p class='{esc(doc['verdict'])}'><b>{esc(doc['verdict_line'])}</b></p>",
    ]
    if doc.get("verdict_reasons"):
        parts.append(
            "<p>What the inputs lack:</p><ul>"
            + "".join(f"<li>{esc(r)}</li>" for r in doc["verdict_reasons"])
            + "</ul>"
        )
    if rec.get("prestop_seconds"):
        parts.append(
            f"<p>Recommendation: preStop sleep &ge; {rec['prestop_seconds']} s, terminationGracePeriodSeconds "
            f"&ge; {rec['termination_grace_period_seconds']} s <small>({esc(rec['basis'])})</small></p>"
        )
    if statement:
        parts.append(f"<p class='precision'><b>{esc(statement)}</b></p>")
    parts.append("<h2>Failed connections by cause</h2><table><tr>")
    parts += [f"<th>{c}</th>" for c in CAUSES] + ["</tr><tr>"]
    parts += [f"<td>{doc['causes'][c]}</td>" for c in CAUSES] + ["</tr></table>"]
    parts.append("<h2>Episodes</h2><table><tr>" + "".join(f"<th>{esc(h)}</th>" for h in HEADERS) + "</tr>")
    for r in _episode_rows(doc):
        parts.append("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in r) + "</tr>")
    parts.append("</table>")
    for rollout in doc["rollouts"]:
        if rollout.get("consumers"):
            parts.append(f"<h2>Consumers of {esc(rollout['rollout'])}</h2><table><tr><th>kind</th><th>consumer</th>"
                         "<th>nodes</th><th>max delay s</th><th>max gap s</th><th>refused</th><th>resets</th></tr>")  # fmt: skip
            for c in rollout["consumers"].values():
                cells = (c["kind"], c["consumer"], ",".join(c["nodes"]), c["max_propagation_delay_s"],
                         c["max_gap_s"], c["refused"], c["resets"])  # fmt: skip
                parts.append("<tr>" + "".join(f"<td>{esc(str(x))}</td>" for x in cells) + "</tr>")
            parts.append("</table>")
    for title, png in figs:
        b64 = base64.b64encode(png).decode()
        parts.append(f"<h2>{esc(title)}</h2><img alt='{esc(title)}' src='data:image/png;base64,{b64}'>")
    parts.append(f"<h2>Inputs</h2><pre>{esc(str(doc['inputs']))}</pre></body></html>")
    out.write_text("\n".join(parts))
    return [out]
