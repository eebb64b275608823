"""What the load generator saw during a rollout: the client-side truth the audit is checked against."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

ERROR_KINDS: tuple[str, ...] = ("connection_refused", "connection_reset", "timeout", "eof", "http_5xx", "other")


@dataclass(frozen=True, slots=True)
class ClientResult:
    """One load-generator run.

    ``ok`` counts HTTP 2xx/3xx answers; ``failed = requests - ok``. ``by_error`` splits the failures by
    normalized kind (``ERROR_KINDS``): transport errors by their text, HTTP 5xx as ``http_5xx``, anything
    else (4xx, untyped socket errors such as fortio's ``-1``) as ``other``; its values sum to ``failed``.
    """

    tool: str  # "fortio" | "hey"
    requests: int
    ok: int
    failed: int
    by_error: dict[str, int]
    status_codes: dict[int, int]  # HTTP status -> responses (fortio's -1 "socket error" is not a status)
    qps: float | None
    duration_s: float | None
    start: datetime | None  # UTC, when the tool says (fortio); None for hey
    file: str = ""
    error_texts: dict[str, int] = field(default_factory=dict)  # raw error message -> count, when given


def classify_error(text: str) -> str:
    """Normalize a client error message to one of ``ERROR_KINDS`` (never ``http_5xx``)."""
    low = text.lower()
    if "connection refused" in low or "econnrefused" in low:
        return "connection_refused"
    if "connection reset" in low or "reset by peer" in low or "econnreset" in low:
        return "connection_reset"
    if any(s in low for s in ("timeout", "timed out", "deadline exceeded", "i/o timeout")):
        return "timeout"
    if low.rstrip().endswith("eof") or "unexpected eof" in low or ": eof" in low:
        return "eof"
    return "other"
