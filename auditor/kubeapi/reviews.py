"""TokenReview and SubjectAccessReview with the official client: the agent's ``/logs`` check.

:class:`ApiAccessReviewer` implements :class:`auditor.sinks.logauth.AccessReviewer`:

* ``review_token``: ``POST /apis/authentication.k8s.io/v1/tokenreviews`` (``create_token_review``)
  with the caller's bearer token; the user, uid, groups and extra it names, or None;
* ``review_access``: ``POST /apis/authorization.k8s.io/v1/subjectaccessreviews``
  (``create_subject_access_review``) for that user and the resource attribute asked.

The agent's service account needs ``create`` on both (its ClusterRole, daemonset/base/clusterrole.yaml).
Any failure (no answer, an HTTP error such as 403 when that grant is missing, an answer without a
status) is :class:`~auditor.model.access.ReviewUnavailable`: the caller answers 503 and remembers
nothing. The answers are read as JSON, not through the client's models, so any client version reads
them the same way.
"""

from __future__ import annotations

import json
from typing import Any

from auditor.kubeapi.proxy import error_line
from auditor.model.access import AccessVerdict, Identity, Permission, ReviewUnavailable


class ApiAccessReviewer:
    """Reviews through ``api_client`` (a ``kubernetes.client.ApiClient``, thread-safe)."""

    def __init__(self, api_client: Any, timeout_s: float = 5.0) -> None:
        self.api_client, self.timeout_s = api_client, timeout_s

    def review_token(self, token: str) -> Identity | None:
        from kubernetes import client

        body = client.V1TokenReview(
            api_version="authentication.k8s.io/v1", kind="TokenReview",
            spec=client.V1TokenReviewSpec(token=token),
        )  # fmt: skip
        api = client.AuthenticationV1Api(self.api_client)
        status = self._status(lambda: api.create_token_review(body, **self._call_options()))
        if not status.get("authenticated"):
            return None
        user = status.get("user") or {}
        name = user.get("username")
        if not isinstance(name, str) or not name:
            raise ReviewUnavailable("the TokenReview authenticated the token but named no user")
        extra = {str(k): tuple(str(x) for x in v or ()) for k, v in (user.get("extra") or {}).items()}
        return Identity(
            name, str(user.get("uid") or ""), tuple(str(g) for g in user.get("groups") or ()), extra
        )

    def review_access(self, identity: Identity, permission: Permission) -> AccessVerdict:
        from kubernetes import client

        attributes = client.V1ResourceAttributes(
            verb=permission.verb, resource=permission.resource,
            subresource=permission.subresource or None, name=permission.name or None,
            group=permission.group or None, namespace=permission.namespace or None,
        )  # fmt: skip
        spec = client.V1SubjectAccessReviewSpec(
            user=identity.user, uid=identity.uid or None, groups=list(identity.groups) or None,
            extra={k: list(v) for k, v in identity.extra.items()} or None, resource_attributes=attributes,
        )  # fmt: skip
        body = client.V1SubjectAccessReview(
            api_version="authorization.k8s.io/v1", kind="SubjectAccessReview", spec=spec
        )
        api = client.AuthorizationV1Api(self.api_client)
        status = self._status(lambda: api.create_subject_access_review(body, **self._call_options()))
        allowed = status.get("allowed") is True and status.get("denied") is not True
        return AccessVerdict(allowed, str(status.get("reason") or status.get("evaluationError") or ""))

    def _call_options(self) -> dict[str, Any]:
        return {"_preload_content": False, "_request_timeout": (self.timeout_s, self.timeout_s)}

    def _status(self, call: Any) -> dict[str, Any]:
        """Make the call; the answer's ``status`` (an empty one is a valid "no")."""
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        try:
            resp = call()
            try:
                doc = json.loads(resp.data)
            finally:
                resp.release_conn()
        except (ApiException, HTTPError, OSError) as exc:
            raise ReviewUnavailable(error_line(exc)) from None
        except ValueError as exc:
            raise ReviewUnavailable(f"unreadable review answer ({exc})") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("status", {}), dict):
            raise ReviewUnavailable("the review answer has no status")
        status: dict[str, Any] = doc.get("status") or {}
        return status


__all__ = ["ApiAccessReviewer"]
