"""Pods by label, and GETs through the API server's pod proxy: what ``auditor collect`` asks the API.

Every failure of a call comes back as :class:`ApiCallError`, with the HTTP status when the server
answered, so callers never import the client's exception types.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

CHUNK = 1 << 16


class ApiCallError(Exception):
    """A failed API call. ``answered``: the API server replied (``status`` is its HTTP code, 404 for a
    pod proxy target that is gone); otherwise the request never got an answer (connection, timeout)."""

    def __init__(self, message: str, status: int | None = None, answered: bool = False) -> None:
        super().__init__(message)
        self.message, self.status, self.answered = message, status, answered


def error_line(exc: BaseException) -> str:
    """One line from an API error (its Status message when there is one) or any other exception."""
    status = getattr(exc, "status", None)
    body = getattr(exc, "body", None)
    message = ""
    if body:
        try:
            message = str(json.loads(body).get("message", ""))
        except (ValueError, AttributeError, TypeError):
            message = body.decode(errors="replace") if isinstance(body, bytes) else str(body)
    if not message:
        message = str(getattr(exc, "reason", "") or exc)
    text = f"HTTP {status}: {message}" if status else f"{type(exc).__name__}: {message}"
    return " ".join(text.split())[:300]


@dataclass(frozen=True)
class PodPlacement:
    """A pod as listed: its name, the node it is scheduled on ("" if none), its phase."""

    name: str
    node: str
    phase: str


def _errors() -> tuple[type[BaseException], tuple[type[BaseException], ...]]:
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    return ApiException, (HTTPError, OSError)


def list_pods(api_client: Any, namespace: str, selector: str, timeout_s: float = 30) -> list[PodPlacement]:
    """The pods of ``namespace`` matching the label ``selector``; ApiCallError on failure."""
    from kubernetes import client

    api_error, transport = _errors()
    try:
        pods = client.CoreV1Api(api_client).list_namespaced_pod(
            namespace, label_selector=selector, _request_timeout=timeout_s
        )
    except api_error as exc:
        raise ApiCallError(error_line(exc), getattr(exc, "status", None), answered=True) from None
    except transport as exc:
        raise ApiCallError(error_line(exc)) from None
    return [
        PodPlacement(
            str(pod.metadata.name if pod.metadata else ""),
            (pod.spec.node_name if pod.spec else None) or "",
            (pod.status.phase if pod.status else None) or "Unknown",
        )
        for pod in pods.items
    ]


class PodProxy:
    """GETs to one port of one pod through the API server (``pods/<pod>:<port>/proxy/<path>``)."""

    def __init__(self, api_client: Any, namespace: str, pod: str, port: int, timeout_s: float) -> None:
        from kubernetes import client

        self._api = client.CoreV1Api(api_client)
        self.namespace, self.target, self.timeout_s = namespace, f"{pod}:{port}", timeout_s

    def _get(self, path: str) -> Any:
        return self._api.connect_get_namespaced_pod_proxy_with_path(
            self.target, self.namespace, path,
            _preload_content=False, _request_timeout=(self.timeout_s, self.timeout_s),
        )  # fmt: skip

    def read(self, path: str) -> bytes:
        """The whole body of ``GET path``; ApiCallError on failure."""
        api_error, transport = _errors()
        try:
            resp = self._get(path)
            try:
                return bytes(resp.data)
            finally:
                resp.release_conn()
        except api_error as exc:
            raise ApiCallError(error_line(exc), getattr(exc, "status", None), answered=True) from None
        except transport as exc:
            raise ApiCallError(error_line(exc)) from None

    def stream(self, path: str) -> Iterator[bytes]:
        """The body of ``GET path`` in chunks as they arrive (not decoded); ApiCallError on failure."""
        api_error, transport = _errors()
        try:
            resp = self._get(path)
            try:
                yield from resp.stream(CHUNK, decode_content=False)
            finally:
                resp.release_conn()
        except api_error as exc:
            raise ApiCallError(error_line(exc), getattr(exc, "status", None), answered=True) from None
        except transport as exc:
            raise ApiCallError(error_line(exc)) from None


__all__ = ["ApiCallError", "PodPlacement", "PodProxy", "error_line", "list_pods"]
