"""``auditor analyze``: explain a rollout from captures, Kubernetes watch streams, dataplane records
and the client's own result."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from auditor.errors import InputError
from auditor.sources.client_result import CLIENT_FORMATS, parse_client_start


def expand_dirs(
    dirs: tuple[str, ...],
    event_files: tuple[str, ...],
    kube: tuple[str, ...],
    dataplane: tuple[str, ...],
) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...], tuple[str, ...], list[dict[str, Any]], list[str]]:
    """Add the files of each ``--dir`` (a log directory, or a collection of them, one per node) to the
    explicit inputs; returns them (events, kube streams, dataplane records, agent summaries), one summary
    per log directory found, and the problems seen."""
    from auditor.collect.layout import find_log_dirs
    from auditor.model.logfiles import MANIFEST

    events, kubes, planes, agents = list(event_files), list(kube), list(dataplane), []
    info: list[dict[str, Any]] = []
    problems: list[str] = []
    for raw in dirs:
        root = Path(raw)
        if not root.is_dir():
            raise InputError(
                "no such directory", raw, "give an agent --log-dir or an 'auditor collect' --out"
            )
        found = find_log_dirs(root)
        if not found:
            raise InputError(
                "no auditor log files here (events-*, kube-*, dataplane-*)", raw,
                "give an agent --log-dir or an 'auditor collect' --out directory",
            )  # fmt: skip
        problems += _collect_problems(root / MANIFEST)
        for d in found:
            for name, segs in sorted(d.events.items()):
                events += [f"{name}={p}" for p in segs]
            kubes += [str(p) for p in d.kube]
            planes += [str(p) for p in d.dataplane]
            agents += [str(p) for p in d.agents]
            if not d.kube:
                problems.append(f"{d.path}: no Kubernetes stream (kube-<node>-*.json) in this directory")
            info.append({
                "dir": str(d.path), "nodes": d.nodes, "event_segments": sum(map(len, d.events.values())),
                "kube_files": len(d.kube), "dataplane_files": len(d.dataplane), "empty_files": d.empty,
            })  # fmt: skip
    return tuple(events), tuple(kubes), tuple(planes), tuple(agents), info, problems


def _collect_problems(manifest: Path) -> list[str]:
    """Agents that 'auditor collect' could not reach (its collect.json), as input problems."""
    if not manifest.is_file():
        return []
    try:
        doc = json.loads(manifest.read_text(encoding="utf-8"))
        nodes = [n for n in doc.get("nodes", []) if isinstance(n, dict)]
    except (OSError, ValueError, AttributeError):
        return [f"{manifest}: unreadable collect manifest"]
    return [f"{n.get('node')}: not collected: {n.get('error')}" for n in nodes if n.get("error")]


@click.command("analyze")
@click.option(
    "--pcap", "pcaps", multiple=True, metavar="[NODE=]FILE", help="pcap/pcapng capture (repeatable)."
)
@click.option("--events", "event_files", multiple=True, metavar="[NODE=]FILE",
              help="event table from 'auditor pcap events' or the agent's event log (repeatable).")  # fmt: skip
@click.option("--kube", multiple=True, metavar="FILE",
              help="kubectl --watch --output-watch-events -o json stream, or a kubectl get -o json list.")  # fmt: skip
@click.option("--dir", "dirs", multiple=True, metavar="DIR",
              help="an agent's log directory or an 'auditor collect' directory: its event segments, "
                   "kube streams and dataplane records, node names from the file names (repeatable).")  # fmt: skip
@click.option("--dataplane", multiple=True, metavar="FILE", help="dataplane rule-change JSONL (repeatable).")
@click.option("--client", metavar="FILE",
              help="the load generator's result: fortio -json or access log, vegeta encode (json/csv), "
                   "k6 --out json, hey's output or hey -o csv (detected).")
@click.option("--client-format", type=click.Choice(CLIENT_FORMATS), help="the --client file's format.")
@click.option("--client-start", metavar="TIME",
              help="when the client run started (RFC 3339 or Unix seconds), for hey's outputs: they carry no time.")  # fmt: skip
@click.option("--node", help="node name for captures given without NODE= (default: the file name).")
@click.option(
    "--margin", type=float, default=0.5, show_default=True, help="seconds added to the worst delay."
)
@click.option("--json", "as_json", is_flag=True, help="print one JSON document instead of tables.")
@click.option(
    "--html", "html_out", metavar="OUT", help="also write an HTML (or .md Markdown) report with plots."
)
@click.option("--fail-on-gap", is_flag=True,
              help="exit 1 when the verdict is GAP and 3 when it is INCONCLUSIVE (0: SAFE; for CI pipelines).")  # fmt: skip
def analyze(
    pcaps: tuple[str, ...],
    event_files: tuple[str, ...],
    kube: tuple[str, ...],
    dirs: tuple[str, ...],
    dataplane: tuple[str, ...],
    client: str | None,
    client_format: str | None,
    client_start: str | None,
    node: str | None,
    margin: float,
    as_json: bool,
    html_out: str | None,
    fail_on_gap: bool,
) -> None:
    """Explain the pod terminations of a rollout: timeline per node, every failed connection's cause,
    the propagation gap, and the preStop / terminationGracePeriodSeconds that close it."""
    from auditor.correlate.audit import AuditOptions, audit
    from auditor.report.document import build_document
    from auditor.sources.inputs import load_inputs

    dir_info: list[dict[str, Any]] = []
    dir_problems: list[str] = []
    agents: tuple[str, ...] = ()
    if dirs:
        event_files, kube, dataplane, agents, dir_info, dir_problems = expand_dirs(
            dirs, event_files, kube, dataplane
        )
    if not pcaps and not event_files:
        raise InputError(
            "nothing to analyze", "analyze", "give at least one --pcap, --events or --dir with event segments"
        )
    if not kube:
        raise InputError(
            "no Kubernetes input", "analyze", "give --kube FILE, or a --dir holding kube-<node>-*.json"
        )
    inputs = load_inputs(
        [*pcaps, *event_files], kube, dataplane, client, node, agents=agents, client_format=client_format,
        client_start=parse_client_start(client_start) if client_start is not None else None,
    )  # fmt: skip
    if dirs:
        inputs.info["log_dirs"] = dir_info
        inputs.problems += dir_problems
    res = audit(inputs, AuditOptions(margin_s=margin))
    doc = build_document(res)
    if html_out:
        from auditor.report.html import write_report

        written = write_report(res, doc, html_out)
        doc["inputs"]["report_files"] = [str(p) for p in written]
    if as_json:
        json.dump(doc, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        from auditor.report.terminal import render_terminal

        render_terminal(doc)
        if html_out:
            click.echo(f"report written to {html_out}")
    if fail_on_gap and doc["exit_code"]:
        sys.exit(int(doc["exit_code"]))
