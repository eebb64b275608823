"""``auditor doctor``: what this node lacks to run the agent, and how to fix it."""

from __future__ import annotations

import json
from pathlib import Path

import click

from auditor.doctor import Check, Status, run_checks

_STYLE = {Status.OK: "green", Status.WARN: "yellow", Status.FAIL: "bold red"}


def render_table(checks: list[Check]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="auditor doctor", show_lines=False)
    for column in ("check", "status", "detail", "fix"):
        table.add_column(column, overflow="fold")
    for check in checks:
        status = f"[{_STYLE[check.status]}]{check.status}[/]"
        table.add_row(check.name, status, check.detail, check.fix)
    Console().print(table)


def summarize(checks: list[Check]) -> dict[str, int]:
    return {str(status): sum(c.status == status for c in checks) for status in Status}


@click.command("doctor")
@click.option("--json", "as_json", is_flag=True, help="Print the checks as JSON instead of a table.")
@click.option(
    "--kubeconfig",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Try this kubeconfig with a GET /version (otherwise only look for credentials).",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0.1, max=60),
    default=3.0,
    show_default=True,
    help="Seconds to wait for the API server.",
)
def doctor(as_json: bool, kubeconfig: Path | None, timeout: float) -> None:
    """Check kernel, tracepoints, BTF, bcc and headers, capabilities, iptables backend and API access.

    Exits 0 when nothing fails (warnings allowed), 1 otherwise.
    """
    checks = run_checks(kubeconfig=kubeconfig, api_timeout=timeout)
    summary = summarize(checks)
    if as_json:
        click.echo(json.dumps({"checks": [c.to_dict() for c in checks], "summary": summary}, indent=2))
    else:
        render_table(checks)
        click.echo(", ".join(f"{n} {s}" for s, n in summary.items()))
    if summary[str(Status.FAIL)]:
        # SystemExit, not ctx.exit(): cli.main runs click with standalone_mode=False, which turns
        # ctx.exit(1) into a return value that `python -m auditor` drops.
        raise SystemExit(1)
