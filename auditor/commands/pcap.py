"""``auditor pcap``: read packet captures (pcap/pcapng) into counts and the packet event table."""

from __future__ import annotations

import json

import click


@click.group("pcap")
def pcap() -> None:
    """Read pcap/pcapng captures: counts (summary) and the event table (events)."""


@pcap.command("summary")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="One JSON object instead of a table.")
def summary(file: str, as_json: bool) -> None:
    """Count frames, TCP SYN/RST/FIN and ICMP unreachables in FILE."""
    from auditor.sources.capture import summarize_capture

    s = summarize_capture(file)
    if as_json:
        click.echo(json.dumps(s.as_dict()))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{s.file}", show_header=True)
    table.add_column("count")
    table.add_column("value", justify="right")
    for key in ("frames", "tcp", "tcp_rst", "tcp_syn", "tcp_fin", "icmp_unreachable", "skipped", "malformed"):
        table.add_row(key, str(getattr(s, key)))
    for name, n in sorted(s.link_types.items()):
        table.add_row(f"link type {name}", str(n))
    console = Console()
    console.print(table)
    for line in s.errors:
        console.print(f"[yellow]warning:[/yellow] {line}", highlight=False)


@pcap.command("events")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["parquet", "jsonl", "csv"]),
    default=None,
    help="Output format (default: from -o's suffix; jsonl on stdout).",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False),
    default=None,
    help="Output file (default: stdout, jsonl).",
)
@click.option("--node", default="", help="Node name to record in every event.")
def events(file: str, fmt: str | None, output: str | None, node: str) -> None:
    """Write one row per TCP SYN/SYN-ACK/RST/FIN and ICMP unreachable in FILE."""
    from auditor.sinks.eventfile import write_events
    from auditor.sources.capture import CaptureSummary, iter_event_batches
    from auditor.sources.eventfile import format_for

    fmt = format_for(output, fmt)  # fail on a bad suffix before reading anything
    import pyarrow as pa

    pa.set_memory_pool(pa.system_memory_pool())  # returns freed memory: keeps peak RSS flat
    s = CaptureSummary()
    write_events(iter_event_batches(file, node=node, summary=s), output, fmt)
    for line in s.errors:
        click.echo(f"auditor: warning: {file}: {line}", err=True)
