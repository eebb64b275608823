"""The open-loop run: a scheduler issues tickets at a fixed rate, N workers (one connection each) serve them.

Schedule. Request ``seq`` is due at ``t0 + seq / qps`` (monotonic clock). The scheduler wakes for the
next due time and hands every ticket that is due to the workers' queue, whether or not earlier requests
have finished (open loop: a slow server does not slow the schedule). Its wake-ups are as fine as the
event loop's timer, :data:`TICK_S` (epoll waits in whole milliseconds), so a ticket is handed out up to
one tick after it is due: below 1,000 qps every request has its own wake-up, above it a wake-up hands out
``qps * TICK_S`` tickets at once. A request that starts more than :data:`LATE_S` after its due time (every
worker busy, or the loop overloaded) is *late*: it still runs, and is counted (``Tally.late``, and the
worst lateness). A ticket that waited longer than ``timeout`` for a worker is *not started*: counted, no
record (this bounds the backlog to ``qps * timeout`` tickets when the server hangs).

Connections. Each of the ``connections`` workers holds at most one connection: at most N in flight,
at most N kept. With keep-alive a worker reuses its connection until the server closes it or an error
ends it; without, each request opens a new one (``Connection: close``) and reads the response; the worker moves on
at once, and the connection is left to the server to close for up to :data:`CLOSE_WAIT_S` (closed at
once if the server's FIN is already in), so that the TIME_WAIT lands on the server's side: a client
that closes first keeps one per request, and at 2,000 new connections a second the 28,000 ephemeral
ports of a default port range run out in 14 s of a 60 s TIME_WAIT.

A kept-alive connection the server closed while idle. Before reusing a connection the worker checks
whether the server has closed it (FIN or RST already received): then it opens a new one, no failure,
as Go's transport (hey, vegeta) drops a closed idle connection from its pool. When the close crosses
the request (the server closed just as it was written: EOF, reset or broken pipe before a single byte
of the response), the request is sent once more on a new connection (``retry_idle``, the default): Go's
transport does the same for a GET on a reused connection (``shouldRetryRequest``, RFC 9110 9.2.2:
GET is idempotent), and so do fortio and browsers. The retry is counted (``Tally.retried``) and its
latency includes both attempts. With ``retry_idle=False`` the request is recorded as failed with Go's
text ``http: server closed idle connection`` (class ``reset``).

Stop. The schedule stops at ``duration`` (then exactly ``floor(duration * qps)`` tickets were issued),
when ``until_file`` appears (checked every :data:`HOUSEKEEPING_S`), or on :meth:`LoadRun.stop` (the command's first
SIGTERM/SIGINT: at once). Tickets already issued still run if a worker takes them within ``timeout``; requests
in flight finish or time out: the run ends at most ``2 * timeout`` after the stop. :meth:`LoadRun.abort`
(a second signal) abandons the requests in flight at once (``Tally.abandoned``, no record).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import math
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from auditor.loadgen.http import HEAD_LIMIT, ProtocolError, Target, read_response
from auditor.loadgen.records import RecordWriter, Tally

TICK_S = 0.001  # the event loop's timer granularity: epoll_wait takes whole milliseconds
LATE_S = 0.010  # a start this much after its due time is counted late (10 ticks: more than loop jitter)
HOUSEKEEPING_S = 0.1  # records flushed and --until-file checked this often
RESOLVE_TTL_S = 1.0  # a host name is resolved again after this long (not once per connection)
IDLE_CLOSED = "http: server closed idle connection"  # Go's errServerClosedIdle
CLOSE_WAIT_S = 0.1  # without keep-alive, how long the server has to close first after its response


@dataclass(frozen=True, slots=True)
class LoadSpec:
    target: Target
    qps: float
    connections: int = 50
    keepalive: bool = True
    duration_s: float | None = 30.0  # None: until until_file appears or stop()
    timeout_s: float = 10.0
    until_file: Path | None = None
    retry_idle: bool = True


class _Failure(Exception):
    """A request failed: ``text`` is the raw error text recorded, ``retryable`` if a new connection may help."""

    def __init__(self, text: str, *, retryable: bool = False) -> None:
        super().__init__(text)
        self.text = text
        self.retryable = retryable


class _Conn:
    __slots__ = ("reader", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    def closed_by_server(self) -> bool:
        return (
            self.reader.at_eof() or self.reader.exception() is not None or self.writer.transport.is_closing()
        )

    def close(self) -> None:
        with contextlib.suppress(Exception):
            if self.reader.exception() is not None:
                self.writer.transport.abort()
            else:
                self.writer.close()


class _Slot:
    """One worker's connection (at most one) and where its current request is (for the timeout's text)."""

    __slots__ = ("conn", "phase", "server_closes")

    def __init__(self) -> None:
        self.conn: _Conn | None = None
        self.phase = "dial"
        self.server_closes = False  # the response said Connection: close: leave the close to the server

    def drop(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def _os_text(exc: BaseException) -> str:
    """An OSError as Go words it (``connection refused``, ``connection reset by peer``, ``broken pipe``)."""
    code = getattr(exc, "errno", None)
    if isinstance(code, int) and code in errno.errorcode:
        return os.strerror(code).lower()
    return str(exc) or type(exc).__name__


class LoadRun:
    """One run of ``spec``: ``await run()`` returns the tally; records go to ``writer`` as they complete."""

    def __init__(self, spec: LoadSpec, writer: RecordWriter) -> None:
        if spec.qps <= 0 or spec.connections < 1 or spec.timeout_s <= 0:
            raise ValueError("qps, connections and timeout must be positive")
        self.spec = spec
        self.writer = writer
        self.tally = Tally(asked_qps=spec.qps)
        self._queue: asyncio.Queue[tuple[int, int] | None] = asyncio.Queue()
        self._stopped = False
        self._error: OSError | None = None  # writing the records failed: the run stops, run() raises it
        self._done: asyncio.Future[None] | None = None  # the schedule ended
        self._timer: asyncio.TimerHandle | None = None
        self._t0 = self._next_house = 0
        self._seq = 0
        self._interval_ns = 1e9 / spec.qps
        self._limit = math.floor(spec.duration_s * spec.qps) if spec.duration_s is not None else None
        self._workers: list[asyncio.Task[None]] = []
        self._closing: set[_Conn] = set()  # without keep-alive: answered, waiting for the server's FIN
        self._resolved: tuple[float, str] | None = None

    def stop(self) -> None:
        """Stop the schedule now (idempotent); issued tickets and requests in flight still finish."""
        self._stopped = True
        self._finish()

    def abort(self) -> None:
        """Stop the schedule and abandon the requests in flight (counted, no record)."""
        self.stop()
        for w in self._workers:
            w.cancel()

    def interrupt(self) -> None:
        """A signal: the first stops the schedule, the next aborts."""
        if self._stopped:
            self.abort()
        else:
            self.stop()

    async def run(self) -> Tally:
        """Run the schedule to its end, then let the workers finish; raises the records' write error."""
        self._done = asyncio.get_running_loop().create_future()
        self._workers = workers = [asyncio.create_task(self._worker()) for _ in range(self.spec.connections)]
        self._t0 = self._next_house = time.monotonic_ns()
        try:
            if self._stopped:
                self._finish()
            else:
                self._tick()
            await self._done
        finally:
            self._finish()
            for _ in workers:
                self._queue.put_nowait(None)
            _, pending = await asyncio.wait(workers, timeout=2 * self.spec.timeout_s + 1)
            for w in pending:  # cannot happen with bounded requests; never hang the caller
                w.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
            self.tally.not_started += self._drop_queue()
            for conn in list(self._closing):
                self._close_now(conn)
            await asyncio.sleep(0)  # let the transports finish closing before the loop does
            if self._error is None:
                self.writer.flush()
        if self._error is not None:
            raise self._error
        return self.tally

    # ------------------------------------------------------------------------------------------ schedule

    def _tick(self) -> None:
        """Hand out every ticket that is due, then set the timer for the next due time (or housekeeping).

        A plain loop callback, not a task: a wake-up costs one event-loop iteration (on this project's
        2-CPU VM, ~100 µs of CPU each: at low rates, iterations are most of a request's cost)."""
        self._timer = None
        if self._done is None or self._done.done():
            return
        try:
            now = time.monotonic_ns()
            seq, limit, t0, interval_ns = self._seq, self._limit, self._t0, self._interval_ns
            while (limit is None or seq < limit) and (due := t0 + round(seq * interval_ns)) <= now:
                self._queue.put_nowait((seq, due))
                seq += 1
            self._seq = seq
            if limit is not None and seq >= limit:
                self._finish()
                return
            if now >= self._next_house:
                self._next_house = now + round(HOUSEKEEPING_S * 1e9)
                self.writer.flush()
                if self.spec.until_file is not None and self.spec.until_file.exists():
                    self._finish()
                    return
            wake = min(t0 + round(seq * interval_ns), self._next_house)
            loop = asyncio.get_running_loop()
            self._timer = loop.call_at(loop.time() + max(0, wake - now) / 1e9, self._tick)
        except OSError as exc:  # the records cannot be written
            self._fail(exc)

    def _finish(self) -> None:
        """End the schedule (idempotent)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.tally.issued = self._seq
        if self._done is not None and not self._done.done():
            self._done.set_result(None)

    def _fail(self, exc: OSError) -> None:
        if self._error is None:
            self._error = exc
        self.abort()

    def _drop_queue(self) -> int:
        dropped = 0
        while not self._queue.empty():
            if self._queue.get_nowait() is not None:
                dropped += 1
        return dropped

    # ------------------------------------------------------------------------------------------ workers

    async def _worker(self) -> None:
        spec, tally, target = self.spec, self.tally, self.spec.target
        timeout_ns = round(spec.timeout_s * 1e9)
        late_ns = round(LATE_S * 1e9)
        slot = _Slot()
        in_flight = False
        try:
            while (ticket := await self._queue.get()) is not None:
                seq, due = ticket
                started = time.monotonic_ns()
                lateness = started - due
                if lateness > timeout_ns:
                    tally.not_started += 1
                    continue
                if lateness > late_ns:
                    tally.late += 1
                    tally.max_late_ns = max(tally.max_late_ns, lateness)
                wall = time.time_ns()
                code, reason, error, bytes_in = 0, "", "", 0
                in_flight = True
                try:
                    async with asyncio.timeout(spec.timeout_s):
                        code, reason, bytes_in = await self._request(slot)
                except _Failure as exc:
                    error = exc.text
                    slot.drop()
                except TimeoutError:
                    error = f"{slot.phase} tcp {target.address}: i/o timeout (no response within {spec.timeout_s:g} s)"
                    slot.drop()
                except Exception as exc:  # never lose a worker: anything else is one failed request
                    error = f"{type(exc).__name__}: {exc}"
                    slot.drop()
                latency = time.monotonic_ns() - started
                in_flight = False
                if code and not 200 <= code < 400:
                    error = f"{code} {reason}".strip()  # as vegeta: the status line is the error
                tally.add(wall, latency, code, error)
                try:
                    self.writer.write(seq, wall, latency, code, error, bytes_in)
                except OSError as exc:
                    self._fail(exc)
                    return
                if slot.server_closes:
                    self._close_later(slot)
        except asyncio.CancelledError:
            tally.abandoned += in_flight
            raise
        finally:
            slot.drop()

    def _close_later(self, slot: _Slot) -> None:
        """Without keep-alive: leave the connection to the server to close (its FIN), closing it ourselves
        after CLOSE_WAIT_S at the latest; the worker does not wait."""
        conn, slot.conn, slot.server_closes = slot.conn, None, False
        if conn is None:
            return
        if conn.closed_by_server():
            conn.close()
            return
        self._closing.add(conn)
        asyncio.get_running_loop().call_later(CLOSE_WAIT_S, self._close_now, conn)

    def _close_now(self, conn: _Conn) -> None:
        self._closing.discard(conn)
        conn.close()

    async def _request(self, slot: _Slot) -> tuple[int, str, int]:
        """One request on the slot's connection (a new one if it has none or the server closed it)."""
        if slot.conn is not None and slot.conn.closed_by_server():
            slot.drop()  # closed while idle: as Go's pool, take a new connection, no failure
        reused = slot.conn is not None
        if slot.conn is None:
            slot.conn = await self._connect(slot)
        try:
            status, reason, body, reusable = await self._exchange(slot, slot.conn)
        except _Failure as exc:
            if not (reused and exc.retryable):
                raise
            slot.drop()
            if not self.spec.retry_idle:
                raise _Failure(IDLE_CLOSED) from None
            self.tally.retried += 1
            slot.conn = await self._connect(slot)
            status, reason, body, reusable = await self._exchange(slot, slot.conn)
        if not (self.spec.keepalive and reusable):
            if self.spec.keepalive or reusable:
                slot.drop()  # the server keeps it open although asked to close, or keep-alive ended
            else:
                slot.server_closes = True
        return status, reason, body

    async def _exchange(self, slot: _Slot, conn: _Conn) -> tuple[int, str, int, bool]:
        slot.phase = "write"
        try:
            conn.writer.write(self.spec.target.request)
            await conn.writer.drain()
        except OSError as exc:
            raise _Failure(f"write tcp {self._peer(conn)}: write: {_os_text(exc)}", retryable=True) from None
        slot.phase = "read"
        try:
            resp = await read_response(conn.reader)
        except asyncio.IncompleteReadError as exc:
            nothing = not exc.partial
            text = f"read tcp {self._peer(conn)}: " + ("EOF" if nothing else "unexpected EOF")
            raise _Failure(text, retryable=nothing) from None
        except (ProtocolError, asyncio.LimitOverrunError, ValueError) as exc:
            raise _Failure(f"malformed HTTP response from {self.spec.target.address}: {exc}") from None
        except OSError as exc:  # a reset before the response: the same race as an EOF on a reused connection
            raise _Failure(f"read tcp {self._peer(conn)}: read: {_os_text(exc)}", retryable=True) from None
        return resp.status, resp.reason, resp.body_bytes, resp.reusable

    def _peer(self, conn: _Conn) -> str:
        local = conn.writer.get_extra_info("sockname")
        here = f"{local[0]}:{local[1]}" if isinstance(local, tuple) and len(local) >= 2 else "?"
        return f"{here}->{self.spec.target.address}"

    async def _connect(self, slot: _Slot) -> _Conn:
        target = self.spec.target
        slot.phase = "dial"
        host = await self._resolve()
        try:
            reader, writer = await asyncio.open_connection(
                host, target.port, ssl=target.ssl, server_hostname=target.host if target.ssl else None,
                limit=HEAD_LIMIT,
            )  # fmt: skip
        except OSError as exc:
            raise _Failure(f"dial tcp {target.address}: connect: {_os_text(exc)}") from None
        sock = writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.tally.connections += 1
        return _Conn(reader, writer)

    async def _resolve(self) -> str:
        """The address to dial: an address as is; a name resolved at most every RESOLVE_TTL_S."""
        host = self.spec.target.host
        try:
            socket.inet_pton(socket.AF_INET6 if ":" in host else socket.AF_INET, host)
            return host
        except OSError:
            pass
        now = time.monotonic()
        if self._resolved is not None and now - self._resolved[0] < RESOLVE_TTL_S:
            return self._resolved[1]
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(
                host, self.spec.target.port, type=socket.SOCK_STREAM
            )
        except OSError as exc:
            raise _Failure(f"dial tcp: lookup {host}: {exc}") from None
        address = str(infos[0][4][0])
        self._resolved = (now, address)
        return address


async def run_load(spec: LoadSpec, out: IO[bytes]) -> Tally:
    """Run ``spec``, writing records to ``out`` as they complete; the tally at the end."""
    return await LoadRun(spec, RecordWriter(out, spec.target.url)).run()
