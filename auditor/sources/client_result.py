"""Read a load generator's result into a :class:`~auditor.model.client.ClientResult`.

Formats (``CLIENT_FORMATS``), detected from the content unless one is forced:

``fortio-json``        ``fortio load -json FILE`` (HTTP, gRPC with ``SERVING`` or, before fortio 1.2, numeric
                       health codes, TCP/UDP), and the fortio-format results of Nighthawk (counts as strings)
``fortio-access-log``  ``fortio load -access-log-file FILE`` (JSON lines; fortio >= 1.28 logs the outcome)
``vegeta-json``        ``vegeta encode -to json`` (JSON lines, one result per line)
``vegeta-csv``         ``vegeta encode -to csv`` (no header; timestamp ns, code, latency ns, bytes out, bytes in,
                       error, body, attack, seq, method, url, headers)
``k6-json``            ``k6 run --out json=FILE`` (NDJSON points; one request = one ``http_reqs`` point)
``hey``                hey's text report, with or without its ``Summary:`` block
``hey-csv``            ``hey -o csv`` (offsets from the start of the run: absolute times need ``start``,
                       ``--client-start``: hey writes no time of its own)

The per-request formats fill ``ClientResult.requests_table``. A file that no format reads (or that the
forced format does not read) raises one :class:`~auditor.errors.InputError` line naming the formats
tried; damage inside a readable file (an unparsable line) is counted in ``ClientResult.warnings``.
Gzip-compressed files (``k6 --out json=FILE.gz``) are read as well.
"""

from __future__ import annotations

import csv
import functools
import gzip
import io
import json
import math
import re
from collections import Counter, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from auditor.errors import AuditorError, InputError
from auditor.model.client import (
    ERROR_CLASSES,
    ERROR_KINDS,
    ClientRequest,
    ClientResult,
    ErrorClass,
    classify,
    client_frame,
    error_kind,
)
from auditor.model.kube import parse_time_ns

CLIENT_FORMATS: tuple[str, ...] = (
    "fortio-json", "fortio-access-log", "vegeta-json", "vegeta-csv", "k6-json", "hey", "hey-csv",
)  # fmt: skip
HEY_MAX_RESULTS = 1_000_000  # hey keeps at most this many results (requester/report.go, maxRes)
_NEEDS_START = ("hey", "hey-csv")  # the formats without a time of their own

_TOOLS = {"fortio-json": "fortio", "fortio-access-log": "fortio", "vegeta-json": "vegeta", "vegeta-csv": "vegeta",
          "k6-json": "k6", "hey": "hey", "hey-csv": "hey"}  # fmt: skip
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_INT = re.compile(r"^-?\d+$")
_HINT = (
    "give the output of `fortio load -json` or `-access-log-file`, `vegeta encode -to json|csv`, "
    "`k6 run --out json=FILE`, `hey` or `hey -o csv`"
)


class _Mismatch(Exception):
    """This reader does not read this file. ``close``: the file looked like the format but broke deeper."""

    def __init__(self, reason: str, close: bool = False) -> None:
        super().__init__(reason)
        self.close = close


@dataclass(frozen=True, slots=True)
class _Input:
    text: str
    name: str
    start_ns: int | None  # the run's start when the caller gives it (for hey's offsets)


def read_client_result(
    path: str | Path, format: str | None = None, *, start: datetime | None = None
) -> ClientResult:
    """Read one load-client result file.

    ``format``: one of ``CLIENT_FORMATS`` to skip detection (``--client-format``); ``start``: when the run
    started, for the formats that carry no absolute time (hey's text and ``hey -o csv``; naive = UTC; the
    other formats carry their own times and ignore it).
    Raises :class:`InputError` (one line: what, which file, the formats tried) when the file is unreadable.
    """
    p = Path(path)
    if format is not None and format not in CLIENT_FORMATS:
        raise AuditorError(
            f"unknown client format {format!r}", None, "use one of " + ", ".join(CLIENT_FORMATS)
        )
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read ({exc.strerror or exc})", str(p), "check the --client path") from exc
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise InputError(f"damaged gzip file ({exc})", str(p), "check the --client file") from None
    text = raw.decode("utf-8", errors="replace").lstrip("\ufeff")
    inp = _Input(text, p.name, _ns(start) if start is not None else None)
    result = _detect(inp, p, format)
    if start is not None and result.format not in _NEEDS_START:
        result.warnings.append(
            f"the given start time is not used: {result.format} results carry their own times"
        )
    return result


def parse_client_start(text: str) -> datetime:
    """``--client-start``: an RFC 3339 time (``2026-12-02T06:40:00.123456Z``; no zone = UTC) or Unix
    seconds (``date +%s.%N``). Raises one :class:`AuditorError` line otherwise."""
    raw = text.strip()
    try:
        if re.fullmatch(r"\d+(\.\d+)?", raw):
            whole, _, frac = raw.partition(".")
            return _dt(int(whole) * 1_000_000_000 + int((frac + "000000000")[:9]))
        return _dt(parse_time_ns(raw)[0])
    except (ValueError, OverflowError):
        raise AuditorError(
            f"--client-start {text!r} is not a time", None,
            "give an RFC 3339 time (date -u +%Y-%m-%dT%H:%M:%S.%NZ) or Unix seconds (date +%s.%N)",
        ) from None  # fmt: skip


def _detect(inp: _Input, p: Path, format: str | None) -> ClientResult:
    text = inp.text
    if format is not None:
        try:
            return _READERS[format](inp)
        except _Mismatch as exc:
            raise InputError(
                f"not a {format} result ({exc})", str(p),
                "check the file, or leave out the format to detect it among " + ", ".join(CLIENT_FORMATS),
            ) from None  # fmt: skip
    if not text.strip():
        raise InputError("empty file: no load-client result", str(p), _HINT)
    close: list[str] = []
    for fmt in CLIENT_FORMATS:
        try:
            return _READERS[fmt](inp)
        except _Mismatch as exc:
            if exc.close:
                close.append(f"looks like {fmt} but {exc}")
    what = "not a load-client result (tried " + ", ".join(CLIENT_FORMATS) + ")"
    if close:
        what += ": " + "; ".join(close)
    raise InputError(what, str(p), _HINT)


# --------------------------------------------------------------------------------------------------- helpers


def _ns(dt: datetime) -> int:
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return (dt - _EPOCH) // timedelta(microseconds=1) * 1000


def _dt(ns: int) -> datetime:
    return _EPOCH + timedelta(microseconds=ns // 1000)


def _count(raw: Any) -> int | None:
    """A count as fortio (a number) or Nighthawk (a string, protobuf's JSON for uint64) writes it."""
    if isinstance(raw, bool):
        return None
    if isinstance(raw, int):
        return raw
    if isinstance(raw, float) and raw.is_integer():
        return int(raw)
    if isinstance(raw, str) and _INT.match(raw.strip()):
        return int(raw.strip())
    return None


def _number(raw: Any) -> float | None:
    if isinstance(raw, bool):
        return None
    if isinstance(raw, int | float):
        return float(raw) if math.isfinite(raw) else None
    if isinstance(raw, str):
        try:
            value = float(raw)
        except ValueError:
            return None
        return value if math.isfinite(value) else None
    return None


def _lines(text: str) -> Iterator[tuple[int, str]]:
    """(1-based line number, line) of every non-blank line, lazily (sniffing a big file reads its head only)."""
    for n, line in enumerate(io.StringIO(text), 1):
        if line.strip():
            yield n, line.rstrip("\r\n")


def _head_objects(text: str, limit: int = 5) -> list[dict[str, Any]]:
    """The JSON objects among the first ``limit`` non-blank lines (to recognize a JSON-lines format)."""
    out: list[dict[str, Any]] = []
    for i, (_, line) in enumerate(_lines(text)):
        if i >= limit:
            break
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        if isinstance(obj, dict):
            out.append(obj)
    return out


class _Damage:
    """Unreadable lines of a JSON-lines / CSV file: counted, the first few kept for the warning."""

    def __init__(self) -> None:
        self.count = 0
        self.first: list[str] = []

    def add(self, line: int, why: str) -> None:
        self.count += 1
        if len(self.first) < 3:
            self.first.append(f"line {line}: {why}")

    def check(self, good: int, what: str) -> None:
        """Refuse the file (it looked like the format) when nothing, or less than half of it, was readable."""
        if good == 0 or self.count > good:
            detail = f" ({'; '.join(self.first)})" if self.first else ""
            raise _Mismatch(f"{self.count} of {self.count + good} lines are not {what}{detail}", close=True)

    def warnings(self) -> list[str]:
        if not self.count:
            return []
        return [f"{self.count} unreadable line(s) skipped ({'; '.join(self.first)})"]


def _json_objects(text: str, damage: _Damage) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) of every JSON-object line, lazily; any other non-blank line goes to ``damage``."""
    for n, line in _lines(text):
        try:
            obj = json.loads(line)
        except ValueError:
            damage.add(n, "not JSON")
            continue
        if isinstance(obj, dict):
            yield n, obj
        else:
            damage.add(n, "not a JSON object")


@dataclass(slots=True)
class _Tally:
    """Outcome groups ``(status, error text, class) -> requests`` and what follows from them."""

    groups: Counter[tuple[int, str, ErrorClass]]

    def result(self, inp: _Input, fmt: str, **kw: Any) -> ClientResult:
        status_codes: dict[int, int] = {}
        error_texts: dict[str, int] = {}
        by_error = dict.fromkeys(ERROR_KINDS, 0)
        by_class = dict.fromkeys(ERROR_CLASSES, 0)
        ok = 0
        for (status, error, cls), n in sorted(self.groups.items()):
            if status > 0:
                status_codes[status] = status_codes.get(status, 0) + n
            if error:
                error_texts[error] = error_texts.get(error, 0) + n
            kind = error_kind(cls, error)
            if kind is None:
                ok += n
            else:
                by_error[kind] += n
                by_class[cls.value] += n
        failed = sum(by_class.values())
        return ClientResult(
            tool=_TOOLS[fmt], requests=ok + failed, ok=ok, failed=failed, by_error=by_error,
            status_codes=dict(sorted(status_codes.items())), file=inp.name, error_texts=error_texts, format=fmt,
            by_class=by_class, **kw,
        )  # fmt: skip


@functools.lru_cache(maxsize=65536)
def _class_of(status: int, error: str = "") -> str:
    """:func:`classify`'s value, cached: a client file repeats few outcomes over millions of rows."""
    return classify(status, error).value


def _window(start_ns: int | None, duration_s: float | None) -> dict[str, Any]:
    """``start``/``end``/``time_known`` of an aggregate result from the tool's start and duration."""
    if start_ns is None:
        return {"start": None, "end": None, "time_known": False}
    end = _dt(start_ns + round(duration_s * 1e9)) if duration_s is not None else None
    return {"start": _dt(start_ns), "end": end, "time_known": True}


def _from_records(
    inp: _Input, fmt: str, records: list[ClientRequest], warnings: list[str], *, time_known: bool = True,
    capped: bool = False,
) -> ClientResult:  # fmt: skip
    """A per-request result: counts, window and rate from the records, and the client table."""
    by_outcome = Counter((r.status, r.error, r.error_class) for r in records)
    groups = Counter({(status, error, ErrorClass(cls)): n for (status, error, cls), n in by_outcome.items()})
    start_ns = min((r.time_ns for r in records), default=None)
    end_ns = max(
        (r.time_ns + (round(r.latency_s * 1e9) if not math.isnan(r.latency_s) else 0) for r in records),
        default=None,
    )
    duration_s = (end_ns - start_ns) / 1e9 if start_ns is not None and end_ns is not None else None
    qps = len(records) / duration_s if duration_s else None
    known = time_known and start_ns is not None and end_ns is not None
    return _Tally(groups).result(
        inp, fmt, qps=qps, duration_s=duration_s,
        start=_dt(start_ns) if known and start_ns is not None else None,
        end=_dt(end_ns) if known and end_ns is not None else None,
        time_known=known, capped=capped, warnings=warnings, requests_table=client_frame(records),
    )  # fmt: skip


# ------------------------------------------------------------------------------------------------ fortio JSON

_FORTIO_OK = {"OK", "SERVING"}  # tcp/udp runs; grpc health/ping runs
_GRPC_HEALTH = {0: "UNKNOWN", 1: "SERVING", 2: "NOT_SERVING", 3: "SERVICE_UNKNOWN"}


def _fortio_json(inp: _Input) -> ClientResult:
    text = inp.text.lstrip()
    if not text.startswith("{"):
        raise _Mismatch("not a JSON document")
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise _Mismatch(f"line {exc.lineno}: {exc.msg}", close='"RetCodes"' in text[:100_000]) from None
    if not isinstance(doc, dict) or not isinstance(doc.get("RetCodes"), dict):
        raise _Mismatch("no RetCodes map", close=isinstance(doc, dict) and "DurationHistogram" in doc)
    warnings: list[str] = []
    run_type = str(doc.get("RunType") or "")
    # gRPC runs: "GRPC Health", "GRPC Ping", "Custom GRPC Method ..."; before fortio 1.2 their RetCodes were
    # keyed by the health status number (1 = SERVING), -1 for errors
    keys = set(doc["RetCodes"])
    grpc = (
        "grpc" in run_type.lower()
        or ("Destination" in doc and "URL" not in doc)
        or (not run_type and bool(keys) and keys <= {"-1", "0", "1", "2", "3"})
    )
    statuses: Counter[int] = Counter()
    texts: Counter[str] = Counter()
    untyped_keys: Counter[str] = Counter()  # failures without a text: -1 (socket error), ERROR (gRPC)
    for key, raw in doc["RetCodes"].items():
        count = _count(raw)
        if count is None:
            warnings.append(f"RetCodes[{key!r}]: count {raw!r} is not a number, not counted")
            continue
        if key in _FORTIO_OK:
            statuses[200] += count
        elif _INT.match(key):
            code = int(key)
            if grpc and code in _GRPC_HEALTH:
                if code == 1:
                    statuses[200] += count
                else:
                    texts[_GRPC_HEALTH[code]] += count
            elif code > 0:
                statuses[code] += count
            else:  # -1: fortio's socket error (HTTP), failed call (gRPC before 1.2)
                untyped_keys[key] += count
        elif key == "ERROR":  # gRPC call errors (fortio >= 1.2)
            untyped_keys[key] += count
        else:  # NOT_SERVING...; a tcp/udp run's error messages
            texts[key] += count
    errors = _fortio_errors(doc.get("Errors"))
    untyped = sum(untyped_keys.values())
    typed = min(sum(errors.values()), untyped)
    untyped -= typed
    texts.update(errors)
    groups: Counter[tuple[int, str, ErrorClass]] = Counter()
    for code, n in statuses.items():
        groups[(code, "", classify(code))] += n
    for message, n in texts.items():
        groups[(0, message, classify(0, message))] += n
    if untyped:
        groups[(0, "", ErrorClass.OTHER)] += untyped
        what = " / ".join(f'"{k}"' for k in sorted(untyped_keys))
        warnings.append(
            f"{untyped} request(s) failed as fortio's {what} ({'call' if grpc else 'socket'} error) without an "
            "error text: classed other (refused, reset and timeout can't be told apart)"
        )
    requests = sum(groups.values())
    calls = _count((doc.get("DurationHistogram") or {}).get("Count"))
    if calls is not None and calls > requests:  # calls whose result was not coded
        groups[(0, "", ErrorClass.OTHER)] += calls - requests
        warnings.append(
            f"{calls - requests} call(s) of the duration histogram have no return code: classed other"
        )
        requests = calls
    if requests == 0:
        warnings.append("the result counts no request")
    start_ns = None
    if isinstance(doc.get("StartTime"), str):
        try:
            start_ns = parse_time_ns(doc["StartTime"])[0]
        except ValueError:
            warnings.append(
                f"StartTime {doc['StartTime']!r} is not an RFC 3339 time: the run's time is unknown"
            )
    else:
        warnings.append("no StartTime: the run's time is unknown")
    qps = _number(doc.get("ActualQPS"))
    duration_s = _fortio_duration(doc.get("ActualDuration"), requests, qps, warnings)
    return _Tally(groups).result(
        inp, "fortio-json", qps=qps, duration_s=duration_s, warnings=warnings, **_window(start_ns, duration_s)
    )


def _fortio_duration(raw: Any, requests: int, qps: float | None, warnings: list[str]) -> float | None:
    """ActualDuration is in nanoseconds (Go's time.Duration); some fortio-format writers put seconds."""
    value = _number(raw)
    if value is None:
        return None
    seconds = value / 1e9
    if requests > 1 and qps and seconds < 0.001 and 0.5 < value * qps / requests < 2:
        warnings.append(
            f"ActualDuration {raw!r} read as seconds (as nanoseconds it disagrees with ActualQPS)"
        )
        return value
    return seconds


def _fortio_errors(raw: Any) -> dict[str, int]:
    """Error messages, if the result carries them (a {message: count} map or a list of messages)."""
    errors: dict[str, int] = {}
    if isinstance(raw, dict):
        for message, value in raw.items():
            count = _count(value)
            if count is not None:
                errors[str(message)] = errors.get(str(message), 0) + count
    elif isinstance(raw, list):
        for message in raw:
            errors[str(message)] = errors.get(str(message), 0) + 1
    return errors


# ------------------------------------------------------------------------------------------ fortio access log


def _fortio_access_log(inp: _Input) -> ClientResult:
    # {"latency":0.001234,"timestamp":<start, ns>,"thread":3,"iter":17,"ok":true,"details":"200"}
    # (fortio >= 1.28; before, only latency, timestamp and thread: no outcome)
    head = _head_objects(inp.text)
    if not any(isinstance(o.get("timestamp"), int) and "latency" in o and "thread" in o for o in head):
        raise _Mismatch("no line has fortio's access-log fields (latency, timestamp in ns, thread)")
    damage = _Damage()
    records: list[ClientRequest] = []
    for n, obj in _json_objects(inp.text, damage):
        ts, latency = obj.get("timestamp"), _number(obj.get("latency"))
        if not isinstance(ts, int) or isinstance(ts, bool) or latency is None:
            damage.add(n, "no timestamp (ns) or latency")
            continue
        ok, details = obj.get("ok"), obj.get("details")
        if not isinstance(ok, bool) or not isinstance(details, str):
            damage.add(n, "no ok/details (fortio before 1.28 logs no outcome)")
            continue
        details = details.strip()
        status = int(details) if _INT.match(details) and int(details) > 0 else 0
        error = "" if status else details
        if ok:
            cls = _class_of(status) if status else ErrorClass.NONE.value  # SERVING, OK
            error = ""
        else:
            cls = _class_of(status, error)
        records.append(ClientRequest(ts, latency, status, cls, error))
    damage.check(len(records), "fortio access-log entries with an outcome")
    return _from_records(inp, "fortio-access-log", records, damage.warnings())


# ------------------------------------------------------------------------------------------------ vegeta


def _vegeta_json(inp: _Input) -> ClientResult:
    # {"attack":"","seq":0,"code":200,"timestamp":"2026-...+01:00","latency":1234567,"bytes_out":0,
    #  "bytes_in":12,"error":"","body":"...","method":"GET","url":"...","headers":{...}}
    head = _head_objects(inp.text)
    if not any(isinstance(o.get("timestamp"), str) and "latency" in o and "code" in o for o in head):
        raise _Mismatch("no line has vegeta's result fields (timestamp, latency, code)")
    damage = _Damage()
    records: list[ClientRequest] = []
    for n, obj in _json_objects(inp.text, damage):
        code, latency, error = obj.get("code"), obj.get("latency"), obj.get("error") or ""
        try:
            ts = parse_time_ns(str(obj.get("timestamp")))[0]
        except ValueError:
            damage.add(n, "timestamp is not an RFC 3339 time")
            continue
        if not isinstance(code, int) or not isinstance(latency, int) or not isinstance(error, str):
            damage.add(n, "code, latency (ns) or error missing")
            continue
        records.append(_vegeta_record(ts, code, latency, error))
    damage.check(len(records), "vegeta JSON results")
    return _from_records(inp, "vegeta-json", records, damage.warnings())


def _vegeta_record(ts: int, code: int, latency_ns: int, error: str) -> ClientRequest:
    return ClientRequest(ts, latency_ns / 1e9, code, _class_of(code, error), error)


def _vegeta_csv(inp: _Input) -> ClientResult:
    # no header: timestamp (ns), code, latency (ns), bytes out, bytes in, error, body (base64), attack, seq,
    # method, url, headers (base64); vegeta before 12.8 wrote the first 7 or 9 columns
    def parse(row: list[str]) -> ClientRequest:
        if len(row) < 6:
            raise ValueError(f"{len(row)} columns, vegeta writes at least 6")
        try:
            ts, code, latency = int(row[0]), int(row[1]), int(row[2])
        except ValueError:
            raise ValueError("timestamp, code and latency (columns 1-3) are not integers") from None
        return _vegeta_record(ts, code, latency, row[5])

    first = next((r for r in csv.reader(io.StringIO(inp.text)) if r), None)
    try:
        if first is None:
            raise ValueError("no rows")
        parse(first)
    except ValueError as exc:
        raise _Mismatch(f"the first row is not a vegeta CSV result: {exc}") from None
    damage = _Damage()
    records: list[ClientRequest] = []
    for n, row in enumerate(csv.reader(io.StringIO(inp.text)), 1):
        if not row:
            continue
        try:
            records.append(parse(row))
        except ValueError as exc:
            damage.add(n, str(exc))
    damage.check(len(records), "vegeta CSV results")
    return _from_records(inp, "vegeta-csv", records, damage.warnings())


# ------------------------------------------------------------------------------------------------ k6

# k6's error codes (lib/netext/httpext/error_codes.go) that say more than their text
_K6_CODES = {1050: ErrorClass.TIMEOUT, 1211: ErrorClass.TIMEOUT, 1212: ErrorClass.REFUSED,
             1220: ErrorClass.RESET, 1201: ErrorClass.RESET}  # fmt: skip


def _k6_json(inp: _Input) -> ClientResult:
    # {"type":"Metric","data":{...},"metric":"http_reqs"}
    # {"type":"Point","data":{"time":"...","value":1,"tags":{"status":"200",...}},"metric":"http_reqs"}
    # every sample of one request carries the request's end time and the same tags
    head = _head_objects(inp.text)
    if not any(o.get("type") in ("Point", "Metric") and "metric" in o and "data" in o for o in head):
        raise _Mismatch("no line is a k6 JSON output envelope (type Point/Metric, metric, data)")
    damage = _Damage()
    good = 0
    reqs: list[tuple[int, str, dict[str, Any]]] = []  # (end ns, pairing key, tags)
    durations: dict[str, deque[float]] = {}
    other_reqs: Counter[str] = Counter()
    for n, obj in _json_objects(inp.text, damage):
        if obj.get("type") not in ("Point", "Metric"):
            damage.add(n, "not a k6 Point or Metric")
            continue
        good += 1
        metric = obj.get("metric")
        if obj["type"] != "Point" or metric not in ("http_reqs", "http_req_duration"):
            if obj["type"] == "Point" and isinstance(metric, str) and metric.endswith("_reqs"):
                other_reqs[metric] += 1
            continue
        data = obj.get("data")
        if not isinstance(data, dict):
            damage.add(n, "a Point without data")
            continue
        raw_tags = data.get("tags")
        tags: dict[str, Any] = raw_tags if isinstance(raw_tags, dict) else {}
        try:
            end_ns = parse_time_ns(str(data.get("time")))[0]
        except ValueError:
            damage.add(n, "data.time is not an RFC 3339 time")
            continue
        key = str(data.get("time")) + json.dumps(tags, sort_keys=True)
        if metric == "http_reqs":
            reqs.append((end_ns, key, tags))
            continue
        value = _number(data.get("value"))
        if value is None:
            damage.add(n, "http_req_duration without a number")
            continue
        durations.setdefault(key, deque()).append(value)
    damage.check(good, "k6 JSON output lines")
    warnings = damage.warnings()
    records: list[ClientRequest] = []
    unpaired = 0
    for end_ns, key, tags in reqs:
        queue = durations.get(key)
        duration_ms = queue.popleft() if queue else None
        if duration_ms is None:
            unpaired += 1
        latency_s = duration_ms / 1000 if duration_ms is not None else math.nan
        start_ns = end_ns - round(duration_ms * 1e6) if duration_ms is not None else end_ns
        status_text = str(tags.get("status", "0"))
        status = int(status_text) if _INT.match(status_text) else 0
        error = str(tags.get("error") or "")
        code_text = str(tags.get("error_code") or "")
        code = int(code_text) if _INT.match(code_text) else 0
        if status >= 500 or code not in _K6_CODES:
            cls = _class_of(status, error or (f"k6 error_code {code}" if code and status < 400 else ""))
        else:
            cls = _K6_CODES[code].value
        records.append(ClientRequest(start_ns, latency_s, status, cls, error))
    if unpaired:
        warnings.append(
            f"{unpaired} http_reqs point(s) without their http_req_duration: time is the request's end, "
            "latency unknown"
        )
    if not records:
        others = ", ".join(f"{n} {m}" for m, n in sorted(other_reqs.items()))
        warnings.append("no http_reqs point: no request read" + (f" ({others} not read)" if others else ""))
    elif other_reqs:
        warnings.append("not read: " + ", ".join(f"{n} {m} point(s)" for m, n in sorted(other_reqs.items())))
    warnings.append(
        "k6 stamps a request with its end; start = end - http_req_duration, which leaves out the time "
        "spent blocked, resolving and connecting"
    )
    return _from_records(inp, "k6-json", records, warnings)


# ------------------------------------------------------------------------------------------------ hey

_HEY_TOTAL = re.compile(r"^\s*Total:\s+([0-9.]+)\s+secs", re.M)
_HEY_RPS = re.compile(r"^\s*Requests/sec:\s+([0-9.]+|NaN|\+?Inf)", re.M)
_HEY_STATUS = re.compile(r"^\s*\[(\d+)\]\s+(\d+)\s+responses\s*$")
_HEY_ERROR = re.compile(r"^\s*\[(\d+)\]\s+(.*?)\s*$")
_HEY_NOTE = re.compile(r"Distributions are for first (\d+) results")


def _hey(inp: _Input) -> ClientResult:
    text = inp.text
    summary = "Summary:" in text and _HEY_RPS.search(text) is not None
    if not summary and not re.search(r"^(Error|Status code) distribution:\s*$", text, re.M):
        raise _Mismatch("neither hey's Summary: block nor its Status code / Error distribution")
    statuses: Counter[int] = Counter()
    errors: Counter[str] = Counter()
    section = ""
    for line in text.splitlines():
        if not line.startswith(" ") and line.strip().endswith(":"):
            section = line.strip()
            continue
        if section == "Status code distribution:" and (m := _HEY_STATUS.match(line)):
            statuses[int(m.group(1))] += int(m.group(2))
        elif section == "Error distribution:" and (m := _HEY_ERROR.match(line)):
            errors[m.group(2)] += int(m.group(1))
    if not statuses and not errors:
        raise _Mismatch("no status code nor error line", close=True)
    total = _HEY_TOTAL.search(text)
    rps = _HEY_RPS.search(text)
    duration_s = float(total.group(1)) if total else None
    qps = float(rps.group(1)) if rps and rps.group(1) not in ("NaN", "Inf", "+Inf") else None
    warnings: list[str] = []
    if not summary:
        warnings.append("no Summary: block (hey prints none when every request failed): run time unknown")
    responses, failed = sum(statuses.values()), sum(errors.values())
    capped = False
    if responses >= HEY_MAX_RESULTS:
        # hey counts the status codes of its first 1,000,000 responses only; errors are all counted
        estimate = round(qps * duration_s) if qps is not None and duration_s is not None else None
        missing = estimate - responses - failed if estimate is not None else None
        if missing is None or missing > 1:  # (rate and total are rounded: +-1)
            capped = True
            warnings.append(
                f"hey keeps at most {HEY_MAX_RESULTS:,} results: the status counts stop there"
                + (f", about {missing:,} response(s) are not counted" if missing else "")
            )
    elif (m := _HEY_NOTE.search(text)) is not None:  # hey before 2018-09: counts complete, distributions not
        warnings.append(f"hey's latency distributions cover its first {int(m.group(1)):,} results only")
    groups: Counter[tuple[int, str, ErrorClass]] = Counter()
    for code, n in statuses.items():
        groups[(code, "", classify(code))] += n
    for message, n in errors.items():
        groups[(0, message, classify(0, message))] += n
    return _Tally(groups).result(
        inp, "hey", qps=qps, duration_s=duration_s, capped=capped, warnings=warnings,
        **_window(inp.start_ns, duration_s),
    )  # fmt: skip


def _hey_csv(inp: _Input) -> ClientResult:
    # hey -o csv (requester/print.go): one row per response, times in seconds, offset = when the request
    # started, from the start of the run. Requests that got no response (refused, reset, timeout) are not
    # in it: hey only counts them in its text report's Error distribution.
    rows = csv.reader(io.StringIO(inp.text))
    header = next((r for r in rows if r), [])
    if not header or header[0].strip() != "response-time":
        raise _Mismatch("no hey CSV header (response-time,DNS+dialup,...)")
    names = [h.strip() for h in header]
    if "status-code" not in names or "offset" not in names:
        raise _Mismatch("no status-code / offset column (hey before 2018-09 wrote neither)", close=True)
    i_lat, i_status, i_off = names.index("response-time"), names.index("status-code"), names.index("offset")
    base = inp.start_ns if inp.start_ns is not None else 0
    damage = _Damage()
    records: list[ClientRequest] = []
    for n, row in enumerate(rows, 2):
        if not row:
            continue
        try:
            latency, status, offset = float(row[i_lat]), int(row[i_status]), float(row[i_off])
        except (ValueError, IndexError):
            damage.add(n, f"not {len(names)} numbers")
            continue
        records.append(ClientRequest(base + round(offset * 1e9), latency, status, _class_of(status), ""))
    if records or damage.count:
        damage.check(len(records), "hey CSV rows")
    warnings = damage.warnings()
    if not records and not damage.count:  # the header alone: no request got a response
        warnings.append("no response at all: every request may have failed (hey -o csv lists none of them)")
    warnings.append(
        "hey -o csv lists only the requests that got an HTTP response: connection errors (refused, reset, "
        "timeout) are not in it (hey's text report counts them)"
    )
    if inp.start_ns is None:
        warnings.append(
            "hey -o csv gives offsets from the start of the run, not times: the run's time is unknown (give the "
            "time hey was started with --client-start to place its requests on the timeline)"
        )
    capped = len(records) >= HEY_MAX_RESULTS
    if capped:
        warnings.append(f"hey keeps at most {HEY_MAX_RESULTS:,} results: later responses are not in the file")
    return _from_records(
        inp, "hey-csv", records, warnings, time_known=inp.start_ns is not None, capped=capped
    )


_READERS: dict[str, Callable[[_Input], ClientResult]] = {
    "fortio-json": _fortio_json,
    "fortio-access-log": _fortio_access_log,
    "vegeta-json": _vegeta_json,
    "vegeta-csv": _vegeta_csv,
    "k6-json": _k6_json,
    "hey": _hey,
    "hey-csv": _hey_csv,
}
