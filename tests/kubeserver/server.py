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
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit


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
    )
}
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

    def _list(self, plural: str, ns: str | None, limit: int, token: str) -> dict[str, Any] | None:
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
                    if ns is None or k[0] == ns
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


_REVIEWS = {
    "/apis/authentication.k8s.io/v1/tokenreviews": ("TokenReview", "authentication.k8s.io/v1"),
    "/apis/authorization.k8s.io/v1/subjectaccessreviews": ("SubjectAccessReview", "authorization.k8s.io/v1"),
}


def _in(change: _Change, ns: str | None) -> bool:
    return ns is None or change.obj["metadata"].get("namespace") == ns


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

        def do_GET(self) -> None:
            server.requests.append(self.path)
            parts = urlsplit(self.path)
            query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
            status = server._take_failure()
            if status is not None:
                self._send_json(status, _status(status, "InternalError", "injected failure"))
                return
            route = _route(parts.path)
            if route is None:
                self._send_json(404, _status(404, "NotFound", f"no route for {parts.path}"))
                return
            plural, ns = route
            if query.get("watch") in ("true", "1"):
                self._watch(plural, ns, query)
                return
            token = query.get("continue", "")
            if token:
                token = base64.urlsafe_b64decode(token.encode()).decode()
            body = server._list(plural, ns, int(query.get("limit", "0") or 0), token)
            if body is None:
                self._send_json(410, _status(410, "Expired", "the continue token has expired"))
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
                self._send_json(405, _status(405, "MethodNotAllowed", f"POST is not supported on {path}"))
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
            timeout = float(query.get("timeoutSeconds", "0") or 0) or 1800.0
            bookmarks = query.get("allowWatchBookmarks") in ("true", "1")
            deadline = time.monotonic() + timeout
            with server._cond:
                server._watch_socks.add(self.connection)
            try:
                for change in initial:
                    if _in(change, ns):
                        self._send_change(res, change)
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
                        if _in(change, ns):
                            self._send_change(res, change)
                        sent_rv = change.rv
                    now = time.monotonic()
                    if bookmarks and now >= next_bookmark:
                        mark = {
                            "kind": res.kind,
                            "apiVersion": res.api_version,
                            "metadata": {"resourceVersion": str(max(sent_rv, current_rv))},
                        }
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

        def _send_change(self, res: Resource, change: _Change) -> None:
            obj = copy.deepcopy(change.obj)
            obj.setdefault("kind", res.kind)
            obj.setdefault("apiVersion", res.api_version)
            at = time.time_ns()
            self._chunk({"type": change.type, "object": obj})
            server._sent.setdefault((res.plural, change.rv), at)

    return Handler
