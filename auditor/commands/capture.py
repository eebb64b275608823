"""``auditor capture``: a bounded packet capture for nodes where the eBPF agent cannot run.

Only what the analysis reads (TCP SYN / SYN-ACK / RST / FIN, ICMP and ICMPv6 unreachable; headers
only), the filter in the kernel, written as pcapng whose interface description names the node, so
``auditor analyze --pcap FILE`` needs no ``NODE=`` prefix; the kernel's drops are written at the end
of the file and every report made from it shows them.
"""

from __future__ import annotations

import json
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any

import click

from auditor.commands.agent import parse_duration
from auditor.errors import AuditorError


def _default_out(node: str) -> str:
    return f"capture-{node}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.pcapng"


@click.command("capture")
@click.option("-i", "--interface", default="any", show_default=True, help="interface to capture on.")
@click.option(
    "-w",
    "--write",
    "out",
    metavar="FILE",
    help="pcapng file to write (default: capture-<node>-<UTC time>.pcapng here).",
)
@click.option(
    "--node",
    envvar="NODE_NAME",
    default=socket.gethostname,
    show_default="hostname",
    help="the Kubernetes node name written into the file (env NODE_NAME).",
)
@click.option("--duration", help="stop after this long: 500ms, 60s, 2m, 1h (default: Ctrl-C / SIGTERM).")
@click.option(
    "--max-mb",
    type=click.IntRange(min=1),
    default=1024,
    show_default=True,
    help="stop when the file reaches this size (MiB).",
)
@click.option(
    "--snaplen",
    type=click.IntRange(min=96, max=65535),
    default=None,
    help="bytes kept per packet (default 192: the headers the analysis reads, one tunnel deep).",
)
@click.option(
    "--filter",
    "extra_filter",
    metavar="EXPR",
    help="narrow the capture further (libpcap syntax, ANDed with the built-in filter), "
    "e.g. 'net 10.244.0.0/16'.",
)
@click.option(
    "--buffer-mb",
    type=click.IntRange(min=1, max=2047),
    default=32,
    show_default=True,
    help="the kernel ring buffer (MiB): bigger absorbs longer bursts.",
)
@click.option(
    "--netns", metavar="NAME|PATH", help="capture in this network namespace (an `ip netns` name or path)."
)
@click.option(
    "--engine",
    type=click.Choice(["auto", "libpcap", "scapy"]),
    default="auto",
    show_default=True,
    help="libpcap (C, filter in the kernel); scapy only where libpcap is missing (slow, see bench).",
)
@click.option(
    "--linger",
    default="0s",
    show_default=True,
    help="after writing, stay up this long (e.g. 10m) so `kubectl cp` can fetch the file from a "
    "`kubectl debug node/...` pod; Ctrl-C / SIGTERM ends it early.",
)
@click.option("--json", "as_json", is_flag=True, help="print the final counts as JSON.")
@click.option("-q", "--quiet", is_flag=True, help="no progress line.")
def capture(interface: str, out: str | None, node: str, duration: str | None, max_mb: int, snaplen: int | None,
            extra_filter: str | None, buffer_mb: int, netns: str | None, engine: str, linger: str,
            as_json: bool, quiet: bool) -> None:  # fmt: skip
    """Capture refusals, resets and unreachables on this machine into a pcapng file for
    `auditor analyze --pcap FILE`, bounded by --duration / --max-mb / Ctrl-C (always flushed)."""
    from auditor.sources.pcaplive import DEFAULT_SNAPLEN, run_capture

    node = str(node or "").strip()
    if not node or any(c.isspace() for c in node):
        raise AuditorError(f"bad node name {node!r}", "--node", "give the Kubernetes node name (no spaces)")
    seconds = parse_duration(duration) if duration else None
    linger_s = parse_duration(linger) if linger not in ("0", "0s", "") else 0.0
    path = out or _default_out(node)
    if Path(path).is_dir():
        raise AuditorError("is a directory", path, "give a file name with -w")
    eng = _open_engine(engine, interface, node, snaplen or DEFAULT_SNAPLEN, extra_filter, buffer_mb,
                       _netns_path(netns))  # fmt: skip

    stopping: list[int] = []

    def _on_signal(signum: int, _frame: Any) -> None:
        stopping.append(signum)

    previous = {s: signal.signal(s, _on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        if not quiet:
            click.echo(
                f"auditor capture: {eng.name} on {interface} (node {node}, snaplen {eng.snaplen}) -> {path}; "
                f"{'for ' + duration if duration else 'Ctrl-C to stop'}, at most {max_mb} MiB",
                err=True,
            )

        def progress(st: Any) -> None:
            if not quiet:
                click.echo(f"\r  {st.packets:,} packets, {st.bytes / 1048576:.1f} MiB, "
                           f"kernel dropped {st.dropped:,}", nl=False, err=True)  # fmt: skip

        st = run_capture(eng, path, seconds, max_mb << 20, stop=lambda: bool(stopping), progress=progress)
        if not quiet:
            click.echo("", err=True)
        _report(st, as_json)
        if linger_s and not stopping:
            click.echo(f"auditor capture: {path} is ready; staying up {linger} for kubectl cp", err=True)
            end = time.monotonic() + linger_s
            while not stopping and time.monotonic() < end:
                time.sleep(0.2)
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def _netns_path(netns: str | None) -> str | None:
    if not netns:
        return None
    path = netns if "/" in netns else f"/run/netns/{netns}"
    if not Path(path).exists():
        raise AuditorError("no such network namespace", netns, "give an `ip netns` name or /proc/PID/ns/net")
    return path


def _open_engine(engine: str, interface: str, node: str, snaplen: int, extra_filter: str | None,
                 buffer_mb: int, netns: str | None) -> Any:  # fmt: skip
    from auditor.sources.pcaplive import LiveCapture, engine_available

    ok, why = engine_available()
    if engine == "libpcap" or (engine == "auto" and ok):
        if not ok:
            raise AuditorError(
                why, "--engine libpcap", "install libpcap (Debian: libpcap0.8) or use --engine scapy"
            )
        return LiveCapture(interface, node, snaplen, extra_filter, buffer_mb, netns=netns)
    from auditor.sources.pcaplive.fallback import ScapyCapture

    if engine == "auto":
        click.echo(f"auditor capture: {why}; falling back to scapy's sniffing (filtered in Python, "
                   "a far lower ceiling: see bench/README.md)", err=True)  # fmt: skip
    return ScapyCapture(interface, node, snaplen, extra_filter, buffer_mb, netns=netns)


def _report(st: Any, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(st.as_dict(), indent=2))
        return
    secs = max(1e-9, (st.end_ns - st.start_ns) / 1e9)
    click.echo(
        f"wrote {st.packets:,} packets ({st.bytes / 1048576:.1f} MiB) to {st.file} in {secs:.1f} s "
        f"(stopped by {st.stopped_by}); kernel: received {st.received:,}, dropped {st.dropped:,}"
        f"{f', interface dropped {st.if_dropped:,}' if st.if_dropped else ''}; cpu {st.cpu_s:.2f} s"
    )
    if st.dropped:
        click.echo(f"warning: the kernel dropped {st.dropped:,} matching packets (ring full): every report "
                   "from this file counts them as lost input; raise --buffer-mb or narrow --filter", err=True)  # fmt: skip
    for note in st.notes:
        click.echo(f"note: {note}", err=True)
    if st.packets == 0:
        click.echo("note: nothing matched (no SYN, RST, FIN or unreachable seen on that interface)", err=True)
    sys.stdout.flush()
