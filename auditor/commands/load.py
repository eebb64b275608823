"""``auditor load URL``: the built-in load generator (fixed rate, open loop), one record a request."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import IO

import click

from auditor.errors import AuditorError


@click.command("load")
@click.argument("url")
@click.option(
    "--qps",
    type=click.FloatRange(min=0, min_open=True),
    default=500,
    show_default=True,
    help="requests per second, on schedule (open loop: a slow response does not delay the next start).",
)
@click.option(
    "--connections",
    "-c",
    type=click.IntRange(min=1),
    default=50,
    show_default=True,
    help="at most this many connections in flight (and kept, with keep-alive).",
)
@click.option(
    "--keepalive/--no-keepalive",
    default=True,
    show_default=True,
    help="reuse connections, or open a new TCP connection per request.",
)
@click.option(
    "--duration",
    metavar="DURATION",
    default=None,
    help="how long to send (e.g. 30s, 2m) [default: 30s, or until --until-file appears].",
)
@click.option(
    "--until-file",
    metavar="PATH",
    type=click.Path(dir_okay=False, path_type=Path),
    help="stop when this file appears (checked every 100 ms); with --duration, whichever comes first.",
)
@click.option(
    "--timeout",
    metavar="DURATION",
    default="10s",
    show_default=True,
    help="bound on one request: connect, send, the whole response.",
)
@click.option(
    "--out",
    "-o",
    metavar="FILE",
    type=click.Path(dir_okay=False, allow_dash=True, path_type=Path),
    help="write the records here ('-' or none: stdout), vegeta JSON lines, as requests complete.",
)
@click.option(
    "--retry-idle/--no-retry-idle",
    default=True,
    show_default=True,
    help="send a request again on a new connection when the server closed the reused one under "
    "it before answering (as Go's client: hey, vegeta); or record it as failed (reset).",
)
@click.option("--insecure", is_flag=True, help="https: do not verify the server's certificate.")
def load(
    url: str, qps: float, connections: int, keepalive: bool, duration: str | None, until_file: Path | None,
    timeout: str, out: Path | None, retry_idle: bool, insecure: bool,
) -> None:  # fmt: skip
    """Send HTTP/1.1 GET requests to URL at a fixed rate and record every one.

    One JSON line per request, in the format of `vegeta encode -to json` (timestamp = start, UTC with
    nanoseconds; latency ns; code, 0 without a response; error text; bytes in and out; seq), which
    `auditor analyze --client FILE` reads. Requests are started on schedule whatever the server does:
    a start more than 10 ms late (every connection busy) is counted, one that could not start within
    --timeout is skipped and counted. At the end one summary line goes to stderr (requests, rate
    achieved, failures by class, p50/p99 latency); the exit status is 0 whatever the failures.
    SIGTERM or Ctrl-C stops the schedule: requests in flight finish (within --timeout) and the records
    are flushed; a second one abandons the requests in flight (no record for them) and flushes.
    """
    import asyncio
    import signal

    from auditor import __version__
    from auditor.loadgen import LoadRun, LoadSpec, RecordWriter, parse_target

    duration_s = _duration(duration, "--duration") if duration else (None if until_file else 30.0)
    timeout_s = _duration(timeout, "--timeout")
    target = parse_target(
        url, keepalive=keepalive, insecure=insecure, user_agent=f"auditor-load/{__version__}"
    )
    spec = LoadSpec(target, qps, connections, keepalive, duration_s, timeout_s, until_file, retry_idle)

    async def main(stream: IO[bytes]) -> str:
        run = LoadRun(spec, RecordWriter(stream, url))
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, run.interrupt)
        try:
            return (await run.run()).summary_line()
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)

    where = "stdout" if out is None or str(out) == "-" else str(out)
    try:
        if where == "stdout":
            line = asyncio.run(main(sys.stdout.buffer))
        else:
            with open(where, "wb") as stream:
                line = asyncio.run(main(stream))
    except BrokenPipeError:
        raise  # stdout piped into `head`: not an error (auditor.cli)
    except OSError as exc:
        raise AuditorError(
            f"cannot write the records ({exc.strerror or exc})", where, "check --out"
        ) from None
    click.echo(line, err=True)


def _duration(text: str, option: str) -> float:
    from auditor.commands.agent import parse_duration

    try:
        return parse_duration(text)
    except AuditorError as exc:
        raise AuditorError(exc.what, option, exc.hint) from None
