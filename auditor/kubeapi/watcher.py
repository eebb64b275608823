"""List-then-watch of pods, EndpointSlices and Events, cluster-wide (or in one namespace, pods optionally
by a label selector), that never misses a change.

One thread per kind runs: LIST (paginated) -> emit the difference with what it knew before -> WATCH
from the list's resourceVersion (with bookmarks) -> on a clean end, watch again from the last version
seen; on a dropped connection or an HTTP error, the same after a capped, jittered exponential backoff;
on 410 Gone (too old a version), LIST again and emit what changed meanwhile as ADDED/MODIFIED/DELETED.

Events reach ``on_event`` as :class:`WatchEvent` with the object as the API sent it (camelCase JSON, via
``_preload_content=False``) reduced to what the audit reads (:mod:`auditor.model.reduce`: no env,
args, commands or annotations outside a short allow-list; the relist cache keeps only that form too),
stamped with ``clock()`` when its line arrived. The initial list
is emitted as ADDED events, like ``kubectl get --watch --output-watch-events`` does; objects that come
from a (re)list rather than the stream have ``relisted=True``. BOOKMARKs only advance the version.
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from auditor.model.reduce import reduce_object

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class KindSpec:
    """How to list one resource type with the official client."""

    api: str  # class name in kubernetes.client
    method: str  # cluster-wide list method
    kind: str
    api_version: str
    namespaced: str = ""  # list method of one namespace (its first argument: the namespace)


KINDS: dict[str, KindSpec] = {
    "pods": KindSpec("CoreV1Api", "list_pod_for_all_namespaces", "Pod", "v1", "list_namespaced_pod"),
    "endpointslices": KindSpec(
        "DiscoveryV1Api", "list_endpoint_slice_for_all_namespaces", "EndpointSlice", "discovery.k8s.io/v1",
        "list_namespaced_endpoint_slice",
    ),
    "events": KindSpec("CoreV1Api", "list_event_for_all_namespaces", "Event", "v1", "list_namespaced_event"),
}
SELECTED_KINDS = ("pods",)  # the kinds a label selector applies to (slices and Events carry other labels)


@dataclass(frozen=True, slots=True)
class WatchEvent:
    """One change of one object, as received."""

    kind: str  # a KINDS key: "pods" | "endpointslices" | "events"
    type: str  # ADDED | MODIFIED | DELETED
    object: dict[str, Any]
    observed_ns: int  # clock() when it arrived (UTC ns)
    relisted: bool = False  # from a (re)list diff, not from the watch stream


@dataclass
class WatchStats:
    """Counters per kind, for metrics: how complete and how healthy the watch is."""

    events: Counter[tuple[str, str]] = field(default_factory=Counter)  # (kind, type)
    bookmarks: Counter[str] = field(default_factory=Counter)
    lists: Counter[str] = field(default_factory=Counter)  # every LIST, the first included
    relists: Counter[str] = field(default_factory=Counter)  # LISTs forced by 410 Gone
    watches: Counter[str] = field(default_factory=Counter)  # WATCH requests started
    reconnects: Counter[str] = field(default_factory=Counter)  # re-watches after a failure
    errors: Counter[str] = field(default_factory=Counter)  # HTTP errors, dropped or broken connections
    bad_lines: Counter[str] = field(default_factory=Counter)  # unparsable stream lines (skipped)
    callback_errors: Counter[str] = field(default_factory=Counter)
    resource_version: dict[str, str] = field(default_factory=dict)


class _Gone(Exception):
    """The version we watch from is too old: relist."""


class _StreamError(Exception):
    """An ERROR event other than 410 in the watch stream."""


class Backoff:
    """Capped exponential backoff with equal jitter; ``reset()`` after a success."""

    def __init__(self, base: float = 0.5, cap: float = 30.0, rng: random.Random | None = None) -> None:
        self.base, self.cap, self.attempt = base, cap, 0
        self._rng = rng or random.Random()

    def next_delay(self) -> float:
        delay = min(self.cap, self.base * (1 << self.attempt))
        self.attempt = min(self.attempt + 1, 32)
        return delay / 2 + self._rng.uniform(0, delay / 2)

    def reset(self) -> None:
        self.attempt = 0


_State = dict[tuple[str, str], dict[str, Any]]  # (namespace, name) -> last known object


@dataclass
class _Cursor:
    """Where one kind's watch stands: the version to resume from (None: relist) and what it knows."""

    rv: str | None = None
    state: _State = field(default_factory=dict)


def _key(obj: dict[str, Any]) -> tuple[str, str]:
    meta = obj.get("metadata") or {}
    return (meta.get("namespace") or "", meta.get("name") or "")


def _rv(obj: dict[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("resourceVersion") or "")


class KubeWatcher:
    """Watch ``kinds`` through ``api_client`` (a ``kubernetes.client.ApiClient``); ``start()``/``stop()``."""

    def __init__(
        self,
        api_client: Any,
        kinds: Sequence[str] = ("pods", "endpointslices", "events"),
        on_event: Callable[[WatchEvent], None] | None = None,
        clock: Callable[[], int] = time.time_ns,
        *,
        watch_timeout_s: int = 300,
        page_size: int = 500,
        backoff_base_s: float = 0.5,
        backoff_cap_s: float = 30.0,
        connect_timeout_s: float = 10.0,
        list_read_timeout_s: float = 60.0,
        initial_relisted: bool = False,
        namespace: str | None = None,
        label_selector: str = "",
    ) -> None:
        unknown = [k for k in kinds if k not in KINDS]
        if unknown:
            raise ValueError(f"unknown kinds {unknown}; known: {sorted(KINDS)}")
        self.api_client = api_client
        self.kinds = tuple(kinds)
        self.on_event = on_event or (lambda _e: None)
        self.clock = clock
        self.watch_timeout_s = watch_timeout_s
        self.page_size = page_size
        self.backoff_base_s, self.backoff_cap_s = backoff_base_s, backoff_cap_s
        self.connect_timeout_s, self.list_read_timeout_s = connect_timeout_s, list_read_timeout_s
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._stats = WatchStats()
        self._responses: dict[str, Any] = {}
        self._threads: list[threading.Thread] = []
        self._synced = {k: threading.Event() for k in self.kinds}
        self.initial_relisted = initial_relisted  # a restarted watch: its first list is a relist too
        self.namespace = namespace or None  # one namespace, else cluster-wide
        self.label_selector = label_selector  # for SELECTED_KINDS (pods) only

    # -- lifecycle ---------------------------------------------------------------------------------
    def start(self) -> KubeWatcher:
        for kind in self.kinds:
            t = threading.Thread(target=self._run, args=(kind,), name=f"kubewatch-{kind}", daemon=True)
            self._threads.append(t)
            t.start()
        return self

    def stop(self, timeout: float = 5.0) -> bool:
        """Stop all threads; True if they all ended within ``timeout`` seconds."""
        self._stop.set()
        with self._lock:
            responses = list(self._responses.values())
        for resp in responses:
            _abort(resp)
        deadline = time.monotonic() + timeout
        for t in self._threads:
            t.join(timeout=max(0.0, deadline - time.monotonic()))
        return not any(t.is_alive() for t in self._threads)

    def __enter__(self) -> KubeWatcher:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def wait_synced(self, timeout: float) -> bool:
        """True once every kind has completed its first LIST (within ``timeout`` seconds)."""
        deadline = time.monotonic() + timeout
        return all(ev.wait(max(0.0, deadline - time.monotonic())) for ev in self._synced.values())

    def stats(self) -> WatchStats:
        """A snapshot of the counters."""
        with self._lock:
            s = self._stats
            return WatchStats(
                Counter(s.events), Counter(s.bookmarks), Counter(s.lists), Counter(s.relists),
                Counter(s.watches), Counter(s.reconnects), Counter(s.errors), Counter(s.bad_lines),
                Counter(s.callback_errors), dict(s.resource_version),
            )  # fmt: skip

    # -- one kind ----------------------------------------------------------------------------------
    def _run(self, kind: str) -> None:
        cursor = _Cursor()
        backoff = Backoff(self.backoff_base_s, self.backoff_cap_s)
        failed = False  # the previous watch ended by an error: the next one is a reconnect
        gone_in_a_row = 0
        while not self._stop.is_set():
            try:
                if cursor.rv is None:
                    self._list(kind, cursor)
                    backoff.reset()
                if failed:
                    self._count("reconnects", kind)
                self._watch(kind, cursor, backoff)
                failed, gone_in_a_row = False, 0
            except _Gone:
                cursor.rv = None
                gone_in_a_row += 1
                self._count("relists", kind)
                if gone_in_a_row > 1:
                    self._stop.wait(backoff.next_delay())
            except Exception as exc:  # connection, HTTP and decoding failures: back off and retry
                if self._stop.is_set():
                    break
                if getattr(exc, "status", None) == 410:  # 410 answered to the request itself
                    cursor.rv = None
                    self._count("relists", kind)
                    continue
                failed = True
                self._count("errors", kind)
                log.warning("watch %s: %s: %s", kind, type(exc).__name__, str(exc).splitlines()[:1])
                self._stop.wait(backoff.next_delay())

    def _call(self, kind: str, **kwargs: Any) -> Any:
        from kubernetes import client

        spec = KINDS[kind]
        api = getattr(client, spec.api)(self.api_client)
        if self.label_selector and kind in SELECTED_KINDS:
            kwargs["label_selector"] = self.label_selector
        if self.namespace:
            return getattr(api, spec.namespaced)(self.namespace, _preload_content=False, **kwargs)
        return getattr(api, spec.method)(_preload_content=False, **kwargs)

    def _track(self, kind: str, resp: Any) -> None:
        with self._lock:
            self._responses[kind] = resp
        if self._stop.is_set():
            _abort(resp)

    def _release(self, kind: str, resp: Any) -> None:
        with self._lock:
            self._responses.pop(kind, None)
        resp.close()
        resp.release_conn()

    def _list(self, kind: str, cursor: _Cursor) -> None:
        """LIST all pages, emit the diff against what the cursor knew, move the cursor to the list."""
        state = cursor.state
        spec = KINDS[kind]
        fresh: _State = {}  # reduced page by page: a list never holds the full objects of every page
        token: str | None = None
        for _page in range(1_000_000):
            kwargs: dict[str, Any] = {"limit": self.page_size}
            if token:
                kwargs["_continue"] = token
            resp = self._call(
                kind, _request_timeout=(self.connect_timeout_s, self.list_read_timeout_s), **kwargs
            )
            self._track(kind, resp)
            try:
                body = json.loads(resp.data)
            finally:
                self._release(kind, resp)
            meta = body.get("metadata") or {}
            for item in body.get("items") or []:
                obj = reduce_object({"kind": spec.kind, "apiVersion": spec.api_version, **item}, spec.kind)
                fresh[_key(obj)] = obj
            del body
            token = meta.get("continue") or None
            if not token:
                break
        observed = self.clock()
        self._count("lists", kind)
        initial = not self._synced[kind].is_set()
        for key in [k for k in state if k not in fresh]:
            self._emit(kind, "DELETED", state.pop(key), observed, relisted=True)
        for key, obj in fresh.items():
            old = state.get(key)
            if old is None:
                self._emit(kind, "ADDED", obj, observed, relisted=not initial or self.initial_relisted)
            elif (old.get("metadata") or {}).get("uid") != (obj.get("metadata") or {}).get("uid"):
                self._emit(kind, "DELETED", old, observed, relisted=True)  # same name, new object
                self._emit(kind, "ADDED", obj, observed, relisted=True)
            elif _rv(old) != _rv(obj):
                self._emit(kind, "MODIFIED", obj, observed, relisted=True)
            state[key] = obj
        self._synced[kind].set()
        cursor.rv = str(meta.get("resourceVersion") or "")
        self._set_rv(kind, cursor.rv)

    def _watch(self, kind: str, cursor: _Cursor, backoff: Backoff) -> None:
        """One WATCH request from the cursor's version, moving the cursor with every event and bookmark."""
        state = cursor.state
        timeout = max(1, int(self.watch_timeout_s * random.uniform(0.9, 1.1)))
        self._count("watches", kind)
        resp = self._call(
            kind,
            watch=True,
            resource_version=cursor.rv,
            allow_watch_bookmarks=True,
            timeout_seconds=timeout,
            _request_timeout=(self.connect_timeout_s, timeout + 30),
        )
        self._track(kind, resp)
        try:
            for line in _lines(resp):
                observed = self.clock()
                if self._stop.is_set():
                    break
                try:
                    event = json.loads(line)
                    etype, obj = event["type"], event["object"]
                except (ValueError, KeyError, TypeError):
                    self._count("bad_lines", kind)
                    continue
                backoff.reset()
                if etype == "ERROR":
                    if isinstance(obj, dict) and obj.get("code") == 410:
                        raise _Gone()
                    raise _StreamError(str(obj.get("message") if isinstance(obj, dict) else obj))
                new_rv = _rv(obj) if isinstance(obj, dict) else ""
                if etype == "BOOKMARK":
                    self._count("bookmarks", kind)
                elif etype in ("ADDED", "MODIFIED", "DELETED") and isinstance(obj, dict):
                    obj = reduce_object(obj, KINDS[kind].kind)  # before anything keeps or hands it on
                    if etype == "DELETED":
                        state.pop(_key(obj), None)
                    else:
                        state[_key(obj)] = obj
                    self._emit(kind, etype, obj, observed)
                else:
                    self._count("bad_lines", kind)
                    continue
                if new_rv:
                    cursor.rv = new_rv
                    self._set_rv(kind, new_rv)
        finally:
            self._release(kind, resp)

    # -- bookkeeping -------------------------------------------------------------------------------
    def _emit(
        self, kind: str, etype: str, obj: dict[str, Any], observed: int, relisted: bool = False
    ) -> None:
        self._count("events", (kind, etype))
        try:
            self.on_event(WatchEvent(kind, etype, obj, observed, relisted))
        except Exception:
            self._count("callback_errors", kind)
            log.exception("watch %s: on_event failed", kind)

    def _count(self, name: str, key: Any) -> None:
        with self._lock:
            getattr(self._stats, name)[key] += 1

    def _set_rv(self, kind: str, rv: str) -> None:
        with self._lock:
            self._stats.resource_version[kind] = rv


def _lines(resp: Any) -> Iterator[bytes]:
    """Newline-delimited lines of a streaming urllib3 response, as chunks arrive."""
    buf = b""
    for chunk in resp.stream(amt=None, decode_content=False):
        buf += chunk
        while (nl := buf.find(b"\n")) >= 0:
            line, buf = buf[:nl], buf[nl + 1 :]
            if line.strip():
                yield line
    if buf.strip():
        yield buf


def _abort(resp: Any) -> None:
    """Unblock a thread reading ``resp`` (used by stop()): shut the socket down under it."""
    sock = getattr(getattr(resp, "connection", None), "sock", None)
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
