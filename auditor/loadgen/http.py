"""HTTP/1.1 GET by hand over asyncio streams: the request's bytes, the response's status and body length.

Only what a load generator needs: one pre-encoded request per run, a response read to its end
(``Content-Length``, ``chunked``, or until the server closes), and whether the connection may carry the
next request. Bodies are counted, not kept.
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass
from urllib.parse import urlsplit

from auditor.errors import AuditorError

_NO_BODY = (204, 304)
HEAD_LIMIT = 64 * 1024  # the status line and headers must fit (asyncio's StreamReader limit)


@dataclass(frozen=True, slots=True)
class Target:
    """Where the requests go, and the request itself (GET, no body), encoded once."""

    url: str
    host: str  # to connect to: a name or an address, without brackets
    port: int
    ssl: ssl.SSLContext | None
    request: bytes  # the whole request: request line, headers, blank line

    @property
    def address(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_target(
    url: str, *, keepalive: bool, insecure: bool = False, user_agent: str = "auditor-load"
) -> Target:
    """The target of ``url`` (``http://`` or ``https://``). Raises :class:`AuditorError` for anything else."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise AuditorError(
            f"not an http(s) URL: {url!r}",
            "URL",
            "give e.g. http://web.default.svc/ or http://10.0.0.1:8080/",
        )
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise AuditorError(f"bad port in {url!r}", "URL") from None
    context: ssl.SSLContext | None = None
    if parts.scheme == "https":
        context = ssl.create_default_context()
        if insecure:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    host_header = parts.netloc.rpartition("@")[2]  # no credentials in Host
    lines = [f"GET {path} HTTP/1.1", f"Host: {host_header}", f"User-Agent: {user_agent}", "Accept: */*"]
    if not keepalive:
        lines.append("Connection: close")
    request = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return Target(url, parts.hostname, port, context, request)


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    reason: str
    body_bytes: int
    reusable: bool  # the connection may carry the next request


class ProtocolError(Exception):
    """The server's bytes are not an HTTP/1.x response."""


async def read_response(reader: asyncio.StreamReader) -> Response:
    """Read one response to its end. Raises :class:`asyncio.IncompleteReadError` when the server closes
    first (``partial`` empty: not a byte of the response came), :class:`ProtocolError` on garbage, and
    the transport's ``OSError`` (reset...)."""
    while True:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.LimitOverrunError:
            raise ProtocolError(f"response head longer than {HEAD_LIMIT} bytes") from None
        status_line, _, rest = head.partition(b"\r\n")
        version, _, tail = status_line.partition(b" ")
        code_text, _, reason = tail.partition(b" ")
        if not version.startswith(b"HTTP/1.") or len(code_text) != 3 or not code_text.isdigit():
            raise ProtocolError(f"not an HTTP/1.x status line: {status_line[:80]!r}")
        status = int(code_text)
        if 100 <= status < 200 and status != 101:
            continue  # 100 Continue, 103 Early Hints: the response follows
        break
    length = -1
    chunked = False
    close = version == b"HTTP/1.0"
    for line in rest.split(b"\r\n"):
        name, sep, value = line.partition(b":")
        if not sep:
            continue
        name = name.strip().lower()
        if name == b"content-length":
            try:
                length = int(value.strip())
            except ValueError:
                raise ProtocolError(f"bad Content-Length {value.strip()[:40]!r}") from None
        elif name == b"transfer-encoding":
            chunked = b"chunked" in value.lower()
        elif name == b"connection":
            tokens = value.lower()
            if b"close" in tokens:
                close = True
            elif b"keep-alive" in tokens:
                close = False
    reason_text = reason.decode("latin-1").strip()
    if status in _NO_BODY or status == 101:
        return Response(status, reason_text, 0, not close and status != 101)
    if chunked:
        return Response(status, reason_text, await _read_chunked(reader), not close)
    if length >= 0:
        if length:
            await reader.readexactly(length)
        return Response(status, reason_text, length, not close)
    body = 0  # no length: the body ends when the server closes
    while chunk := await reader.read(65536):
        body += len(chunk)
    return Response(status, reason_text, body, False)


async def _read_chunked(reader: asyncio.StreamReader) -> int:
    body = 0
    while True:
        size_line = await reader.readuntil(b"\r\n")
        try:
            size = int(size_line.split(b";", 1)[0].strip(), 16)
        except ValueError:
            raise ProtocolError(f"bad chunk size {size_line[:40]!r}") from None
        if size == 0:
            while await reader.readuntil(b"\r\n") != b"\r\n":  # trailers, then the blank line
                pass
            return body
        await reader.readexactly(size + 2)
        body += size
