"""Who asks, and for what: the values the agent's ``/logs`` check passes between its HTTP side
(:mod:`auditor.sinks.logauth`) and the API server's reviews (:mod:`auditor.kubeapi.reviews`).

Plain values, no client: the reviews are TokenReview (``authentication.k8s.io/v1``: who holds this
bearer token?) and SubjectAccessReview (``authorization.k8s.io/v1``: may that user do this?).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Identity:
    """A user as the API server's TokenReview names it."""

    user: str
    uid: str = ""
    groups: tuple[str, ...] = ()
    extra: dict[str, tuple[str, ...]] = field(default_factory=dict, hash=False, compare=False)


@dataclass(frozen=True, slots=True)
class Permission:
    """A resource attribute a SubjectAccessReview checks: ``verb`` on ``resource[/subresource]``
    (``name`` of it; ``namespace`` empty for cluster-scoped resources)."""

    verb: str
    resource: str
    subresource: str = ""
    name: str = ""
    group: str = ""
    namespace: str = ""

    def text(self) -> str:
        """``get nodes/proxy "n1"``: how error messages and the docs name it."""
        res = f"{self.resource}/{self.subresource}" if self.subresource else self.resource
        if self.group:
            res = f"{res}.{self.group}"
        where = f' "{self.name}"' if self.name else ""
        return f"{self.verb} {res}{where}" + (f" in namespace {self.namespace}" if self.namespace else "")


def node_proxy_permission(node: str) -> Permission:
    """What reading an agent's logs requires: ``get`` on the ``nodes/proxy`` subresource of its node,
    the permission that guards the node's kubelet API, as kube-rbac-proxy guards node agents."""
    return Permission(verb="get", resource="nodes", subresource="proxy", name=node)


@dataclass(frozen=True, slots=True)
class AccessVerdict:
    """A SubjectAccessReview's answer: allowed or not, and the authorizer's reason."""

    allowed: bool
    reason: str = ""


class ReviewUnavailable(Exception):
    """A review could not be made (API unreachable, the agent not allowed to create reviews, a bad
    answer): no decision, so the request is refused with 503 and nothing is cached."""


__all__ = ["AccessVerdict", "Identity", "Permission", "ReviewUnavailable", "node_proxy_permission"]
