"""What the load generator saw during a rollout: the client-side truth the audit is checked against.

Two levels:

* :class:`ClientResult`, one per run: counts by HTTP status, by error class, the run's time window when
  the tool says, and the warnings of the reader (damaged lines, hey's 1,000,000-result cap...).
* the client table (``ClientResult.requests_table``), one row per request, for the formats that carry
  each request (fortio's access log, vegeta's results, k6's JSON points, hey ``-o csv``). Its columns are
  the fields of :class:`ClientRequest` (``time_ns`` becomes ``time``, pandas ``datetime64[ns, UTC]``).

Error classes
-------------
Every request is one :class:`ErrorClass`: ``""`` (``ErrorClass.NONE``) when it succeeded, else refused,
reset, timeout, http_502/503/504, http_5xx (other 5xx) or other (4xx, unknown errors). :func:`classify`
is the only classifier. ``ClientResult.by_error`` keeps the older kinds (``ERROR_KINDS``) for callers
written against them; ``ClientResult.by_class`` counts the classes.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

ERROR_KINDS: tuple[str, ...] = ("connection_refused", "connection_reset", "timeout", "eof", "http_5xx", "other")


class ErrorClass(StrEnum):
    """What became of one request. ``NONE`` (``""``): it succeeded (HTTP 2xx/3xx, gRPC SERVING, TCP OK)."""

    NONE = ""
    REFUSED = "refused"  # connection refused: a SYN answered by RST
    RESET = "reset"  # reset by peer, broken pipe, EOF, "http: server closed idle connection"
    TIMEOUT = "timeout"  # dial/read timeouts, deadlines
    HTTP_502 = "http_502"
    HTTP_503 = "http_503"
    HTTP_504 = "http_504"
    HTTP_5XX = "http_5xx"  # any other 5xx
    OTHER = "other"  # 4xx, 1xx, unknown or untyped errors (fortio's -1 "socket error")


# The failure classes, in report order (every class but NONE): the keys of ``ClientResult.by_class``.
ERROR_CLASSES: tuple[str, ...] = tuple(c.value for c in ErrorClass if c is not ErrorClass.NONE)

_HTTP_CLASSES = {502: ErrorClass.HTTP_502, 503: ErrorClass.HTTP_503, 504: ErrorClass.HTTP_504}
_REFUSED = ("connection refused", "econnrefused", "actively refused")
_RESET = (
    "connection reset", "reset by peer", "econnreset", "broken pipe", "server closed idle connection", "forcibly closed",
)  # fmt: skip
_TIMEOUT = ("timeout", "timed out", "deadline exceeded")


def _is_eof(low: str) -> bool:
    return low.rstrip().endswith("eof") or "unexpected eof" in low or ": eof" in low


def _text_class(text: str) -> ErrorClass:
    low = text.lower()
    if any(s in low for s in _REFUSED):
        return ErrorClass.REFUSED
    if any(s in low for s in _RESET):
        return ErrorClass.RESET
    if any(s in low for s in _TIMEOUT):
        return ErrorClass.TIMEOUT
    if _is_eof(low):  # the server closed a kept-alive connection the client had just reused
        return ErrorClass.RESET
    return ErrorClass.OTHER


def classify(status: int, error: str = "") -> ErrorClass:
    """The class of one request from its HTTP status (0: none) and the tool's error text ("": none).

    A 5xx status wins over the text (vegeta writes ``"503 Service Unavailable"`` as the error); then a
    transport error text; then the status: 2xx/3xx succeeded, anything else (4xx, 1xx, no status and no
    text) is ``other``. A success without an HTTP status (gRPC SERVING) is the reader's to say: this
    function never sees it.
    """
    if status >= 500:
        return _HTTP_CLASSES.get(status, ErrorClass.HTTP_5XX)
    if error:
        return _text_class(error)
    if 200 <= status < 400:
        return ErrorClass.NONE
    return ErrorClass.OTHER


def error_kind(cls: ErrorClass, error: str = "") -> str | None:
    """The older kind (one of ``ERROR_KINDS``) of a request of class ``cls``; None when it succeeded."""
    if cls is ErrorClass.NONE:
        return None
    if cls is ErrorClass.REFUSED:
        return "connection_refused"
    if cls is ErrorClass.RESET:
        low = error.lower()
        return "eof" if _is_eof(low) and not any(s in low for s in _RESET) else "connection_reset"
    if cls is ErrorClass.TIMEOUT:
        return "timeout"
    if cls in (ErrorClass.HTTP_502, ErrorClass.HTTP_503, ErrorClass.HTTP_504, ErrorClass.HTTP_5XX):
        return "http_5xx"
    return "other"


def classify_error(text: str) -> str:
    """Normalize a client error message to one of ``ERROR_KINDS`` (never ``http_5xx``)."""
    return error_kind(_text_class(text), text) or "other"


@dataclass(frozen=True, slots=True)
class ClientRequest:
    """One request as the load client saw it. Field order is the column order of the client table."""

    time_ns: int  # start of the request, UTC ns since the epoch (offset from the run's start when
    # ClientResult.time_known is False: hey -o csv without a given start)
    latency_s: float  # NaN when the tool did not say
    status: int  # HTTP status; 0 = no HTTP status (transport error, gRPC, TCP)
    error_class: str  # an ErrorClass value; "" = succeeded
    error: str  # the tool's error text, raw ("" = none)


CLIENT_COLUMNS: tuple[str, ...] = tuple("time" if f.name == "time_ns" else f.name for f in fields(ClientRequest))
_CLIENT_DTYPES: dict[str, str] = {"latency_s": "float64", "status": "int32", "error": "category"}


def client_frame(records: list[ClientRequest] | None = None) -> pd.DataFrame:
    """The client table from records (an empty table with the right dtypes if none)."""
    import pandas as pd

    rows = records or []
    data: dict[str, Any] = {}
    for f in fields(ClientRequest):
        values = [getattr(r, f.name) for r in rows]
        if f.name == "time_ns":
            data["time"] = pd.to_datetime(pd.Series(values, dtype="int64"), unit="ns", utc=True)
        elif f.name == "error_class":
            data[f.name] = pd.Series(values, dtype=pd.CategoricalDtype([c.value for c in ErrorClass]))
        else:
            data[f.name] = pd.Series(values, dtype=_CLIENT_DTYPES[f.name])
    return pd.DataFrame(data, columns=list(CLIENT_COLUMNS))


@dataclass(frozen=True, slots=True)
class ClientResult:
    """One load-generator run.

    ``ok`` counts the requests that succeeded (HTTP 2xx/3xx, gRPC SERVING, TCP OK); ``failed = requests
    - ok``. ``by_class`` splits the failures by :class:`ErrorClass` (keys ``ERROR_CLASSES``), ``by_error``
    by the older kinds (``ERROR_KINDS``: transport errors by their text, HTTP 5xx as ``http_5xx``, anything
    else, 4xx and untyped socket errors such as fortio's ``-1``, as ``other``); the values of each sum to
    ``failed``.
    """

    tool: str  # "fortio" | "hey" | "vegeta" | "k6"
    requests: int
    ok: int
    failed: int
    by_error: dict[str, int]
    status_codes: dict[int, int]  # HTTP status -> responses (fortio's -1 "socket error" is not a status)
    qps: float | None
    duration_s: float | None
    start: datetime | None  # UTC, when known: the tool's own start time, or the first request's
    file: str = ""
    error_texts: dict[str, int] = field(default_factory=dict)  # raw error message -> count, when given
    format: str = ""  # which reader: one of sources.client_result.CLIENT_FORMATS
    by_class: dict[str, int] = field(default_factory=dict)  # ErrorClass value -> failed requests
    end: datetime | None = None  # UTC, when known: start + the tool's duration, or the last request's end
    time_known: bool = False  # the times (start, end, the table's ``time``) are absolute UTC
    capped: bool = False  # the tool dropped results (hey keeps at most 1,000,000)
    warnings: list[str] = field(default_factory=list)  # partial damage and caveats, one line each
    # one row per request (CLIENT_COLUMNS) for the formats that carry each request; None for aggregates
    requests_table: pd.DataFrame | None = field(default=None, compare=False, repr=False)
