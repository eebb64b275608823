"""Pods by label, and GETs through the API server's pod proxy: what ``auditor collect`` asks the API.

Every failure of a call comes back as :class:`ApiCallError`, with the HTTP status when the server
answered, so callers never import the client's exception types.

The agents check who reads their logs (:mod:`auditor.sinks.logauth`): each proxied request carries the
user's own bearer token in :data:`TOKEN_HEADER`. Not in ``Authorization``: kube-apiserver removes that
header once it has authenticated the caller (its authentication filter deletes it, so the proxied pod
never sees it; kubernetes/kubernetes#38775), and forwards the request's other headers and its query
unchanged. A header rather than a query parameter because the query is part of the request URI, which
the API server writes to its audit log and access logs; headers are not.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

CHUNK = 1 << 16
TOKEN_HEADER = "X-Auditor-Authorization"  # = auditor.sinks.logauth.FORWARDED_HEADER (a test keeps them equal)


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


def bearer_token(api_client: Any) -> str | None:
    """The bearer token the client authenticates with (a kubeconfig ``token``, an exec or OIDC plugin's,
    the in-cluster service account's; refreshed when the loader can), else None (client certificates)."""
    configuration = getattr(api_client, "configuration", None)
    settings = getattr(configuration, "auth_settings", None)
    if settings is None:
        return None
    for setting in settings().values():
        value = setting.get("value") if isinstance(setting, dict) else None
        if setting.get("in") == "header" and str(setting.get("key", "")).lower() == "authorization" and value:
            scheme, _, token = str(value).partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
    return None


class PodProxy:
    """GETs to one port of one pod through the API server (``pods/<pod>:<port>/proxy/<path>``), with
    ``token`` (when given) in :data:`TOKEN_HEADER` for the pod to check."""

    def __init__(
        self, api_client: Any, namespace: str, pod: str, port: int, timeout_s: float, token: str | None = None
    ) -> None:
        from kubernetes import client

        self._api = client.CoreV1Api(api_client)
        self.namespace, self.target, self.timeout_s = namespace, f"{pod}:{port}", timeout_s
        self._headers = {TOKEN_HEADER: f"Bearer {token}"} if token else {}

    def _get(self, path: str) -> Any:
        return self._api.connect_get_namespaced_pod_proxy_with_path(
            self.target, self.namespace, path, _headers=dict(self._headers),
            _preload_content=False, _request_timeout=(self.timeout_s, self.timeout_s),
        )  # fmt: skip

    @contextmanager
    def _response(self, path: str) -> Iterator[Any]:
        """``GET path``'s response, released afterwards; the client's errors (also while reading) as
        ApiCallError."""
        api_error, transport = _errors()
        try:
            resp = self._get(path)
            try:
                yield resp
            finally:
                resp.release_conn()
        except api_error as exc:
            raise ApiCallError(error_line(exc), getattr(exc, "status", None), answered=True) from None
        except transport as exc:
            raise ApiCallError(error_line(exc)) from None

    def read(self, path: str) -> bytes:
        """The whole body of ``GET path``; ApiCallError on failure."""
        with self._response(path) as resp:
            return bytes(resp.data)

    def stream(self, path: str) -> Iterator[bytes]:
        """The body of ``GET path`` in chunks as they arrive (not decoded); ApiCallError on failure."""
        with self._response(path) as resp:
            yield from resp.stream(CHUNK, decode_content=False)


__all__ = ["TOKEN_HEADER", "ApiCallError", "PodPlacement", "PodProxy", "bearer_token", "error_line", "list_pods"]
