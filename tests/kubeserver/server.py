"""A fake kube-apiserver over real HTTP: list/watch of pods, EndpointSlices and Events.

No kube-apiserver can run in CI, so tests and the rollout lab serve the objects they emulate with
the semantics the official client relies on:

* one global, monotonically increasing ``resourceVersion`` shared by all kinds;
* LIST returns ``{"kind": "PodList", "metadata": {"resourceVersion": "N"}, "items": [...]}`` and
  honours ``limit``/``continue`` with a consistent snapshot;
* WATCH (``?watch=true&resourceVersion=N``) streams newline-delimited JSON events with chunked
  transfer encoding, starting after N, from a bounded history window; a version older than the window
  gets ``{"type": "ERROR", "object": {"kind": "Status", "code": 410, ...}}`` and the stream ends;
  ``allowWatchBookmarks`` brings periodic BOOKMARK events; ``timeoutSeconds`` ends the stream cleanly.

Fault injection for the watcher's tests: :meth:`FakeApiServer.drop_watches` (abrupt close),
:meth:`FakeApiServer.expire_history` (next watch from an old version gets 410) and
:meth:`FakeApiServer.fail_next` (the next requests answer an HTTP error).

The two reviews a delegating authenticator/authorizer (kube-rbac-proxy, the agent's ``/logs``) makes,
answered as kube-apiserver answers them (201 with the object and its ``status``):

* ``POST /apis/authentication.k8s.io/v1/tokenreviews``: authenticated when the token was given to
  :meth:`FakeApiServer.add_token` (user, uid, groups), else ``{"user": {}, "error": ...}``;
* ``POST /apis/authorization.k8s.io/v1/subjectaccessreviews``: allowed when a :meth:`FakeApiServer.grant`
  matches the user or one of its groups (verb, group, resource, subresource, and name unless the grant
  has none), else ``{"allowed": false}``.

The caller must itself present a bearer token (``Authorization``), else 401, like the real server;
:attr:`FakeApiServer.reviews` records each review (kind, the spec without the token, the answer).

Workloads and the load of ``auditor rollout-test`` (the controllers are emulated by the tests, e.g.
:class:`tests.kubeserver.workloads.ControllerEmulation`; this server only stores and serves):

* Deployments, StatefulSets, DaemonSets (``apps/v1``), Jobs (``batch/v1``), Services (``v1``) besides
  pods, EndpointSlices and Events: LIST and WATCH as above, GET of one object (404 with kube-apiserver's
  ``deployments.apps "web" not found``), POST of a new object (``generateName`` honoured, 409 when it
  exists), DELETE (the object as it was), PATCH with ``application/strategic-merge-patch+json``
  (:mod:`tests.kubeserver.smp`: containers merged by name, ``null`` deletes) or
  ``application/merge-patch+json``; a PATCH never touches ``status``, and one that changes ``spec``
  increments ``metadata.generation`` (created at 1), as the real server does for these kinds;
* LIST honours an equality ``labelSelector`` (``a=b,c=d``);
* ``GET /api/v1/namespaces/<ns>/pods/<name>/log``: what :meth:`FakeApiServer.set_pod_log` gave (bytes, or
  a callable returning them, called on each read; ``follow`` is answered with the log so far);
* ``GET /version``: :meth:`FakeApiServer.set_version` (default v1.31.0).

What the real ``kubectl`` asks before and while it gets and watches (``kubectl get pods -A --watch
--output-watch-events -o json``, checked with ``-v=8`` against kubectl 1.32):

* discovery: ``/api`` (APIVersions), ``/apis`` (APIGroupList), ``/api/v1`` and ``/apis/<group>/<version>``
  (APIResourceList of the kinds above, namespaced, verbs, short names); asked with the aggregated-discovery
  ``Accept`` (``...;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList``), ``/api`` and ``/apis`` answer
  the aggregated form (``APIGroupDiscoveryList``, that ``Content-Type``) so kubectl needs no further request;
* tables: a LIST or WATCH asked with ``Accept: application/json;as=Table;v=v1;g=meta.k8s.io`` (kubectl's
  human output) gets ``meta.k8s.io/v1`` Tables (a column set per kind, each row with the object's metadata),
  a watch one Table per event;
* ``labelSelector`` applies to WATCH too (not only LIST).

RBAC, off by default: :attr:`FakeApiServer.enforce_rbac` makes every resource request need a bearer token
given to :meth:`FakeApiServer.add_token` (else 401) and a :meth:`FakeApiServer.grant` of its verb (get,
list, watch, create, patch, delete) on the resource (subresource ``log``), else 403 with the message
kube-apiserver writes: ``deployments.apps "web" is forbidden: User "jane" cannot patch resource
"deployments" in API group "apps" in the namespace "default"``.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import json
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from tests.kubeserver.smp import json_merge_patch, strategic_merge


@dataclass(frozen=True)
class Resource:
    """One served resource type."""

    plural: str
    prefix: str  # "/api/v1" or "/apis/<group>/<version>"
    api_version: str
    kind: str


RESOURCES: dict[str, Resource] = {
    r.plural: r
    for r in (
        Resource("pods", "/api/v1", "v1", "Pod"),
        Resource("endpointslices", "/apis/discovery.k8s.io/v1", "discovery.k8s.io/v1", "EndpointSlice"),
        Resource("events", "/api/v1", "v1", "Event"),
        Resource("services", "/api/v1", "v1", "Service"),
        Resource("deployments", "/apis/apps/v1", "apps/v1", "Deployment"),
        Resource("statefulsets", "/apis/apps/v1", "apps/v1", "StatefulSet"),
        Resource("daemonsets", "/apis/apps/v1", "apps/v1", "DaemonSet"),
        Resource("jobs", "/apis/batch/v1", "batch/v1", "Job"),
    )
}
_GENERATED = {"deployments", "statefulsets", "daemonsets", "jobs"}  # kinds whose spec changes bump generation
PodLog = bytes | Callable[[], bytes]
_BY_KIND = {r.kind: r for r in RESOURCES.values()}


@dataclass(frozen=True)
class _Change:
    rv: int
    plural: str
    type: str  # ADDED | MODIFIED | DELETED
    obj: dict[str, Any]


def _status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


def _key(obj: dict[str, Any]) -> tuple[str, str]:
    meta = obj.get("metadata") or {}
    return (meta.get("namespace") or "", meta["name"])


class FakeApiServer:
    """In-memory API server on 127.0.0.1 (random port); use as a context manager."""

    def __init__(
        self,
        *,
        history: int = 1000,
        bookmark_interval: float = 1.0,
        host: str = "127.0.0.1",
    ) -> None:
        self.bookmark_interval = bookmark_interval
        self._cond = threading.Condition()
        self._rv = 1
        self._store: dict[str, dict[tuple[str, str], dict[str, Any]]] = {p: {} for p in RESOURCES}
        self._history: deque[_Change] = deque(maxlen=history)
        self._oldest_rv = 1  # a watch from a version below this gets 410 Gone
        self._snapshots: dict[str, tuple[int, list[dict[str, Any]]]] = {}
        self._watch_socks: set[socket.socket] = set()
        self._failures: list[int] = []
        self._closing = False
        self._outage = 0
        self._drop_generation = 0
        self.requests: deque[str] = deque(maxlen=1000)  # recent request paths, for tests
        self._sent: dict[tuple[str, int], int] = {}  # (plural, resourceVersion) -> first sent to a watch, ns
        self.tokens: dict[str, dict[str, Any]] = {}  # bearer token -> TokenReview user info
        self.grants: set[tuple[str, str, str, str, str, str]] = set()  # (subject, verb, group, resource, sub, name)
        self.reviews: deque[dict[str, Any]] = deque(maxlen=1000)
        self.enforce_rbac = False  # resource requests need a known token and a grant (see grant())
        self.version: dict[str, str] = {}
        self.set_version(1, 31)
        self.pod_logs: dict[tuple[str, str], PodLog] = {}
        self.patches: deque[tuple[str, str, dict[str, Any]]] = deque(maxlen=1000)  # (path, content type, body)
        self._httpd = ThreadingHTTPServer((host, 0), _make_handler(self))
        self._httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> FakeApiServer:
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self.drop_watches()
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> FakeApiServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def write_kubeconfig(self, path: str | Path) -> Path:
        """Write a kubeconfig (JSON is YAML) whose current context points at this server."""
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
            "users": [{"name": "fake", "user": {"token": "fake-token"}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake"}}],
            "current-context": "fake",
        }
        out = Path(path)
        out.write_text(json.dumps(config, indent=2))
        return out

    # -- mutations (test / lab driver side) --------------------------------------------------------
    @property
    def resource_version(self) -> int:
        with self._cond:
            return self._rv

    @property
    def open_watches(self) -> int:
        """How many watch streams are being served right now."""
        with self._cond:
            return len(self._watch_socks)

    def create(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Add an object (``kind`` picks the resource); returns the stored copy."""
        res = _BY_KIND[obj["kind"]]
        with self._cond:
            key = _key(obj)
            if key in self._store[res.plural]:
                raise KeyError(f"{res.kind} {key} already exists")
            stored = copy.deepcopy(obj)
            stored.setdefault("apiVersion", res.api_version)
            meta = stored.setdefault("metadata", {})
            meta.setdefault("uid", str(uuid.uuid4()))
            meta.setdefault("creationTimestamp", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
            if res.plural in _GENERATED:
                meta.setdefault("generation", 1)
            return self._commit(res.plural, "ADDED", stored)

    def update(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Replace an existing object (same namespace/name); returns the stored copy."""
        res = _BY_KIND[obj["kind"]]
        with self._cond:
            old = self._store[res.plural][_key(obj)]
            stored = copy.deepcopy(obj)
            stored.setdefault("apiVersion", res.api_version)
            meta = stored.setdefault("metadata", {})
            for field in ("uid", "creationTimestamp"):
                meta.setdefault(field, old["metadata"].get(field))
            return self._commit(res.plural, "MODIFIED", stored)

    def apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Create or update."""
        res = _BY_KIND[obj["kind"]]
        with self._cond:
            if _key(obj) in self._store[res.plural]:
                return self.update(obj)
            return self.create(obj)

    def delete(self, kind: str, namespace: str, name: str) -> dict[str, Any]:
        """Remove an object; watchers get DELETED with the final state at a new version."""
        res = _BY_KIND[kind]
        with self._cond:
            stored = copy.deepcopy(self._store[res.plural][(namespace, name)])
            return self._commit(res.plural, "DELETED", stored)

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        with self._cond:
            obj = self._store[_BY_KIND[kind].plural].get((namespace, name))
            return copy.deepcopy(obj) if obj is not None else None

    def objects(self, kind: str, namespace: str | None = None) -> list[dict[str, Any]]:
        """Every stored object of ``kind`` (of ``namespace`` when given), sorted by namespace and name."""
        with self._cond:
            return [copy.deepcopy(o) for k, o in sorted(self._store[_BY_KIND[kind].plural].items())
                    if namespace is None or k[0] == namespace]  # fmt: skip

    def set_status(self, kind: str, namespace: str, name: str, status: dict[str, Any]) -> dict[str, Any]:
        """Merge ``status`` into the object's status (what a controller writes); a new resourceVersion."""
        with self._cond:
            obj = copy.deepcopy(self._store[_BY_KIND[kind].plural][(namespace, name)])
            obj["status"] = {**(obj.get("status") or {}), **copy.deepcopy(status)}
            return self._commit(_BY_KIND[kind].plural, "MODIFIED", obj)

    def set_version(self, major: int, minor: int, git_version: str = "") -> None:
        """What ``GET /version`` answers."""
        git = git_version or f"v{major}.{minor}.0"
        self.version = {"major": str(major), "minor": str(minor), "gitVersion": git, "gitCommit": "fake",
                        "gitTreeState": "clean", "buildDate": "2025-01-01T00:00:00Z", "goVersion": "go1.24",
                        "compiler": "gc", "platform": "linux/amd64"}  # fmt: skip

    def set_pod_log(self, namespace: str, name: str, log: PodLog) -> None:
        """The pod's log: bytes, or a callable returning them (called on every read)."""
        with self._cond:
            self.pod_logs[(namespace, name)] = log

    def pod_log(self, namespace: str, name: str) -> bytes | None:
        with self._cond:
            log = self.pod_logs.get((namespace, name))
        return log() if callable(log) else log

    def patch(self, plural: str, namespace: str, name: str, body: Any, content_type: str) -> dict[str, Any]:
        """Apply a strategic-merge or JSON merge patch; ``metadata.generation`` + 1 when ``spec`` changed.
        KeyError: no such object; ValueError: a patch this server does not take."""
        with self._cond:
            old = self._store[plural][(namespace, name)]
            if not isinstance(body, dict):
                raise ValueError("the patch is not a JSON object")
            body = {k: v for k, v in body.items() if k != "status"}  # status is the status subresource's
            if "strategic-merge-patch" in content_type:
                new = strategic_merge(old, body)
            elif "merge-patch" in content_type:
                new = json_merge_patch(old, body)
            else:
                raise ValueError(f"unsupported patch type {content_type!r}")
            meta = new.setdefault("metadata", {})
            for field in ("name", "namespace", "uid", "creationTimestamp"):
                meta[field] = old["metadata"].get(field)
            if plural in _GENERATED and new.get("spec") != old.get("spec"):
                meta["generation"] = int(old["metadata"].get("generation") or 1) + 1
            if new == old:
                return copy.deepcopy(old)
            return self._commit(plural, "MODIFIED", new)

    def _commit(self, plural: str, event_type: str, stored: dict[str, Any]) -> dict[str, Any]:
        # caller holds self._cond
        self._rv += 1
        stored["metadata"]["resourceVersion"] = str(self._rv)
        if event_type == "DELETED":
            self._store[plural].pop(_key(stored))
        else:
            self._store[plural][_key(stored)] = stored
        if len(self._history) == self._history.maxlen:
            self._oldest_rv = self._history[0].rv
        self._history.append(_Change(self._rv, plural, event_type, stored))
        self._cond.notify_all()
        return copy.deepcopy(stored)

    # -- reviews (TokenReview, SubjectAccessReview) ------------------------------------------------
    def add_token(self, token: str, user: str, groups: tuple[str, ...] = (), uid: str = "") -> None:
        """A bearer token the TokenReview authenticates as ``user``."""
        with self._cond:
            self.tokens[token] = {"username": user, "uid": uid or f"uid-{user}",
                                  "groups": [*groups, "system:authenticated"]}  # fmt: skip

    def grant(self, subject: str, verb: str, resource: str, subresource: str = "", name: str = "",
              group: str = "") -> None:  # fmt: skip
        """Let ``subject`` (a user name, or ``group:<name>``) do ``verb`` on ``resource[/subresource]``
        (any name when ``name`` is empty); what the SubjectAccessReview answers."""
        with self._cond:
            self.grants.add((subject, verb, group, resource, subresource, name))

    def _token_review(self, spec: dict[str, Any]) -> dict[str, Any]:
        with self._cond:
            user = self.tokens.get(str(spec.get("token") or ""))
        if user is None:
            return {"user": {}, "error": "[invalid bearer token, token lookup failed]"}
        return {"authenticated": True, "user": copy.deepcopy(user), "audiences": ["https://kubernetes.default.svc"]}

    def _access_review(self, spec: dict[str, Any]) -> dict[str, Any]:
        attrs = spec.get("resourceAttributes") or {}
        want = (str(attrs.get("verb") or ""), str(attrs.get("group") or ""), str(attrs.get("resource") or ""),
                str(attrs.get("subresource") or ""))  # fmt: skip
        subjects = {str(spec.get("user") or "")} | {f"group:{g}" for g in spec.get("groups") or []}
        with self._cond:
            allowed = any(
                g[0] in subjects and g[1:5] == want and (not g[5] or g[5] == attrs.get("name"))
                for g in self.grants
            )
        if allowed:
            return {"allowed": True, "reason": "allowed by the fake API server's grants"}
        return {"allowed": False}

    def user_of(self, authorization: str) -> dict[str, Any] | None:
        """The TokenReview user of an ``Authorization: Bearer <token>`` header, else None."""
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer":
            return None
        with self._cond:
            user = self.tokens.get(token.strip())
            return copy.deepcopy(user) if user is not None else None

    def allowed(self, user: dict[str, Any], verb: str, group: str, resource: str, sub: str = "", name: str = "") -> bool:
        """What the SubjectAccessReview would answer for this user (its name or one of its groups)."""
        subjects = {str(user.get("username") or "")} | {f"group:{g}" for g in user.get("groups") or []}
        with self._cond:
            return any(
                g[0] in subjects and g[1:5] == (verb, group, resource, sub) and (not g[5] or g[5] == name)
                for g in self.grants
            )

    def sent_ns(self, plural: str, resource_version: int) -> int | None:
        """When a watch first started writing this change to its client (ns), if one did: the earliest a
        watcher can have received it (this server's own delivery delay, after the change, included)."""
        return self._sent.get((plural, resource_version))

    # -- fault injection ---------------------------------------------------------------------------
    def drop_watches(self) -> int:
        """Abruptly close every open watch connection (no terminating chunk); returns how many."""
        with self._cond:
            self._drop_generation += 1
            socks = list(self._watch_socks)
            self._watch_socks.clear()
            self._cond.notify_all()
        for sock in socks:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        return len(socks)

    def expire_history(self) -> None:
        """Forget all history: a watch from any version below the current one gets 410 Gone."""
        with self._cond:
            self._history.clear()
            self._oldest_rv = self._rv
            self._snapshots.clear()

    @contextlib.contextmanager
    def outage(self, status: int = 503) -> Iterator[None]:
        """While inside: watches are dropped and every request answers ``status``."""
        with self._cond:
            self._outage = status
        self.drop_watches()
        try:
            yield
        finally:
            with self._cond:
                self._outage = 0

    def fail_next(self, n: int, status: int = 500) -> None:
        """Answer the next ``n`` requests with ``status`` and a Status body."""
        with self._cond:
            self._failures.extend([status] * n)

    # -- request side ------------------------------------------------------------------------------
    def _take_failure(self) -> int | None:
        with self._cond:
            if self._outage:
                return self._outage
            return self._failures.pop(0) if self._failures else None

    def _list(
        self, plural: str, ns: str | None, limit: int, token: str, selector: str = ""
    ) -> dict[str, Any] | None:
        res = RESOURCES[plural]
        with self._cond:
            if token:
                snap = self._snapshots.get(token.split(":")[0])
                if snap is None:
                    return None
                rv, items = snap
                offset = int(token.split(":")[1])
            else:
                rv = self._rv
                items = [
                    copy.deepcopy(o)
                    for k, o in sorted(self._store[plural].items())
                    if (ns is None or k[0] == ns) and _selected(o, selector)
                ]
                offset = 0
            page = items[offset : offset + limit] if limit > 0 else items[offset:]
            meta: dict[str, Any] = {"resourceVersion": str(rv)}
            end = offset + len(page)
            if limit > 0 and end < len(items):
                snap_id = token.split(":")[0] if token else uuid.uuid4().hex
                self._snapshots[snap_id] = (rv, items)
                while len(self._snapshots) > 32:
                    self._snapshots.pop(next(iter(self._snapshots)))
                meta["continue"] = base64.urlsafe_b64encode(f"{snap_id}:{end}".encode()).decode()
            for item in page:  # items of a real list carry no kind/apiVersion
                item.pop("kind", None)
                item.pop("apiVersion", None)
        return {"kind": f"{res.kind}List", "apiVersion": res.api_version, "metadata": meta, "items": page}

    def _watch_start(self, plural: str, ns: str | None, rv_text: str) -> tuple[list[_Change], int, int] | int:
        """Initial events of a watch from ``rv_text``, the version they reach and the drop generation
        (else an HTTP status)."""
        with self._cond:
            if self._closing or self._outage:
                return 503
            if rv_text in ("", "0"):  # "any": synthetic ADDED for the current state
                initial = [
                    _Change(self._rv, plural, "ADDED", copy.deepcopy(o))
                    for k, o in sorted(self._store[plural].items())
                    if ns is None or k[0] == ns
                ]
                return initial, self._rv, self._drop_generation
            if not rv_text.isdigit():
                return 400
            rv = int(rv_text)
            if rv < self._oldest_rv:
                return 410
            changes = [c for c in self._history if c.rv > rv and c.plural == plural]
            return changes, max([rv, *(c.rv for c in changes)]), self._drop_generation


_SHORT = {"pods": ["po"], "services": ["svc"], "deployments": ["deploy"], "statefulsets": ["sts"],
          "daemonsets": ["ds"], "events": ["ev"]}  # fmt: skip
_VERBS = ["create", "delete", "get", "list", "patch", "watch"]
_DISCOVERY_V2 = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"


def _group_versions() -> dict[str, list[Resource]]:
    """``"v1"`` / ``"apps/v1"`` -> the resources served there, in RESOURCES order."""
    out: dict[str, list[Resource]] = {}
    for res in RESOURCES.values():
        out.setdefault(res.api_version, []).append(res)
    return out


def _resource_entry(res: Resource) -> dict[str, Any]:
    return {"name": res.plural, "singularName": res.kind.lower(), "namespaced": True, "kind": res.kind,
            "verbs": _VERBS, "shortNames": _SHORT.get(res.plural, [])}  # fmt: skip


def discovery_document(path: str, accept: str) -> tuple[dict[str, Any], str] | None:
    """The discovery answer for ``path`` (``/api``, ``/apis``, ``/api/v1``, ``/apis/<g>/<v>``) and its
    content type, or None when the path is not a discovery path."""
    path = path.rstrip("/")
    groups = _group_versions()
    aggregated = "g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList" in accept.replace(" ", "")
    if path in ("/api", "/apis"):
        legacy = path == "/api"
        wanted = {gv: r for gv, r in groups.items() if ("/" not in gv) == legacy}
        if aggregated:
            items = []
            for gv, resources in wanted.items():
                group, _, version = gv.rpartition("/")
                items.append({"metadata": {"name": group, "creationTimestamp": None}, "versions": [{
                    "version": version, "freshness": "Current", "resources": [{
                        "resource": r.plural, "singularResource": r.kind.lower(), "scope": "Namespaced",
                        "verbs": _VERBS, "shortNames": _SHORT.get(r.plural, []),
                        "responseKind": {"group": group, "version": version, "kind": r.kind}}
                        for r in resources]}]})  # fmt: skip
            return {"kind": "APIGroupDiscoveryList", "apiVersion": "apidiscovery.k8s.io/v2",
                    "metadata": {}, "items": items}, _DISCOVERY_V2  # fmt: skip
        if legacy:
            return {"kind": "APIVersions", "versions": ["v1"],
                    "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}]}, (
                "application/json")  # fmt: skip
        group_list = []
        for gv in wanted:
            group, _, version = gv.rpartition("/")
            entry = {"groupVersion": gv, "version": version}
            group_list.append({"name": group, "versions": [entry], "preferredVersion": entry})
        return {"kind": "APIGroupList", "apiVersion": "v1", "groups": group_list}, "application/json"
    for gv, resources in groups.items():
        if path == ("/api/" if "/" not in gv else "/apis/") + gv:
            return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv,
                    "resources": [_resource_entry(r) for r in resources]}, "application/json"  # fmt: skip
    return None


def wants_table(accept: str) -> bool:
    """kubectl's human output asks ``application/json;as=Table;v=v1;g=meta.k8s.io`` first."""
    first = accept.split(",")[0].replace(" ", "")
    return "as=Table" in first and "g=meta.k8s.io" in first


def _age(created: str) -> str:
    try:
        t = time.mktime(time.strptime(created, "%Y-%m-%dT%H:%M:%SZ")) - time.timezone
    except (TypeError, ValueError):
        return "<unknown>"
    secs = max(0, int(time.time() - t))
    return f"{secs}s" if secs < 120 else f"{secs // 60}m" if secs < 7200 else f"{secs // 3600}h"


_COLUMNS: dict[str, list[str]] = {
    "pods": ["Name", "Ready", "Status", "Restarts", "Age", "IP", "Node"],
    "endpointslices": ["Name", "AddressType", "Ports", "Endpoints", "Age"],
}


def _cells(plural: str, obj: dict[str, Any]) -> list[Any]:
    meta = obj.get("metadata") or {}
    age = _age(str(meta.get("creationTimestamp") or ""))
    if plural == "pods":
        st = obj.get("status") or {}
        cs = st.get("containerStatuses") or []
        ready = f"{sum(1 for c in cs if c.get('ready'))}/{len((obj.get('spec') or {}).get('containers') or cs)}"
        phase = "Terminating" if meta.get("deletionTimestamp") else st.get("phase") or "Unknown"
        restarts = sum(int(c.get("restartCount") or 0) for c in cs)
        return [meta.get("name"), ready, phase, restarts, age, st.get("podIP") or "<none>",
                (obj.get("spec") or {}).get("nodeName") or "<none>"]  # fmt: skip
    if plural == "endpointslices":
        ports = ",".join(str(p.get("port")) for p in obj.get("ports") or []) or "<unset>"
        addrs = ",".join(a for e in obj.get("endpoints") or [] for a in e.get("addresses") or []) or "<unset>"
        return [meta.get("name"), obj.get("addressType") or "", ports, addrs, age]
    return [meta.get("name"), age]


def table_of(res: Resource, objects: list[dict[str, Any]], resource_version: str = "") -> dict[str, Any]:
    """A ``meta.k8s.io/v1`` Table of ``objects`` (each row carries the object's metadata, as
    ``includeObject=Metadata`` does), the form kubectl prints without ``-o``."""
    names = _COLUMNS.get(res.plural, ["Name", "Age"])
    columns = [{"name": n, "type": "integer" if n == "Restarts" else "string", "format": "name" if n == "Name" else "",
                "description": n, "priority": 1 if n in ("IP", "Node") else 0} for n in names]  # fmt: skip
    rows = []
    for obj in objects:
        meta = copy.deepcopy(obj.get("metadata") or {})
        rows.append({"cells": _cells(res.plural, obj), "object": {
            "kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": meta}})  # fmt: skip
    return {"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": {"resourceVersion": resource_version},
            "columnDefinitions": columns, "rows": rows}  # fmt: skip


_REVIEWS = {
    "/apis/authentication.k8s.io/v1/tokenreviews": ("TokenReview", "authentication.k8s.io/v1"),
    "/apis/authorization.k8s.io/v1/subjectaccessreviews": ("SubjectAccessReview", "authorization.k8s.io/v1"),
}


def _selected(obj: dict[str, Any], selector: str) -> bool:
    """An equality label selector (``a=b,c=d``; ``==`` too); an empty one selects everything."""
    labels = (obj.get("metadata") or {}).get("labels") or {}
    for term in filter(None, (t.strip() for t in selector.split(","))):
        key, sep, value = term.replace("==", "=").partition("=")
        if not sep or labels.get(key.strip()) != value.strip():
            return False
    return True


def _object_route(path: str) -> tuple[Resource, str, str, str] | None:
    """``/apis/apps/v1/namespaces/x/deployments/web`` -> (deployments, "x", "web", ""); a subresource
    (``/pods/p/log``) comes last."""
    for res in RESOURCES.values():
        head = f"{res.prefix}/namespaces/"
        if not path.startswith(head):
            continue
        parts = path[len(head) :].split("/")
        if len(parts) in (3, 4) and parts[1] == res.plural and parts[0] and parts[2]:
            return res, parts[0], parts[2], parts[3] if len(parts) == 4 else ""
    return None


def _group(res: Resource) -> str:
    return res.api_version.rpartition("/")[0]


def _qualified(res: Resource) -> str:
    """``deployments.apps``, ``pods``: how kube-apiserver names a resource in its messages."""
    return f"{res.plural}.{_group(res)}" if _group(res) else res.plural


def forbidden_status(user: str, verb: str, res: Resource, ns: str | None, name: str = "", sub: str = "") -> dict[str, Any]:
    """kube-apiserver's 403 body for a request RBAC denies."""
    what = f'{_qualified(res)} "{name}"' if name else _qualified(res)
    resource = f"{res.plural}/{sub}" if sub else res.plural
    scope = f' in the namespace "{ns}"' if ns else " at the cluster scope"
    message = (f'{what} is forbidden: User "{user}" cannot {verb} resource "{resource}" in API group '
               f'"{_group(res)}"{scope}')  # fmt: skip
    body = _status(403, "Forbidden", message)
    body["details"] = {"name": name, "group": _group(res), "kind": res.plural} if name else {"group": _group(res), "kind": res.plural}
    return body


def _in(change: _Change, ns: str | None, selector: str = "") -> bool:
    return (ns is None or change.obj["metadata"].get("namespace") == ns) and _selected(change.obj, selector)


def _route(path: str) -> tuple[str, str | None] | None:
    """``/api/v1/namespaces/x/pods`` -> ("pods", "x"); ``/api/v1/pods`` -> ("pods", None)."""
    for res in RESOURCES.values():
        if path == f"{res.prefix}/{res.plural}":
            return res.plural, None
        head = f"{res.prefix}/namespaces/"
        if path.startswith(head) and path.endswith(f"/{res.plural}"):
            ns = path[len(head) : -len(res.plural) - 1]
            if ns and "/" not in ns:
                return res.plural, ns
    return None


def _make_handler(server: FakeApiServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # quiet
            pass

        def _send_json(self, code: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _authorized(self, verb: str, res: Resource, ns: str | None, name: str = "", sub: str = "") -> bool:
            """With ``enforce_rbac``: 401 without a known token, 403 without a grant (answered here)."""
            if not server.enforce_rbac:
                return True
            user = server.user_of(self.headers.get("Authorization", ""))
            if user is None:
                self._send_json(401, _status(401, "Unauthorized", "Unauthorized"))
                return False
            if server.allowed(user, verb, _group(res), res.plural, sub, name):
                return True
            self._send_json(403, forbidden_status(str(user["username"]), verb, res, ns, name, sub))
            return False

        def _body(self) -> Any:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length > 0 else b""
            return json.loads(raw) if raw.strip() else None

        def _send_bytes(self, code: int, data: bytes, content_type: str) -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _not_found(self, res: Resource, name: str) -> None:
            self._send_json(404, _status(404, "NotFound", f'{_qualified(res)} "{name}" not found'))

        def _get_object(self, res: Resource, ns: str, name: str, sub: str) -> None:
            if not self._authorized("get", res, ns, name, sub):
                return
            obj = server.get(res.kind, ns, name)
            if obj is None:
                self._not_found(res, name)
                return
            if sub == "log" and res.plural == "pods":
                self._send_bytes(200, server.pod_log(ns, name) or b"", "text/plain")
                return
            if sub:
                self._send_json(404, _status(404, "NotFound", f"no subresource {sub} here"))
                return
            obj.setdefault("kind", res.kind)
            self._send_json(200, obj)

        def do_GET(self) -> None:
            server.requests.append(self.path)
            parts = urlsplit(self.path)
            query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
            status = server._take_failure()
            if status is not None:
                self._send_json(status, _status(status, "InternalError", "injected failure"))
                return
            if parts.path in ("/version", "/version/"):
                self._send_json(200, dict(server.version))
                return
            discovery = discovery_document(parts.path, self.headers.get("Accept", ""))
            if discovery is not None:
                self._send_bytes(200, json.dumps(discovery[0]).encode(), discovery[1])
                return
            found = _object_route(unquote(parts.path))
            if found is not None:
                self._get_object(*found)
                return
            route = _route(parts.path)
            if route is None:
                self._send_json(404, _status(404, "NotFound", f"no route for {parts.path}"))
                return
            plural, ns = route
            watching = query.get("watch") in ("true", "1")
            if not self._authorized("watch" if watching else "list", RESOURCES[plural], ns):
                return
            if watching:
                self._watch(plural, ns, query)
                return
            token = query.get("continue", "")
            if token:
                token = base64.urlsafe_b64decode(token.encode()).decode()
            body = server._list(plural, ns, int(query.get("limit", "0") or 0), token, query.get("labelSelector", ""))
            if body is None:
                self._send_json(410, _status(410, "Expired", "the continue token has expired"))
                return
            if wants_table(self.headers.get("Accept", "")):
                table = table_of(RESOURCES[plural], body["items"], body["metadata"]["resourceVersion"])
                table["metadata"].update({k: v for k, v in body["metadata"].items() if k == "continue"})
                self._send_json(200, table)
                return
            self._send_json(200, body)

        def do_POST(self) -> None:
            server.requests.append(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length > 0 else b""
            status = server._take_failure()
            if status is not None:
                self._send_json(status, _status(status, "InternalError", "injected failure"))
                return
            path = urlsplit(self.path).path
            review = _REVIEWS.get(path)
            if review is None:
                self._create(path, raw)
                return
            caller = self.headers.get("Authorization", "")
            if not caller.lower().startswith("bearer ") or not caller[7:].strip():
                self._send_json(401, _status(401, "Unauthorized", "Unauthorized"))
                return
            try:
                body = json.loads(raw)
                spec = body["spec"]
                assert isinstance(spec, dict)
            except (ValueError, KeyError, TypeError, AssertionError):
                self._send_json(400, _status(400, "BadRequest", "not a review object"))
                return
            kind, api_version = review
            answer = server._token_review(spec) if kind == "TokenReview" else server._access_review(spec)
            server.reviews.append({"kind": kind, "spec": {k: v for k, v in spec.items() if k != "token"},
                                   "status": answer})  # fmt: skip
            self._send_json(201, {"kind": kind, "apiVersion": api_version, "metadata": {"creationTimestamp": None},
                                  "spec": spec, "status": answer})  # fmt: skip

        def _create(self, path: str, raw: bytes) -> None:
            route = _route(path)
            if route is None or route[1] is None:
                self._send_json(405, _status(405, "MethodNotAllowed", f"POST is not supported on {path}"))
                return
            plural, ns = route
            res = RESOURCES[plural]
            if not self._authorized("create", res, ns):
                return
            try:
                obj = json.loads(raw)
                assert isinstance(obj, dict)
            except (ValueError, AssertionError):
                self._send_json(400, _status(400, "BadRequest", "the body is not a JSON object"))
                return
            meta = obj.setdefault("metadata", {})
            meta["namespace"] = ns
            if not meta.get("name") and meta.get("generateName"):
                meta["name"] = f"{meta['generateName']}{uuid.uuid4().hex[:5]}"
            if not meta.get("name"):
                self._send_json(422, _status(422, "Invalid", "metadata.name: Required value"))
                return
            obj["kind"] = res.kind
            try:
                stored = server.create(obj)
            except KeyError:
                self._send_json(409, _status(409, "AlreadyExists", f'{_qualified(res)} "{meta["name"]}" already exists'))
                return
            self._send_json(201, stored)

        def _object_request(self, verb: str) -> tuple[Any, str, str, Any] | None:
            """An object's PATCH or DELETE: recorded, an injected failure answered, the route and the
            caller's right checked; (resource, namespace, name, body), or None when already answered."""
            server.requests.append(self.path)
            status = server._take_failure()
            body = self._body()
            if status is not None:
                self._send_json(status, _status(status, "InternalError", "injected failure"))
                return None
            found = _object_route(unquote(urlsplit(self.path).path))
            if found is None or found[3]:
                self._send_json(405, _status(405, "MethodNotAllowed", f"{verb.upper()} is not supported on {self.path}"))
                return None
            res, ns, name, _ = found
            if not self._authorized(verb, res, ns, name):
                return None
            return res, ns, name, body

        def do_PATCH(self) -> None:
            request = self._object_request("patch")
            if request is None:
                return
            res, ns, name, body = request
            content_type = self.headers.get("Content-Type", "")
            server.patches.append((urlsplit(self.path).path, content_type, copy.deepcopy(body)))
            try:
                obj = server.patch(res.plural, ns, name, body, content_type)
            except KeyError:
                self._not_found(res, name)
                return
            except ValueError as exc:
                code = 415 if "unsupported" in str(exc) else 400
                self._send_json(code, _status(code, "UnsupportedMediaType" if code == 415 else "BadRequest", str(exc)))
                return
            obj.setdefault("kind", res.kind)
            self._send_json(200, obj)

        def do_DELETE(self) -> None:
            request = self._object_request("delete")
            if request is None:
                return
            res, ns, name, _ = request
            try:
                gone = server.delete(res.kind, ns, name)
            except KeyError:
                self._not_found(res, name)
                return
            self._send_json(200, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                                  "details": {"name": name, "group": _group(res), "kind": res.plural,
                                              "uid": gone["metadata"].get("uid")}})  # fmt: skip

        def _chunk(self, event: dict[str, Any]) -> None:
            data = json.dumps(event).encode() + b"\n"
            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            self.wfile.flush()

        def _watch(self, plural: str, ns: str | None, query: dict[str, str]) -> None:
            res = RESOURCES[plural]
            start = server._watch_start(plural, ns, query.get("resourceVersion", ""))
            if start == 503:
                self._send_json(503, _status(503, "ServiceUnavailable", "server shutting down"))
                return
            if start == 400:
                self._send_json(400, _status(400, "BadRequest", "invalid resourceVersion"))
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self.close_connection = True
            if start == 410:
                msg = f"too old resource version: {query.get('resourceVersion')}"
                self._chunk({"type": "ERROR", "object": _status(410, "Expired", msg)})
                self.wfile.write(b"0\r\n\r\n")
                return
            assert isinstance(start, tuple)
            initial, sent_rv, generation = start
            selector = query.get("labelSelector", "")
            table = wants_table(self.headers.get("Accept", ""))
            timeout = float(query.get("timeoutSeconds", "0") or 0) or 1800.0
            bookmarks = query.get("allowWatchBookmarks") in ("true", "1")
            deadline = time.monotonic() + timeout
            with server._cond:
                server._watch_socks.add(self.connection)
            try:
                for change in initial:
                    if _in(change, ns, selector):
                        self._send_change(res, change, table)
                next_bookmark = time.monotonic() + server.bookmark_interval
                while True:
                    with server._cond:
                        if server._closing or generation != server._drop_generation:
                            return  # dropped: no terminating chunk, like a broken connection
                        pending = [c for c in server._history if c.rv > sent_rv and c.plural == plural]
                        now = time.monotonic()
                        if not pending and now < min(deadline, next_bookmark):
                            server._cond.wait(timeout=min(deadline, next_bookmark) - now)
                            continue
                        current_rv = server._rv
                    for change in pending:
                        if _in(change, ns, selector):
                            self._send_change(res, change, table)
                        sent_rv = change.rv
                    now = time.monotonic()
                    if bookmarks and now >= next_bookmark:
                        mark_rv = str(max(sent_rv, current_rv))
                        mark: dict[str, Any] = {
                            "kind": res.kind,
                            "apiVersion": res.api_version,
                            "metadata": {"resourceVersion": mark_rv},
                        }
                        if table:  # a watch of Tables bookmarks with a Table, as kube-apiserver does
                            mark = table_of(res, [], mark_rv)
                        self._chunk({"type": "BOOKMARK", "object": mark})
                        sent_rv = max(sent_rv, current_rv)
                        next_bookmark = now + server.bookmark_interval
                    elif now >= next_bookmark:
                        next_bookmark = now + server.bookmark_interval
                    if now >= deadline:
                        self.wfile.write(b"0\r\n\r\n")
                        return
            except OSError:
                return
            finally:
                with server._cond:
                    server._watch_socks.discard(self.connection)

        def _send_change(self, res: Resource, change: _Change, table: bool = False) -> None:
            obj = copy.deepcopy(change.obj)
            obj.setdefault("kind", res.kind)
            obj.setdefault("apiVersion", res.api_version)
            if table:
                rv = str((obj.get("metadata") or {}).get("resourceVersion") or "")
                obj = table_of(res, [obj], rv)
            at = time.time_ns()
            self._chunk({"type": change.type, "object": obj})
            server._sent.setdefault((res.plural, change.rv), at)

    return Handler
