"""``auditor load``: schedule, connections, error classes and records, against servers on 127.0.0.1.

Each test starts a small threaded HTTP server (:class:`Server`, one thread per connection, every socket
bounded by a timeout) and stops it before returning. The server counts what the client cannot fake:
accepted connections, requests, requests asking ``Connection: close``.

Rate tolerance. The scheduler hands out a ticket at most one event-loop tick (``TICK_S``, 1 ms) after
its due time; a start more than ``LATE_S`` (10 ms) after it is counted late by the run itself. So a
start that is not counted late is within ``LATE_S`` of its due time, and two such starts are within
``LATE_S`` of their scheduled distance: that is the bound checked on every record (plus a tick for the
wall clock read after the monotonic one). Late starts happen on a loaded machine (this one is shared):
up to 10 % are allowed, and they are the run's own count, not a guess.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import signal
import socket
import socketserver
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from auditor.cli import cli
from auditor.loadgen import LATE_S, TICK_S, LoadRun, LoadSpec, RecordWriter, Tally, parse_target
from auditor.loadgen.http import ProtocolError, read_response
from auditor.loadgen.run import IDLE_CLOSED
from auditor.model.client import ErrorClass, classify
from auditor.model.kube import parse_time_ns
from auditor.sources.client_result import read_client_result

BODY = b"hello\n"


class Server(socketserver.ThreadingTCPServer):
    """HTTP/1.1 on 127.0.0.1, one thread per connection. ``mode``:

    ``ok``          200 with Content-Length, keep-alive unless the request asks ``Connection: close``
    ``chunked``     the same body, ``Transfer-Encoding: chunked``
    ``status``      ``status`` (e.g. 502) for every request
    ``slow``        reads the request and never answers (until the client leaves or 5 s)
    ``drop_reused`` answers a connection's first request; on its second, closes without answering
                    (FIN, or RST with ``reset=True``): the server closed the idle connection as the
                    request crossed
    ``idle_close``  answers, then closes a connection idle for ``idle_s``
    """

    daemon_threads = True
    block_on_close = True
    allow_reuse_address = True

    def __init__(
        self, mode: str = "ok", *, status: int = 200, reset: bool = False, idle_s: float = 0.05
    ) -> None:
        self.mode, self.status, self.reset, self.idle_s = mode, status, reset, idle_s
        self.accepted = 0
        self.requests = 0
        self.close_asked = 0
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        super().__init__(("127.0.0.1", 0), _Handler)
        self.url = f"http://127.0.0.1:{self.server_address[1]}/x?y=1"

    def count(self, field: str) -> None:
        with self.lock:
            setattr(self, field, getattr(self, field) + 1)


class _Handler(socketserver.BaseRequestHandler):
    server: Server

    def handle(self) -> None:
        srv, sock = self.server, self.request
        srv.count("accepted")
        sock.settimeout(5.0)
        buf = b""
        served = 0
        while not srv.stopping.is_set():
            if srv.mode == "idle_close" and served:
                sock.settimeout(srv.idle_s)
            try:
                while b"\r\n\r\n" not in buf:
                    chunk = sock.recv(65536)
                    if not chunk:
                        return
                    buf += chunk
            except OSError:  # idle timeout (idle_close), or the client went away
                return
            head, _, buf = buf.partition(b"\r\n\r\n")
            srv.count("requests")
            close = b"connection: close" in head.lower()
            if close:
                srv.count("close_asked")
            if srv.mode == "drop_reused" and served >= 1:
                if srv.reset:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                return  # socketserver closes it: FIN (or RST with linger 0)
            if srv.mode == "slow":
                srv.stopping.wait(5.0)
                return
            sock.sendall(self._response(close))
            served += 1
            if close:
                return

    def _response(self, close: bool) -> bytes:
        srv = self.server
        status = srv.status if srv.mode == "status" else 200
        reason = {200: "OK", 502: "Bad Gateway", 503: "Service Unavailable"}.get(status, "X")
        conn = b"Connection: close\r\n" if close else b""
        if srv.mode == "chunked":
            body = b"3\r\nhel\r\n3;ext=1\r\nlo\n\r\n0\r\nX-Trailer: 1\r\n\r\n"
            return (
                f"HTTP/1.1 {status} {reason}\r\nTransfer-Encoding: chunked\r\n".encode()
                + conn
                + b"\r\n"
                + body
            )
        head = f"HTTP/1.1 {status} {reason}\r\nContent-Length: {len(BODY)}\r\nContent-Type: text/plain\r\n"
        return head.encode() + conn + b"\r\n" + BODY


@contextlib.contextmanager
def serving(mode: str = "ok", **kwargs: Any) -> Iterator[Server]:
    srv = Server(mode, **kwargs)
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield srv
    finally:
        srv.stopping.set()
        srv.shutdown()
        srv.server_close()  # joins the connection threads (each bounded by its socket timeout)
        thread.join(10)


def closed_port() -> int:
    """A port on 127.0.0.1 nobody listens on (bound, then closed: the kernel answers a SYN with RST)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run(
    url: str, *, qps: float, duration_s: float | None, out: io.BytesIO | None = None, **kwargs: Any
) -> tuple[Tally, list[dict[str, Any]]]:
    """One in-process run; its tally and its records (parsed)."""
    keepalive = kwargs.pop("keepalive", True)
    spec = LoadSpec(
        parse_target(url, keepalive=keepalive), qps, duration_s=duration_s, keepalive=keepalive, **kwargs
    )
    buf = out if out is not None else io.BytesIO()
    t0 = time.monotonic()
    tally = asyncio.run(LoadRun(spec, RecordWriter(buf, url)).run())
    assert time.monotonic() - t0 < (duration_s or 1) + 2 * spec.timeout_s + 2  # bounded end
    records = [json.loads(line) for line in buf.getvalue().splitlines()]
    assert len(records) == tally.requests
    return tally, records


# --------------------------------------------------------------------------------------------- schedule


def test_fixed_rate_counts_and_schedule() -> None:
    qps, duration = 200, 2.0
    with serving() as srv:
        tally, records = run(srv.url, qps=qps, duration_s=duration, connections=10)
    expected = int(qps * duration)  # exactly: request seq is due at seq / qps, for seq / qps < duration
    assert tally.issued == expected and tally.not_started == 0
    assert tally.requests == expected == srv.requests and sorted(r["seq"] for r in records) == list(
        range(expected)
    )
    assert tally.failed == 0 and all(r["code"] == 200 and r["bytes_in"] == len(BODY) for r in records)
    assert tally.late <= expected // 10, f"{tally.late} late starts: machine too loaded for this test"
    starts = {r["seq"]: parse_time_ns(r["timestamp"])[0] for r in records}
    bound_ns = (LATE_S + TICK_S) * 1e9
    on_schedule = sum(abs(starts[s] - starts[0] - s * 1e9 / qps) <= bound_ns for s in starts)
    assert on_schedule >= expected - tally.late - 1  # (the first start may itself be late)
    # achieved rate: requests over their starts' span (+ one interval): qps, within the late bound
    max_late_s = max(tally.max_late_ns / 1e9, LATE_S)
    assert (
        expected / (duration + max_late_s + TICK_S) <= tally.rate <= expected / (duration - LATE_S - TICK_S)
    )
    assert tally.rate == pytest.approx(qps, rel=0.05)


def test_open_loop_does_not_wait_for_slow_responses() -> None:
    """A server that never answers: requests still start on schedule, one per connection, and time out."""
    with serving("slow") as srv:
        tally, records = run(srv.url, qps=20, duration_s=0.5, connections=20, timeout_s=0.3)
    assert tally.requests == 10 and tally.by_class == {"timeout": 10}
    assert srv.accepted == 10  # ten in flight at once: none waited for the previous one
    starts = sorted(parse_time_ns(r["timestamp"])[0] for r in records)
    assert (starts[-1] - starts[0]) / 1e9 == pytest.approx(0.45, abs=LATE_S + TICK_S)
    for r in records:
        assert r["code"] == 0 and 0.3e9 <= r["latency"] < 0.3e9 + 0.2e9
        assert "timeout" in r["error"] and classify(0, r["error"]) is ErrorClass.TIMEOUT


def test_busy_connections_make_late_starts_and_skips() -> None:
    """One connection, a server that never answers: the schedule runs on, late starts are counted and
    tickets that waited longer than the timeout are skipped, without a record."""
    with serving("slow") as srv:
        tally, _ = run(srv.url, qps=50, duration_s=0.5, connections=1, timeout_s=0.2)
    assert tally.issued == 25
    assert tally.requests + tally.not_started == 25
    assert tally.not_started > 0 and tally.late >= tally.requests - 1
    assert tally.requests == srv.accepted and tally.by_class == {"timeout": tally.requests}


def test_until_file_stops_the_schedule(tmp_path: Path) -> None:
    flag = tmp_path / "stop"
    timer = threading.Timer(0.5, flag.touch)
    with serving() as srv:
        timer.start()
        try:
            t0 = time.monotonic()
            tally, _ = run(srv.url, qps=100, duration_s=None, until_file=flag, connections=5)
            took = time.monotonic() - t0
        finally:
            timer.cancel()
    assert 0.45 <= took < 0.5 + 0.1 + 0.5  # seen within one housekeeping period (100 ms) and some load
    assert 40 <= tally.requests <= 70 and tally.failed == 0


# ------------------------------------------------------------------------------------------ connections


def test_keepalive_reuses_connections() -> None:
    with serving() as srv:
        tally, _ = run(srv.url, qps=100, duration_s=1.0, connections=5)
    assert tally.requests == 100 == srv.requests and tally.failed == 0
    assert 1 <= srv.accepted <= 5 and tally.connections == srv.accepted and srv.close_asked == 0


def test_no_keepalive_opens_one_connection_per_request() -> None:
    with serving() as srv:
        tally, _ = run(srv.url, qps=100, duration_s=1.0, connections=5, keepalive=False)
    assert tally.requests == 100 == srv.accepted == srv.close_asked == tally.connections
    assert tally.failed == 0


def test_server_closing_idle_connections_is_no_failure() -> None:
    """The server closes a connection idle for 50 ms; requests come every 100 ms on one connection: the
    client sees the close before reusing it and dials anew (as Go's pool), nothing failed or retried."""
    with serving("idle_close", idle_s=0.05) as srv:
        tally, _ = run(srv.url, qps=10, duration_s=1.0, connections=1)
    assert tally.requests == 10 and tally.failed == 0 and tally.retried == 0
    assert srv.accepted == tally.connections == 10


@pytest.mark.parametrize("reset", [False, True], ids=["fin", "rst"])
def test_close_crossing_a_reused_request_is_retried(reset: bool) -> None:
    """The server closes a kept-alive connection as the next request arrives (EOF or RST before any byte
    of the response): sent once more on a new connection, as Go's client (hey, vegeta) and fortio do."""
    with serving("drop_reused", reset=reset) as srv:
        tally, records = run(srv.url, qps=20, duration_s=1.0, connections=1)
    assert tally.requests == 20 and tally.failed == 0 and all(r["code"] == 200 for r in records)
    # a connection carries one answered request: every request after the first meets a closed one
    assert tally.retried == 19
    assert srv.accepted == tally.connections == 20 and srv.requests == 20 + 19


def test_close_crossing_a_reused_request_without_retry_is_reset() -> None:
    with serving("drop_reused") as srv:
        tally, records = run(srv.url, qps=20, duration_s=1.0, connections=1, retry_idle=False)
    assert tally.requests == 20 and tally.retried == 0 and tally.by_class == {"reset": 10}
    failed = [r for r in records if r["code"] == 0]
    assert len(failed) == 10 and {r["error"] for r in failed} == {IDLE_CLOSED}


# ------------------------------------------------------------------------------------------ error classes


def test_refused_is_classed_refused() -> None:
    port = closed_port()
    tally, records = run(f"http://127.0.0.1:{port}/", qps=50, duration_s=0.2, connections=2)
    assert tally.requests == 10 and tally.by_class == {"refused": 10} and tally.connections == 0
    assert all(r["code"] == 0 and "connection refused" in r["error"] for r in records)


@pytest.mark.parametrize(("status", "cls"), [(502, "http_502"), (503, "http_503")])
def test_bad_gateway_is_classed_by_status(status: int, cls: str) -> None:
    with serving("status", status=status) as srv:
        tally, records = run(srv.url, qps=50, duration_s=0.2, connections=2)
    assert tally.requests == 10 and tally.by_class == {cls: 10} and tally.status_codes == {status: 10}
    assert all(r["code"] == status and r["error"].startswith(str(status)) for r in records)  # as vegeta


def test_chunked_body_is_read_to_its_end() -> None:
    with serving("chunked") as srv:
        tally, records = run(srv.url, qps=50, duration_s=0.2, connections=1)
    assert tally.requests == 10 and tally.failed == 0 and srv.accepted == 1
    assert all(r["bytes_in"] == 6 for r in records)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc", (200, 3, True)),
        (b"HTTP/1.1 204 No Content\r\n\r\n", (204, 0, True)),
        (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", (200, 0, True)),
        (b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nab", (200, 2, False)),
        (b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nab", (200, 2, True)),
        (b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nab", (200, 2, False)),
        (b"HTTP/1.1 502 Bad Gateway\r\n\r\nuntil the end", (502, 13, False)),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n0\r\n\r\n", (200, 2, True)),
    ],
)
def test_read_response(raw: bytes, expected: tuple[int, int, bool]) -> None:
    async def read() -> tuple[int, int, bool]:
        reader = asyncio.StreamReader()
        reader.feed_data(raw)
        reader.feed_eof()
        resp = await read_response(reader)
        return resp.status, resp.body_bytes, resp.reusable

    assert asyncio.run(read()) == expected


def test_read_response_rejects_garbage_and_reports_eof() -> None:
    async def read(raw: bytes) -> None:
        reader = asyncio.StreamReader()
        reader.feed_data(raw)
        reader.feed_eof()
        await read_response(reader)

    with pytest.raises(ProtocolError):
        asyncio.run(read(b"SSH-2.0-OpenSSH\r\n\r\n"))
    with pytest.raises(asyncio.IncompleteReadError) as err:
        asyncio.run(read(b""))
    assert err.value.partial == b""


# ------------------------------------------------------------------------------------------ records


def test_records_read_back_by_the_client_reader(tmp_path: Path) -> None:
    """The file is vegeta JSON: ``read_client_result`` finds the same requests, classes and times."""
    out = tmp_path / "load.jsonl"
    with serving("drop_reused") as srv:
        with open(out, "wb") as f:
            spec = LoadSpec(
                parse_target(srv.url, keepalive=True), 40, connections=1, duration_s=0.5, retry_idle=False
            )
            ok_tally = asyncio.run(LoadRun(spec, RecordWriter(f, srv.url)).run())
        port = closed_port()
        with open(out, "ab") as f:  # a second run appended: refusals
            spec = LoadSpec(parse_target(f"http://127.0.0.1:{port}/", keepalive=True), 40, duration_s=0.25)
            refused_tally = asyncio.run(LoadRun(spec, RecordWriter(f, spec.target.url)).run())
    result = read_client_result(out)
    assert result.format == "vegeta-json" and result.tool == "vegeta" and result.time_known
    assert result.requests == ok_tally.requests + refused_tally.requests == 30
    assert result.by_class == {**dict.fromkeys(result.by_class, 0), "reset": 10, "refused": 10}
    assert result.ok == 10 and result.failed == 20 and result.status_codes == {200: 10}
    table = result.requests_table
    assert table is not None and len(table) == 30
    starts = sorted(parse_time_ns(json.loads(line)["timestamp"])[0] for line in out.read_text().splitlines())
    assert sorted(table["time"].astype("int64")) == starts  # ns exact
    assert starts[0] == ok_tally.first_start_ns and starts[-1] == refused_tally.last_start_ns
    lat = sorted(json.loads(line)["latency"] / 1e9 for line in out.read_text().splitlines())
    assert sorted(table["latency_s"]) == pytest.approx(lat)
    assert not result.warnings


def test_cli_writes_records_and_one_summary_line(tmp_path: Path) -> None:
    out = tmp_path / "r.jsonl"
    with serving("status", status=502) as srv:
        res = CliRunner().invoke(
            cli,
            [
                "load",
                srv.url,
                "--qps",
                "50",
                "--duration",
                "400ms",
                "-c",
                "3",
                "--timeout",
                "2s",
                "-o",
                str(out),
            ],
        )
    assert res.exit_code == 0, res.output
    assert res.stdout == ""
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("auditor load: 20 requests")
    assert "0 ok, 20 failed (http_502 20)" in lines[0] and "p50" in lines[0] and "p99" in lines[0]
    result = read_client_result(out)
    assert result.requests == 20 and result.by_class["http_502"] == 20


@pytest.mark.parametrize("out", [[], ["--out", "-"]], ids=["default", "dash"])
def test_cli_writes_records_to_stdout(out: list[str]) -> None:
    with serving() as srv:
        res = CliRunner().invoke(
            cli, ["load", srv.url, "--qps", "50", "--duration", "200ms", "-c", "2", *out]
        )
    assert res.exit_code == 0, res.output
    records = [json.loads(line) for line in res.stdout.splitlines()]
    assert len(records) == 10 and {r["attack"] for r in records} == {"auditor-load"}
    assert {r["url"] for r in records} == {srv.url} and {r["method"] for r in records} == {"GET"}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["ftp://x/"], "not an http(s) URL"),
        (["http://127.0.0.1:1/", "--duration", "soon"], "--duration: bad duration"),
        (["http://127.0.0.1:1/", "--timeout", "0"], "--timeout: bad duration"),
    ],
)
def test_cli_usage_errors(args: list[str], message: str) -> None:
    from auditor.errors import AuditorError

    res = CliRunner().invoke(cli, ["load", *args])
    assert isinstance(res.exception, AuditorError) and message in str(res.exception)


# ------------------------------------------------------------------------------------------ signals


def _start_cli(args: list[str], stderr: Path) -> subprocess.Popen[bytes]:
    with open(stderr, "wb") as err:
        return subprocess.Popen(
            [sys.executable, "-m", "auditor", "load", *args], stdout=subprocess.DEVNULL, stderr=err
        )


def _wait_for(cond: Any, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.02)


def test_sigterm_stops_the_schedule_and_flushes(tmp_path: Path) -> None:
    out, err = tmp_path / "r.jsonl", tmp_path / "err"
    with serving() as srv:
        proc = _start_cli([srv.url, "--qps", "50", "--duration", "60s", "-c", "2", "--out", str(out)], err)
        try:
            _wait_for(lambda: out.exists() and out.stat().st_size > 0, 15)  # flushed every 100 ms
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(5) == 0
        finally:
            proc.kill()
            proc.wait()
    summary = err.read_text().strip().splitlines()[-1]
    requests = int(summary.split("auditor load: ")[1].split()[0])
    assert 0 < requests < 500 and "0 failed" in summary
    assert read_client_result(out).requests == requests == srv.requests


def test_second_signal_abandons_requests_in_flight(tmp_path: Path) -> None:
    out, err = tmp_path / "r.jsonl", tmp_path / "err"
    with serving("slow") as srv:
        args = [
            srv.url,
            "--qps",
            "100",
            "--duration",
            "60s",
            "-c",
            "3",
            "--timeout",
            "30s",
            "--out",
            str(out),
        ]
        proc = _start_cli(args, err)
        try:
            _wait_for(lambda: srv.accepted == 3, 15)
            proc.send_signal(signal.SIGTERM)  # stops the schedule; the 3 requests in flight would wait 30 s
            time.sleep(0.3)
            t0 = time.monotonic()
            proc.send_signal(signal.SIGINT)
            assert proc.wait(5) == 0
            assert time.monotonic() - t0 < 2
        finally:
            proc.kill()
            proc.wait()
    summary = err.read_text().strip().splitlines()[-1]
    assert summary.startswith("auditor load: 0 requests") and "3 abandoned in flight" in summary
    assert out.read_bytes() == b""


class _FullDisk(io.BytesIO):
    def __init__(self, room: int) -> None:
        super().__init__()
        self.room = room

    def write(self, data: Any) -> int:
        if self.tell() + len(data) > self.room:
            raise OSError(28, "No space left on device")
        return super().write(data)


def test_a_records_write_error_stops_the_run() -> None:
    """The records cannot be written (disk full): the run stops at once and raises, nothing hangs."""
    with serving() as srv:
        spec = LoadSpec(parse_target(srv.url, keepalive=True), 500, connections=5, duration_s=30)
        t0 = time.monotonic()
        with pytest.raises(OSError, match="No space left"):
            asyncio.run(LoadRun(spec, RecordWriter(_FullDisk(70_000), srv.url)).run())
        assert time.monotonic() - t0 < 5


def test_cli_records_write_error_is_one_line(tmp_path: Path) -> None:
    from auditor.errors import AuditorError

    res = CliRunner().invoke(cli, ["load", "http://127.0.0.1:1/", "--duration", "100ms", "-o", str(tmp_path)])
    assert res.exit_code != 0  # a directory: click refuses it before anything runs
    res = CliRunner().invoke(
        cli, ["load", "http://127.0.0.1:1/", "--duration", "100ms", "-o", "/proc/version"]
    )
    assert isinstance(res.exception, AuditorError) and "cannot write the records" in str(res.exception)
