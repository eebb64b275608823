"""Workloads, the load Job and its pod's log, the server's version: what ``auditor rollout-test`` asks.

Objects go both ways as plain JSON dicts (``_preload_content=False`` on reads, dict bodies on writes), as
the API serves them, so the static audit and the patch builder read every field whatever the client's
models know, and any client version reads them the same way.

Every failed call raises :class:`KubeCallError`: the :class:`Action` it attempted (verb, resource, API
group, namespace, name), the HTTP status when the server answered, and the server's own Status message.
A 403 therefore says which permission is missing (:meth:`KubeCallError.line`); kube-apiserver's message
already reads ``User "jane" cannot patch resource "deployments" in API group "apps" in the namespace
"web"``, and the Action says the same when a proxy in front of it answered with less.

Patches: the fix is sent as ``application/strategic-merge-patch+json`` (containers merged by name, like
``kubectl patch``); the rollout restart, which only sets the ``kubectl.kubernetes.io/restartedAt``
annotation of the pod template, as ``application/merge-patch+json`` (maps merge the same way in both).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from auditor.kubeapi.proxy import CHUNK, ApiCallError, error_line

T = TypeVar("T")

STRATEGIC_MERGE = "application/strategic-merge-patch+json"
MERGE = "application/merge-patch+json"
FOLLOW_READ_TIMEOUT_S = 86400.0  # a followed log may stay quiet; close() ends it, not a timeout
_SA_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


@dataclass(frozen=True)
class WorkloadKind:
    """One workload type: how the API names it and which client methods serve it."""

    kind: str  # "Deployment"
    plural: str  # "deployments"
    group: str  # "apps"
    api_version: str  # "apps/v1"
    method: str  # suffix of the AppsV1Api methods: read_namespaced_<method>, patch_namespaced_<method>


WORKLOAD_KINDS: dict[str, WorkloadKind] = {
    k.kind.lower(): k
    for k in (
        WorkloadKind("Deployment", "deployments", "apps", "apps/v1", "deployment"),
        WorkloadKind("StatefulSet", "statefulsets", "apps", "apps/v1", "stateful_set"),
        WorkloadKind("DaemonSet", "daemonsets", "apps", "apps/v1", "daemon_set"),
    )
}


@dataclass(frozen=True)
class Action:
    """What a call attempted, in RBAC terms."""

    verb: str
    resource: str  # plural, e.g. "deployments"; "pods/log" style for subresources
    group: str = ""  # "" = the core group
    namespace: str = ""
    name: str = ""

    def describe(self) -> str:
        res = f"{self.resource}.{self.group}" if self.group else self.resource
        what = f"{res} {self.name!r}" if self.name else res
        return f"{self.verb} {what}" + (f" in namespace {self.namespace}" if self.namespace else "")


class KubeCallError(ApiCallError):
    """A failed call: ``action`` what it attempted; ``status`` the HTTP status when the server answered."""

    def __init__(self, action: Action, message: str, status: int | None = None, answered: bool = False) -> None:
        super().__init__(message, status, answered)
        self.action = action

    @property
    def forbidden(self) -> bool:
        return self.status == 403

    @property
    def not_found(self) -> bool:
        return self.status == 404

    def line(self) -> str:
        """One line: the permission that is missing (403), the object that is not there (404), or the
        failure, each with the action."""
        a = self.action
        if self.status == 403:
            return f"permission missing: {a.describe()} (the API server: {self._said()})"
        if self.status == 401:
            return f"not authenticated: {a.describe()} (the API server: {self._said()})"
        if self.status == 404:
            return f"not found: {a.describe()} ({self._said()})"
        if not self.answered:
            return f"cannot reach the API server: {a.describe()}: {self.message}"
        return f"{a.describe()} failed: {self.message}"

    def _said(self) -> str:
        return self.message.removeprefix(f"HTTP {self.status}: ")


@dataclass(frozen=True)
class ServerVersion:
    """``GET /version``: ``git_version`` as the server says it (``v1.31.2-eks-7f9249a``), and the
    major/minor numbers (``"30+"`` on some managed clusters counts as 30); None when unreadable."""

    git_version: str
    major: int | None
    minor: int | None

    @property
    def text(self) -> str:
        return self.git_version or (f"v{self.major}.{self.minor}" if self.major is not None else "unknown")


def _number(text: Any) -> int | None:
    digits = "".join(c for c in str(text or "").split(".")[0] if c.isdigit())
    return int(digits) if digits else None


def parse_version(info: dict[str, Any]) -> ServerVersion:
    """The version document's fields (``gitVersion``, ``major``, ``minor``); major/minor fall back on the
    gitVersion (``v1.29.3+k3s1``) when absent."""
    git = str(info.get("gitVersion") or "")
    major, minor = _number(info.get("major")), _number(info.get("minor"))
    if (major is None or minor is None) and git.startswith("v"):
        parts = git[1:].split(".")
        if len(parts) >= 2:
            major, minor = _number(parts[0]), _number(parts[1])
    return ServerVersion(git, major, minor)


def context_namespace(kubeconfig: str | None = None, context: str | None = None) -> str:
    """The namespace of the kubeconfig's current (or given) context, else the pod's own namespace when
    in-cluster, else ``"default"`` (what kubectl does)."""
    from kubernetes import config
    from kubernetes.config.config_exception import ConfigException

    path = kubeconfig or os.environ.get("KUBECONFIG", "").split(os.pathsep)[0] or None
    if path is None and not os.environ.get("KUBERNETES_SERVICE_HOST"):
        default = Path("~/.kube/config").expanduser()
        path = str(default) if default.is_file() else None
    if path:
        try:
            contexts, current = config.list_kube_config_contexts(config_file=path)
        except (ConfigException, OSError, ValueError, KeyError, TypeError, AttributeError):
            return "default"
        chosen = next((c for c in contexts or [] if c.get("name") == context), None) if context else current
        ns = ((chosen or {}).get("context") or {}).get("namespace")
        return str(ns) if ns else "default"
    with contextlib.suppress(OSError):
        ns_text = _SA_NAMESPACE.read_text(encoding="utf-8").strip()
        if ns_text:
            return ns_text
    return "default"


class WorkloadApi:
    """The calls of ``auditor rollout-test`` on one ``kubernetes.client.ApiClient`` (thread-safe)."""

    def __init__(self, api_client: Any, timeout_s: float = 30.0) -> None:
        self.api_client, self.timeout_s = api_client, timeout_s

    # -- helpers -------------------------------------------------------------------------------------------
    def _call(self, action: Action, fn: Callable[[], T]) -> T:
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        try:
            return fn()
        except ApiException as exc:
            raise KubeCallError(action, error_line(exc), getattr(exc, "status", None), answered=True) from None
        except (HTTPError, OSError) as exc:
            raise KubeCallError(action, error_line(exc)) from None

    def _json(self, action: Action, fn: Callable[[], Any]) -> dict[str, Any]:
        def call() -> dict[str, Any]:
            resp = fn()
            try:
                doc = json.loads(resp.data)
            finally:
                resp.release_conn()
            if not isinstance(doc, dict):
                raise ValueError("not a JSON object")
            return doc

        try:
            return self._call(action, call)
        except ValueError as exc:
            raise KubeCallError(action, f"unreadable answer ({exc})", answered=True) from None

    def _opts(self) -> dict[str, Any]:
        return {"_preload_content": False, "_request_timeout": (self.timeout_s, self.timeout_s)}

    # -- the server ------------------------------------------------------------------------------------------
    def server_version(self) -> ServerVersion:
        """``GET /version`` (any authenticated user may read it)."""
        from kubernetes import client

        api = client.VersionApi(self.api_client)
        doc = self._json(Action("get", "/version"), lambda: api.get_code(**self._opts()))
        return parse_version(doc)

    # -- workloads -------------------------------------------------------------------------------------------
    def read_workload(self, kind: str, namespace: str, name: str) -> dict[str, Any]:
        """The workload object (``kind``: a WORKLOAD_KINDS key) as the API serves it."""
        from kubernetes import client

        k = WORKLOAD_KINDS[kind]
        api = client.AppsV1Api(self.api_client)
        method = getattr(api, f"read_namespaced_{k.method}")
        action = Action("get", k.plural, k.group, namespace, name)
        return self._json(action, lambda: method(name, namespace, **self._opts()))

    def patch_workload(
        self, kind: str, namespace: str, name: str, patch: dict[str, Any], content_type: str = STRATEGIC_MERGE
    ) -> dict[str, Any]:
        """PATCH the workload (strategic merge by default, or ``MERGE``); the object after the patch."""
        from kubernetes import client

        k = WORKLOAD_KINDS[kind]
        api = client.AppsV1Api(self.api_client)
        method = getattr(api, f"patch_namespaced_{k.method}")
        action = Action("patch", k.plural, k.group, namespace, name)
        return self._json(
            action, lambda: method(name, namespace, patch, _content_type=content_type, **self._opts())
        )

    # -- services --------------------------------------------------------------------------------------------
    def list_services(self, namespace: str) -> list[dict[str, Any]]:
        from kubernetes import client

        api = client.CoreV1Api(self.api_client)
        doc = self._json(Action("list", "services", "", namespace),
                         lambda: api.list_namespaced_service(namespace, **self._opts()))  # fmt: skip
        return [i for i in doc.get("items") or [] if isinstance(i, dict)]

    def read_service(self, namespace: str, name: str) -> dict[str, Any]:
        from kubernetes import client

        api = client.CoreV1Api(self.api_client)
        return self._json(Action("get", "services", "", namespace, name),
                          lambda: api.read_namespaced_service(name, namespace, **self._opts()))  # fmt: skip

    # -- the load Job and its pod ----------------------------------------------------------------------------
    def create_job(self, namespace: str, job: dict[str, Any]) -> dict[str, Any]:
        from kubernetes import client

        api = client.BatchV1Api(self.api_client)
        action = Action("create", "jobs", "batch", namespace)
        body: Any = job  # a plain dict: the client serializes it as is
        return self._json(action, lambda: api.create_namespaced_job(namespace, body, **self._opts()))

    def delete_job(self, namespace: str, name: str) -> bool:
        """Delete the Job and (propagation Background: the garbage collector) its pods; False when it was
        already gone."""
        from kubernetes import client

        api = client.BatchV1Api(self.api_client)
        action = Action("delete", "jobs", "batch", namespace, name)
        try:
            self._json(action, lambda: api.delete_namespaced_job(
                name, namespace, propagation_policy="Background", **self._opts()))  # fmt: skip
        except KubeCallError as exc:
            if exc.not_found:
                return False
            raise
        return True

    def read_job(self, namespace: str, name: str) -> dict[str, Any]:
        from kubernetes import client

        api = client.BatchV1Api(self.api_client)
        return self._json(Action("get", "jobs", "batch", namespace, name),
                          lambda: api.read_namespaced_job(name, namespace, **self._opts()))  # fmt: skip

    def list_pods(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        from kubernetes import client

        api = client.CoreV1Api(self.api_client)
        doc = self._json(Action("list", "pods", "", namespace),
                         lambda: api.list_namespaced_pod(namespace, label_selector=selector, **self._opts()))  # fmt: skip
        return [i for i in doc.get("items") or [] if isinstance(i, dict)]

    def pod_log(self, namespace: str, pod: str, container: str | None = None) -> bytes:
        """The whole log of the pod's (only, or named) container so far."""
        from kubernetes import client

        api = client.CoreV1Api(self.api_client)
        kw: dict[str, Any] = {"container": container} if container else {}

        def call() -> bytes:
            resp: Any = api.read_namespaced_pod_log(pod, namespace, **kw, **self._opts())
            try:
                return bytes(resp.data)
            finally:
                resp.release_conn()

        return self._call(Action("get", "pods/log", "", namespace, pod), call)

    def follow_pod_log(self, namespace: str, pod: str, container: str | None = None) -> LogStream:
        """The pod's log from its start, then as it is written (``follow=true``); :meth:`LogStream.close`
        from another thread ends the iteration."""
        from kubernetes import client

        api = client.CoreV1Api(self.api_client)
        kw: dict[str, Any] = {"container": container} if container else {}
        action = Action("get", "pods/log", "", namespace, pod)
        resp = self._call(action, lambda: api.read_namespaced_pod_log(
            pod, namespace, follow=True, _preload_content=False, _request_timeout=(self.timeout_s, FOLLOW_READ_TIMEOUT_S), **kw))  # fmt: skip
        return LogStream(resp, action)


class LogStream:
    """A followed pod log: iterate for chunks; :meth:`close` (any thread) shuts the socket under the reader."""

    def __init__(self, resp: Any, action: Action) -> None:
        self._resp, self.action = resp, action

    def __iter__(self) -> Iterator[bytes]:
        from urllib3.exceptions import HTTPError

        try:
            yield from self._resp.stream(CHUNK, decode_content=False)
        except (HTTPError, OSError, ValueError, AttributeError):
            return  # closed under us, or the connection broke: the caller reads the whole log again
        finally:
            with contextlib.suppress(Exception):
                self._resp.release_conn()

    def close(self) -> None:
        sock = getattr(getattr(self._resp, "connection", None), "sock", None)
        if sock is None:
            sock = getattr(getattr(getattr(self._resp, "_fp", None), "fp", None), "raw", None)
            sock = getattr(sock, "_sock", None)
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(Exception):
            self._resp.close()


__all__ = [
    "MERGE",
    "STRATEGIC_MERGE",
    "WORKLOAD_KINDS",
    "Action",
    "KubeCallError",
    "LogStream",
    "ServerVersion",
    "WorkloadApi",
    "WorkloadKind",
    "context_namespace",
    "parse_version",
]
