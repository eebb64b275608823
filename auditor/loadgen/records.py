"""The per-request records of ``auditor load`` and the run's tally.

Records are written as ``vegeta encode -to json`` writes results, one JSON object a line, which
``auditor analyze --client`` (``sources.client_result``, format ``vegeta-json``) reads as it reads vegeta's::

    {"attack":"auditor-load","seq":0,"code":200,"timestamp":"2026-01-02T03:04:05.123456789Z",
     "latency":412345,"bytes_out":0,"bytes_in":612,"error":"","method":"GET","url":"http://..."}

``timestamp``: when the request started (wall clock, UTC, RFC 3339 with nanoseconds); ``latency``: ns
from that start to the response's last byte (or to the error); ``code``: HTTP status, 0 when none came;
``error``: the raw error text ("" when none; as vegeta, the status line for a status outside 2xx/3xx),
worded so that :func:`auditor.model.client.classify` (which the reader applies to ``code`` and ``error``)
gives its class; ``bytes_out``: request body bytes (0: GET); ``bytes_in``: response body bytes;
``seq``: the request's place in the schedule.
"""

from __future__ import annotations

import json
from array import array
from collections import Counter
from dataclasses import dataclass, field
from typing import IO

from auditor.model.client import ERROR_CLASSES, ErrorClass, classify
from auditor.model.kube import format_time_ns

ATTACK = "auditor-load"
FLUSH_BYTES = 64 * 1024  # the writer flushes at this size, and on every flush() (the runner: every 100 ms)


class RecordWriter:
    """Formats records as vegeta JSON lines into a binary stream, buffered; ``flush()`` writes them out."""

    def __init__(self, out: IO[bytes], url: str) -> None:
        self._out = out
        self._prefix = '{"attack":"' + ATTACK + '","seq":'
        self._suffix = ',"method":"GET","url":' + json.dumps(url) + "}\n"
        self._parts: list[str] = []
        self._size = 0
        self.written = 0

    def write(self, seq: int, start_ns: int, latency_ns: int, code: int, error: str, bytes_in: int) -> None:
        line = (
            f'{self._prefix}{seq},"code":{code},"timestamp":"{format_time_ns(start_ns)}","latency":{latency_ns},'
            f'"bytes_out":0,"bytes_in":{bytes_in},"error":{json.dumps(error) if error else chr(34) * 2}{self._suffix}'
        )
        self._parts.append(line)
        self._size += len(line)
        self.written += 1
        if self._size >= FLUSH_BYTES:
            self.flush()

    def flush(self) -> None:
        if self._parts:
            self._out.write("".join(self._parts).encode())
            self._parts.clear()
            self._size = 0
        self._out.flush()


@dataclass
class Tally:
    """Counts of one run as it goes: outcomes by class, latencies for the percentiles, the schedule."""

    asked_qps: float
    requests: int = 0
    by_class: Counter[str] = field(default_factory=Counter)
    status_codes: Counter[int] = field(default_factory=Counter)
    latencies_ns: array[int] = field(default_factory=lambda: array("q"))
    late: int = 0  # started more than the late threshold after their scheduled time
    max_late_ns: int = 0
    not_started: int = 0  # scheduled, but no connection came free in time (or the run stopped first)
    abandoned: int = 0  # in flight when the run was aborted: no record
    retried: int = 0  # reused connection closed under the request: sent again on a new one
    connections: int = 0  # TCP connections opened
    issued: int = 0  # tickets the schedule issued: requests + not_started + abandoned
    first_start_ns: int = 0  # wall clock
    last_start_ns: int = 0

    def add(self, start_ns: int, latency_ns: int, code: int, error: str) -> ErrorClass:
        cls = classify(code, error)
        self.requests += 1
        if cls is not ErrorClass.NONE:
            self.by_class[cls.value] += 1
        if code:
            self.status_codes[code] += 1
        self.latencies_ns.append(latency_ns)
        if self.requests == 1 or start_ns < self.first_start_ns:
            self.first_start_ns = start_ns
        self.last_start_ns = max(self.last_start_ns, start_ns)
        return cls

    @property
    def failed(self) -> int:
        return sum(self.by_class.values())

    @property
    def span_s(self) -> float:
        """From the first start to one interval after the last: ``requests / qps`` on schedule."""
        if not self.requests:
            return 0.0
        return (self.last_start_ns - self.first_start_ns) / 1e9 + 1 / self.asked_qps

    @property
    def rate(self) -> float:
        """Achieved rate: requests per second of their actual starts (``asked_qps`` when on schedule; late
        starts at the end stretch the span and lower it)."""
        return self.requests / self.span_s if self.requests else 0.0

    def percentile_ms(self, q: float) -> float:
        """Nearest-rank percentile ``q`` (0-100) of the latencies, ms; NaN without requests."""
        if not self.latencies_ns:
            return float("nan")
        ordered = sorted(self.latencies_ns)
        rank = max(1, -(-len(ordered) * q // 100))  # ceil(n q / 100)
        return ordered[int(rank) - 1] / 1e6

    def summary_line(self) -> str:
        """One line for stderr: requests, rate achieved, failures by class, p50/p99 latency."""
        failures = ", ".join(f"{c} {self.by_class[c]}" for c in ERROR_CLASSES if self.by_class.get(c))
        parts = [
            f"{self.requests} requests in {self.span_s:.2f} s: {self.rate:.1f}/s (asked {self.asked_qps:g}/s)",
            f"{self.requests - self.failed} ok, {self.failed} failed"
            + (f" ({failures})" if failures else ""),
            f"latency p50 {self.percentile_ms(50):.3f} ms p99 {self.percentile_ms(99):.3f} ms"
            if self.requests
            else "no latency",
            f"{self.late} late starts"
            + (f" (max {self.max_late_ns / 1e6:.1f} ms)" if self.late else "")
            + f", {self.not_started} not started"
            + (f", {self.abandoned} abandoned in flight" if self.abandoned else ""),
            f"{self.connections} connections, {self.retried} retried",
        ]
        return "auditor load: " + "; ".join(parts)
