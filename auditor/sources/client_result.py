"""Read a load generator's result: ``fortio load -json FILE`` or hey's default text summary.

The format is detected from the content; a file that is neither raises :class:`AuditorError`.
"""

from __future__ import annotations

import json
import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from auditor.errors import AuditorError
from auditor.model.client import ERROR_KINDS, ClientResult, classify_error
from auditor.model.kube import parse_time_ns

_HEY_TOTAL = re.compile(r"^\s*Total:\s+([0-9.]+)\s+secs", re.M)
_HEY_RPS = re.compile(r"^\s*Requests/sec:\s+([0-9.]+|NaN)", re.M)
_HEY_STATUS = re.compile(r"^\s*\[(\d+)\]\s+(\d+)\s+responses\s*$")
_HEY_ERROR = re.compile(r"^\s*\[(\d+)\]\s+(.*?)\s*$")
_FORTIO_OK = {"OK", "SERVING"}  # tcp/udp/grpc runs


def read_client_result(path: str | Path) -> ClientResult:
    """Parse one result file (fortio JSON or hey text)."""
    p = Path(path)
    try:
        text = p.read_bytes().decode("utf-8", errors="replace")
    except OSError as exc:
        raise AuditorError(f"cannot read ({exc.strerror or exc})", str(p), "check the --client path") from exc
    stripped = text.lstrip()
    if stripped.startswith("{"):
        try:
            doc = json.loads(stripped)
        except json.JSONDecodeError as exc:
            raise AuditorError(
                f"not a fortio JSON result (line {exc.lineno}: {exc.msg})", str(p), "use `fortio load -json FILE`"
            ) from None
        if isinstance(doc, dict) and isinstance(doc.get("RetCodes"), dict):
            return _fortio(doc, p)
    elif "Summary:" in text and _HEY_RPS.search(text):
        return _hey(text, p)
    raise AuditorError(
        "neither a fortio JSON result nor a hey summary",
        str(p),
        "give the file of `fortio load -json FILE` or the saved output of `hey`",
    )


def _tally(tool: str, statuses: dict[int, int], errors: dict[str, int], extra_other: int, **kw: Any) -> ClientResult:
    by_error = dict.fromkeys(ERROR_KINDS, 0)
    for message, count in errors.items():
        by_error[classify_error(message)] += count
    ok = sum(n for code, n in statuses.items() if 200 <= code < 400)
    for code, n in statuses.items():
        if code >= 500:
            by_error["http_5xx"] += n
        elif not 200 <= code < 400:
            by_error["other"] += n
    by_error["other"] += extra_other
    failed = sum(by_error.values())
    return ClientResult(
        tool=tool, requests=ok + failed, ok=ok, failed=failed, by_error=by_error, status_codes=statuses,
        error_texts=errors, **kw,
    )  # fmt: skip


def _fortio(doc: dict[str, Any], path: Path) -> ClientResult:
    statuses: dict[int, int] = {}
    socket_errors = 0
    other = 0
    for key, value in doc["RetCodes"].items():
        count = int(value) if isinstance(value, int | float) else 0
        if key in _FORTIO_OK:
            statuses[200] = statuses.get(200, 0) + count
        elif key.lstrip("-").isdigit() and int(key) > 0:
            statuses[int(key)] = statuses.get(int(key), 0) + count
        elif key == "-1":
            socket_errors += count
        else:
            other += count
    errors = _fortio_errors(doc.get("Errors"))
    typed = min(sum(errors.values()), socket_errors)
    start = None
    if isinstance(doc.get("StartTime"), str):
        try:
            start_ns = parse_time_ns(doc["StartTime"])[0]
            start = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=start_ns // 1000)
        except ValueError:
            start = None
    duration = doc.get("ActualDuration")
    qps = doc.get("ActualQPS")
    result = _tally(
        "fortio", statuses, errors, socket_errors - typed + other,
        qps=float(qps) if isinstance(qps, int | float) else None,
        duration_s=duration / 1e9 if isinstance(duration, int | float) else None,
        start=start, file=path.name,
    )  # fmt: skip
    calls = (doc.get("DurationHistogram") or {}).get("Count")
    if isinstance(calls, int) and calls > result.requests:  # calls whose result was not coded
        by_error = dict(result.by_error)
        by_error["other"] += calls - result.requests
        return _replace_counts(result, by_error)
    return result


def _replace_counts(result: ClientResult, by_error: dict[str, int]) -> ClientResult:
    failed = sum(by_error.values())
    return replace(result, by_error=by_error, failed=failed, requests=result.ok + failed)


def _fortio_errors(raw: Any) -> dict[str, int]:
    """Error messages, if the result carries them (a {message: count} map or a list of messages)."""
    errors: dict[str, int] = {}
    if isinstance(raw, dict):
        for message, count in raw.items():
            if isinstance(count, int):
                errors[str(message)] = errors.get(str(message), 0) + count
    elif isinstance(raw, list):
        for message in raw:
            errors[str(message)] = errors.get(str(message), 0) + 1
    return errors


def _hey(text: str, path: Path) -> ClientResult:
    statuses: dict[int, int] = {}
    errors: dict[str, int] = {}
    section = ""
    for line in text.splitlines():
        if not line.startswith(" ") and line.strip().endswith(":"):
            section = line.strip()
            continue
        if section == "Status code distribution:" and (m := _HEY_STATUS.match(line)):
            statuses[int(m.group(1))] = statuses.get(int(m.group(1)), 0) + int(m.group(2))
        elif section == "Error distribution:" and (m := _HEY_ERROR.match(line)):
            errors[m.group(2)] = errors.get(m.group(2), 0) + int(m.group(1))
    total = _HEY_TOTAL.search(text)
    rps = _HEY_RPS.search(text)
    return _tally(
        "hey", statuses, errors, 0,
        qps=float(rps.group(1)) if rps and rps.group(1) != "NaN" else None,
        duration_s=float(total.group(1)) if total else None, start=None, file=path.name,
    )  # fmt: skip
