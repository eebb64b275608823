"""The built-in load generator (``auditor load``) against hey, side by side, on the same local nginx.

    .venv/bin/python bench/bench_load.py                       # 500 and 2,000 qps, 50 connections, 10 s each
    .venv/bin/python bench/bench_load.py --rates 500,2000,4000 --seconds 20 --rounds 3
    .venv/bin/python bench/bench_load.py --json                # the figures as JSON
    .venv/bin/python bench/bench_load.py --no-keepalive        # a new connection per request, both tools
                                                               # (each run first waits for TIME_WAITs to expire)

What it does:

1. **Service**: nginx (Debian's ``nginx-light``) with a temporary configuration on 127.0.0.1 (a free
   port): one worker, ``return 200 "ok\\n"``, no access log, keep-alive for the whole run. Without nginx, a
   small asyncio server in a child process stands in (printed; its ceiling is lower).
2. **Pinning** (2+ CPUs, ``--no-pin`` to turn off): the load generator on CPU 0 (``taskset -c 0``: one
   CPU, which is the goal), the server on CPU 1.
3. For each rate, ``--rounds`` times, alternating which goes first:
   - ``hey -z Ns -c 50 -q RATE/50 -o csv URL`` (hey's ``-q`` is per worker; each worker waits for its
     own ticker: closed loop per connection) with its per-request CSV written to a file;
   - ``auditor load URL --qps RATE -c 50 --duration Ns -o FILE`` (open loop), its records written.

   Both are whole processes timed by ``_measure.run_measured``: wall time and CPU (user + system, of
   the load generator only: the server is not counted).
4. **Figures**, from each tool's own per-request records: requests; achieved rate = requests / (last
   start - first start + 1 / rate) (both tools alike: hey's ``offset`` column, auditor's ``timestamp``);
   failures (no 2xx); CPU seconds per 10,000 requests (the auditor figure includes its start-up, shown
   apart: the CPU of a one-request run); CPU utilization (CPU s / wall s); latency p50 / p99 (hey's
   ``response-time``, auditor's ``latency``: the server is the same, so the difference is what the client
   adds); auditor's late starts (from its summary line). auditor's records are read back with
   ``read_client_result`` and must count the same requests.

Goal (issue 12): holds 2,000 qps on one CPU with its records written: achieved rate >= 98 % of the
asked one, no failure, every scheduled request started (0 not started). Exit status 1 if a command
failed or the records disagree, 2 for a setup error (no hey), 0 otherwise; the goal is a PASS/FAIL figure.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import math
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from _measure import Measured, run_measured

CONNECTIONS = 50
REPO = Path(__file__).resolve().parent.parent

NGINX_CONF = """
daemon off;
master_process on;
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    keepalive_requests 10000000;
    keepalive_timeout 300s;
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{ default_type text/plain; return 200 "ok\\n"; }}
    }}
}}
"""

# the stand-in server without nginx: HTTP/1.1 keep-alive, "ok\n" to any request
PY_SERVER = r"""
import asyncio, sys
RESP = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n\r\nok\n"
class P(asyncio.Protocol):
    def connection_made(self, t): self.t, self.buf = t, b""
    def data_received(self, d):
        self.buf += d
        n = self.buf.count(b"\r\n\r\n")
        if n:
            close = b"onnection: close" in self.buf
            self.buf = self.buf[self.buf.rindex(b"\r\n\r\n") + 4:]
            self.t.write(RESP * n)
            if close: self.t.close()
async def main():
    srv = await asyncio.get_running_loop().create_server(P, "127.0.0.1", int(sys.argv[1]), backlog=4096)
    await srv.serve_forever()
asyncio.run(main())
"""


@dataclass
class Run:
    """One load-generator run's figures."""

    tool: str
    rate_asked: float
    requests: int
    achieved: float
    failed: int
    cpu_s: float
    wall_s: float
    p50_ms: float
    p99_ms: float
    late: int = 0
    not_started: int = 0
    read_back: int = -1  # auditor: requests read_client_result found (-1: not checked)

    @property
    def cpu_per_10k(self) -> float:
        return self.cpu_s / self.requests * 10_000 if self.requests else math.nan

    @property
    def utilization(self) -> float:
        return self.cpu_s / self.wall_s if self.wall_s else math.nan


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, proc: subprocess.Popen[bytes], timeout_s: float = 10) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode}")
        with socket.socket() as s, contextlib.suppress(OSError):
            s.connect(("127.0.0.1", port))
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout_s:.0f} s")


@contextlib.contextmanager
def service(tmp: Path, cpu: int | None) -> Iterator[tuple[str, str]]:
    """(URL, description) of the server, started here and stopped on exit."""
    port = free_port()
    pin = ["taskset", "-c", str(cpu)] if cpu is not None else []
    nginx = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
    if nginx is not None:
        conf = tmp / "nginx.conf"
        conf.write_text(NGINX_CONF.format(tmp=tmp, port=port))
        argv = [*pin, nginx, "-p", str(tmp), "-c", str(conf)]
        version = subprocess.run([nginx, "-v"], capture_output=True, text=True, check=False).stderr.strip()
        what = f"{version.replace('nginx version: ', '')}, 1 worker"
    else:
        argv = [*pin, sys.executable, "-c", PY_SERVER, str(port)]
        what = "asyncio stand-in server (no nginx: apt-get install nginx-light)"
    proc = subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_port(port, proc)
        yield f"http://127.0.0.1:{port}/", what + (f", CPU {cpu}" if cpu is not None else "")
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def percentile(values: list[float], q: float) -> float:
    """Nearest rank, as ``auditor load``'s summary."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(1, math.ceil(len(ordered) * q / 100)) - 1]


def achieved(starts_s: list[float], rate: float) -> float:
    if not starts_s:
        return 0.0
    return len(starts_s) / (max(starts_s) - min(starts_s) + 1 / rate)


def run_hey(url: str, rate: float, seconds: float, pin: list[str], tmp: Path, keepalive: bool) -> Run:
    out, err = tmp / "hey.csv", tmp / "hey.err"
    argv = [*pin, "hey", "-z", f"{seconds:g}s", "-c", str(CONNECTIONS), "-q", f"{rate / CONNECTIONS:g}", "-o", "csv",
            *([] if keepalive else ["-disable-keepalive"]), url]  # fmt: skip
    with open(out, "wb") as o, open(err, "wb") as e:
        m = run_measured(argv, stdout=o, stderr=e, timeout_s=seconds + 60)
    check(m, "hey", err)
    latencies, starts, failed = [], [], 0
    with open(out, newline="") as f:
        rows = csv.DictReader(f)
        for row in rows:
            latencies.append(float(row["response-time"]) * 1000)
            starts.append(float(row["offset"]))
            failed += not 200 <= int(row["status-code"]) < 300
    # hey -o csv lists responses only; its connection errors are in no file: none expected here
    return Run("hey", rate, len(latencies), achieved(starts, rate), failed, m.user_s + m.sys_s, m.wall_s,
               percentile(latencies, 50), percentile(latencies, 99))  # fmt: skip


def run_auditor(url: str, rate: float, seconds: float, pin: list[str], tmp: Path, keepalive: bool) -> Run:
    from auditor.model.kube import parse_time_ns
    from auditor.sources.client_result import read_client_result

    out, err = tmp / "auditor.jsonl", tmp / "auditor.err"
    exe = Path(sys.executable).with_name("auditor")
    argv = [*pin, str(exe), "load", url, "--qps", f"{rate:g}", "-c", str(CONNECTIONS), "--duration", f"{seconds:g}s",
            "-o", str(out), "--keepalive" if keepalive else "--no-keepalive"]  # fmt: skip
    with open(err, "wb") as e:
        m = run_measured(argv, stdout=subprocess.DEVNULL, stderr=e, timeout_s=seconds + 60)
    check(m, "auditor load", err)
    latencies, starts, failed = [], [], 0
    with open(out) as f:
        for line in f:
            r = json.loads(line)
            latencies.append(r["latency"] / 1e6)
            starts.append(parse_time_ns(r["timestamp"])[0] / 1e9)
            failed += not 200 <= r["code"] < 300
    summary = err.read_text()
    late = re.search(r"(\d+) late starts", summary)
    not_started = re.search(r"(\d+) not started", summary)
    return Run("auditor", rate, len(latencies), achieved(starts, rate), failed, m.user_s + m.sys_s, m.wall_s,
               percentile(latencies, 50), percentile(latencies, 99), int(late.group(1)) if late else -1,
               int(not_started.group(1)) if not_started else -1, read_client_result(out).requests)  # fmt: skip


def startup_cpu(url: str, pin: list[str], tmp: Path) -> float:
    """CPU seconds of an ``auditor load`` run of one request: interpreter start, imports, exit."""
    exe = Path(sys.executable).with_name("auditor")
    argv = [*pin, str(exe), "load", url, "--qps", "1000", "--duration", "1ms", "-o", str(tmp / "one.jsonl")]
    runs = [
        run_measured(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout_s=60)
        for _ in range(3)
    ]
    return statistics.median(r.user_s + r.sys_s for r in runs)


def time_wait() -> int:
    """TCP sockets in TIME_WAIT on this host (``/proc/net/sockstat``)."""
    m = re.search(r"\btw (\d+)", Path("/proc/net/sockstat").read_text())
    return int(m.group(1)) if m else 0


def settle_time_wait(limit: int = 2000, timeout_s: float = 70.0) -> None:
    """Without keep-alive every run leaves one TIME_WAIT per request (on 127.0.0.1 they share the port
    range with the next run's connects): wait, bounded, until the previous run's have expired."""
    deadline = time.monotonic() + timeout_s
    while time_wait() > limit and time.monotonic() < deadline:
        time.sleep(1.0)


class BenchError(Exception):
    pass


def check(m: Measured, what: str, err: Path) -> None:
    if m.timed_out or m.returncode != 0:
        tail = err.read_text(errors="replace")[-300:].strip()
        raise BenchError(f"{what} failed (exit {m.returncode}{', timed out' if m.timed_out else ''}): {tail}")


def median_run(runs: list[Run]) -> Run:
    """The median of every figure over the rounds (counts too: one round's worth)."""
    first = runs[0]
    fields: dict[str, Any] = {}
    for name, value in asdict(first).items():
        if isinstance(value, int | float) and not isinstance(value, bool) and name != "rate_asked":
            med = statistics.median(getattr(r, name) for r in runs)
            fields[name] = type(value)(med) if isinstance(value, int) else med
        else:
            fields[name] = value
    return Run(**fields)


def table(pairs: list[tuple[Run, Run]], startup: float) -> str:
    rows: list[tuple[str, ...]] = []
    head = [
        "",
        *[
            x
            for hey, aud in pairs
            for x in (f"hey {hey.rate_asked:g}/s", f"auditor {aud.rate_asked:g}/s", "ratio")
        ],
    ]

    def row(label: str, fmt: str, get: Any, ratio: bool = True) -> None:
        cells = [label]
        for hey, aud in pairs:
            h, a = get(hey), get(aud)
            cells += [fmt.format(h) if h is not None else "", fmt.format(a) if a is not None else ""]
            cells.append(f"{a / h:.2f}" if ratio and h and a is not None and h is not None else "")
        rows.append(tuple(cells))

    row("requests", "{:,}", lambda r: r.requests, ratio=False)
    row("achieved rate /s", "{:,.1f}", lambda r: r.achieved)
    row("  of the asked rate", "{:.1%}", lambda r: r.achieved / r.rate_asked, ratio=False)
    row("failed", "{:,}", lambda r: r.failed, ratio=False)
    row("CPU s (user + sys)", "{:.2f}", lambda r: r.cpu_s)
    row("CPU s per 10,000 requests", "{:.3f}", lambda r: r.cpu_per_10k)
    row("  without start-up", "{:.3f}",
        lambda r: (r.cpu_s - startup) / r.requests * 10_000 if r.tool == "auditor" else r.cpu_per_10k)  # fmt: skip
    row("CPU utilization (1 CPU = 100 %)", "{:.0%}", lambda r: r.utilization)
    row("latency p50 ms", "{:.3f}", lambda r: r.p50_ms)
    row("latency p99 ms", "{:.3f}", lambda r: r.p99_ms)
    row("late starts (> 10 ms)", "{:,}", lambda r: r.late if r.tool == "auditor" else None, ratio=False)
    row("not started", "{:,}", lambda r: r.not_started if r.tool == "auditor" else None, ratio=False)
    row("records read back", "{:,}", lambda r: r.read_back if r.tool == "auditor" else None, ratio=False)
    widths = [max(len(str(r[i])) for r in [tuple(head), *rows]) for i in range(len(head))]
    lines = ["  ".join(str(c).rjust(w) if i else str(c).ljust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
             for r in [tuple(head), tuple("-" * w for w in widths), *rows]]  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--rates", default="500,2000", help="comma-separated request rates (default 500,2000)")
    ap.add_argument("--seconds", type=float, default=10.0, help="duration of each run (default 10)")
    ap.add_argument(
        "--rounds", type=int, default=1, help="runs per tool and rate, medians reported (default 1)"
    )
    ap.add_argument("--no-pin", dest="pin", action="store_false", help="do not pin load generator / server")
    ap.add_argument("--no-keepalive", dest="keepalive", action="store_false",
                    help="a new connection per request (hey -disable-keepalive, auditor load --no-keepalive)")  # fmt: skip
    ap.add_argument("--json", action="store_true", help="print the figures as JSON")
    ap.add_argument("--keep", metavar="DIR", help="keep the records and logs in DIR")
    args = ap.parse_args(argv)
    if shutil.which("hey") is None:
        print("bench_load: needs hey (apt-get install hey)", file=sys.stderr)
        return 2
    rates = [float(x) for x in args.rates.split(",") if x.strip()]
    cpus = os.cpu_count() or 1
    pinned = args.pin and cpus >= 2 and shutil.which("taskset") is not None
    pin = ["taskset", "-c", "0"] if pinned else []
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="auditor-bench-load-") as tmp_name:
        tmp = Path(args.keep) if args.keep else Path(tmp_name)
        tmp.mkdir(parents=True, exist_ok=True)
        try:
            with service(tmp, 1 if pinned else None) as (url, what):
                startup = startup_cpu(url, pin, tmp)
                pairs: list[tuple[Run, Run]] = []
                for rate in rates:
                    hey_runs, aud_runs = [], []
                    for i in range(args.rounds):
                        order = (run_hey, run_auditor) if i % 2 == 0 else (run_auditor, run_hey)
                        for fn in order:
                            if not args.keepalive:
                                settle_time_wait()
                            r = fn(url, rate, args.seconds, pin, tmp, args.keepalive)
                            (hey_runs if r.tool == "hey" else aud_runs).append(r)
                            print(f"  {r.tool} {rate:g}/s round {i + 1}: {r.requests:,} requests, {r.achieved:,.1f}/s, "
                                  f"CPU {r.cpu_s:.2f} s, p50 {r.p50_ms:.3f} ms, p99 {r.p99_ms:.3f} ms",
                                  file=sys.stderr)  # fmt: skip
                    pairs.append((median_run(hey_runs), median_run(aud_runs)))
        except (BenchError, RuntimeError) as exc:
            print(f"bench_load: {exc}", file=sys.stderr)
            return 1
    load_after = os.getloadavg()
    hey_version = "hey 0.1.4 (Debian)" if Path("/usr/share/doc/hey").exists() else "hey"
    status = 0
    goal_rate = max(rates)
    verdicts = []
    for _hey, aud in pairs:
        if aud.read_back != aud.requests:
            status = 1
        if aud.rate_asked == 2000 or (2000 not in rates and aud.rate_asked == goal_rate):
            ok = aud.achieved >= 0.98 * aud.rate_asked and aud.failed == 0 and aud.not_started == 0
            verdicts.append(
                f"goal: auditor load holds {aud.rate_asked:g} qps on one CPU with its records written: "
                f"{'PASS' if ok else 'FAIL'} ({aud.achieved:,.1f}/s, {aud.failed} failed, {aud.not_started} not "
                f"started, {aud.late} late, CPU {aud.utilization:.0%} of one)"
            )
    if args.json:
        print(json.dumps({"service": what, "pinned": pinned, "keepalive": args.keepalive, "seconds": args.seconds, "rounds": args.rounds,
                          "startup_cpu_s": startup, "load_before": load_before, "load_after": load_after,
                          "runs": [{**asdict(r), "cpu_per_10k": r.cpu_per_10k, "utilization": r.utilization}
                                   for pair in pairs for r in pair]}, indent=2))  # fmt: skip
        return status
    print(f"service: {what}; {url}")
    print(f"load generator: {'pinned to CPU 0 (taskset)' if pinned else 'not pinned'}; {CONNECTIONS} connections, "
          f"{'keep-alive' if args.keepalive else 'a new connection per request'}; {args.seconds:g} s per run, median of {args.rounds}; {hey_version}")  # fmt: skip
    print(f"machine: {cpus} CPUs, Linux {os.uname().release}; load average {load_before[0]:.2f} before, "
          f"{load_after[0]:.2f} after")  # fmt: skip
    print(f"auditor load start-up (one-request run): {startup:.2f} CPU s, included in its CPU s")
    print(table(pairs, startup))
    for line in verdicts:
        print(line)
    return status


if __name__ == "__main__":
    sys.exit(main())
