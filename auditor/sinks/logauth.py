"""Who may read the agent's ``/logs``: a bearer token checked with the API server, as kube-rbac-proxy
checks it in front of node agents.

Per request to ``/logs`` or ``/logs/<name>`` (``/metrics`` and ``/healthz`` stay open, as Prometheus
and the kubelet expect):

1. the token: ``Authorization: Bearer <token>`` (a client that reaches the node directly), else
   ``X-Auditor-Authorization: Bearer <token>`` (:data:`FORWARDED_HEADER`): the API server's pod proxy,
   the way ``auditor collect`` comes, removes the caller's ``Authorization`` header once it has
   authenticated it, and forwards other headers. No token: **401**.
2. TokenReview (``authentication.k8s.io/v1``): not authenticated: **401**.
3. SubjectAccessReview (``authorization.k8s.io/v1``) for that user, groups and extra of
   :attr:`LogsAccess.permission`, by default ``get`` on ``nodes/proxy`` of this agent's node: denied:
   **403**. Allowed: the files.

A review that cannot be made (API unreachable, the agent's ClusterRole lacking ``create`` on
tokenreviews / subjectaccessreviews) answers **503** and is not remembered; so does an agent whose
check is on but that has no API access at all. Decisions are cached per token (keyed by its SHA-256,
never the token itself): allowed ones for ``ttl_s`` (30 s), refused ones for ``deny_ttl_s`` (5 s), at
most ``max_entries`` tokens (least recently used first out), so a collection of many files costs two
reviews, not two per file. The check is off only when asked (``--logs-auth=off``, for labs).

The reviewer is the :class:`AccessReviewer` protocol; :class:`auditor.kubeapi.reviews.ApiAccessReviewer`
implements it with the official client, handed in by the agent's command.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from auditor.model.access import AccessVerdict, Identity, Permission, ReviewUnavailable

FORWARDED_HEADER = "X-Auditor-Authorization"
MAX_TOKEN_BYTES = 16 << 10  # larger than any service-account JWT or OIDC token; longer is refused unread
LOGS_AUTH_CHOICES = ("on", "off")


class AccessReviewer(Protocol):
    """Asks the API server who holds a token and what they may do."""

    def review_token(self, token: str) -> Identity | None:
        """The authenticated user, None if the API server does not authenticate the token;
        :class:`ReviewUnavailable` when no answer could be had."""
        ...

    def review_access(self, identity: Identity, permission: Permission) -> AccessVerdict:
        """Whether ``identity`` holds ``permission``; :class:`ReviewUnavailable` when no answer."""
        ...


@dataclass(frozen=True, slots=True)
class Decision:
    """What to answer: 200 (serve), 401, 403 or 503, and one line saying why."""

    status: int
    message: str
    user: str = ""

    @property
    def allowed(self) -> bool:
        return self.status == 200


def bearer_token(headers: Mapping[str, str] | object) -> str | None:
    """The bearer token of a request: ``Authorization`` first, then :data:`FORWARDED_HEADER`."""
    get = getattr(headers, "get", None)
    if get is None:
        return None
    for name in ("Authorization", FORWARDED_HEADER):
        value = get(name)
        if not isinstance(value, str):
            continue
        scheme, _, token = value.strip().partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    return None


class LogsAccess:
    """The ``/logs`` check of one agent; thread-safe (the HTTP server calls it from many threads)."""

    def __init__(
        self,
        reviewer: AccessReviewer | None,
        permission: Permission,
        *,
        enabled: bool = True,
        ttl_s: float = 30.0,
        deny_ttl_s: float = 5.0,
        max_entries: int = 1024,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.reviewer, self.permission, self.enabled = reviewer, permission, enabled
        self.ttl_s, self.deny_ttl_s, self.max_entries = ttl_s, deny_ttl_s, max(1, max_entries)
        self.clock = clock
        self._cache: OrderedDict[bytes, tuple[float, Decision]] = OrderedDict()
        self._lock = threading.Lock()
        self.reviews = 0  # TokenReviews + SubjectAccessReviews made (for tests and the summary)

    @classmethod
    def off(cls) -> LogsAccess:
        """No check (``--logs-auth=off``): for labs, where nobody else reaches the port."""
        return cls(None, Permission("get", "nodes", "proxy"), enabled=False)

    @property
    def mode(self) -> str:
        if not self.enabled:
            return "off"
        return "on" if self.reviewer is not None else "on, but no API access: /logs answers 503"

    def check(self, headers: Mapping[str, str] | object) -> Decision:
        """The decision for a request with these headers."""
        if not self.enabled:
            return Decision(200, "logs authentication off")
        if self.reviewer is None:
            return Decision(503, "/logs needs a bearer token checked with the API server, and this agent "
                                 "has no API access to check it: run it with API access (not --no-kube), or "
                                 "with --logs-auth=off in a lab")  # fmt: skip
        token = bearer_token(headers)
        if token is None:
            return Decision(401, f"/logs needs a bearer token: 'Authorization: Bearer <token>', or "
                                 f"'{FORWARDED_HEADER}: Bearer <token>' through the API server's pod proxy "
                                 "(auditor collect sends yours)")  # fmt: skip
        if len(token) > MAX_TOKEN_BYTES:
            return Decision(401, "bearer token too long")
        key = hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()
        now = self.clock()
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None and hit[0] > now:
                self._cache.move_to_end(key)
                return hit[1]
        decision = self._review(token)
        if decision.status != 503:
            ttl = self.ttl_s if decision.allowed else self.deny_ttl_s
            with self._lock:
                self._cache[key] = (now + ttl, decision)
                self._cache.move_to_end(key)
                while len(self._cache) > self.max_entries:
                    self._cache.popitem(last=False)
        return decision

    def _review(self, token: str) -> Decision:
        assert self.reviewer is not None
        try:
            self._count_review()
            identity = self.reviewer.review_token(token)
            if identity is None:
                return Decision(401, "the API server does not authenticate this bearer token")
            self._count_review()
            verdict = self.reviewer.review_access(identity, self.permission)
        except ReviewUnavailable as exc:
            return Decision(503, f"cannot check the bearer token with the API server: {exc}")
        if not verdict.allowed:
            why = f" ({verdict.reason})" if verdict.reason else ""
            return Decision(403, f'user "{identity.user}" may not {self.permission.text()}, which reading '
                                 f"this agent's logs requires{why}", identity.user)  # fmt: skip
        return Decision(200, "allowed", identity.user)

    def _count_review(self) -> None:
        with self._lock:
            self.reviews += 1

    def cached(self) -> int:
        with self._lock:
            return len(self._cache)


def unchecked_logs() -> LogsAccess:
    """The check with no reviewer: every ``/logs`` request answers 503 (a server given a log
    directory but no decision about who may read it serves nothing)."""
    return LogsAccess(None, Permission("get", "nodes", "proxy"))


__all__ = [
    "FORWARDED_HEADER",
    "LOGS_AUTH_CHOICES",
    "MAX_TOKEN_BYTES",
    "AccessReviewer",
    "Decision",
    "LogsAccess",
    "bearer_token",
    "unchecked_logs",
]
