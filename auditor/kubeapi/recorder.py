"""Record watch events as a kubectl watch stream, each stamped with ``observedAt``.

The file is what ``kubectl get pods -A --watch --output-watch-events -o json`` writes (one such watch per
resource type: kubectl watches a single type) —
concatenated JSON objects ``{"type": "ADDED|MODIFIED|DELETED", "object": {...}}`` — with one extra key,
``"observedAt"`` (RFC 3339, UTC, nanoseconds), the moment the agent received the event. We write one
compact object per line, so the file is also JSON Lines; readers use ``json.JSONDecoder.raw_decode``.

Objects are written reduced to what the audit reads (:func:`auditor.model.reduce.reduce_object`; the
watcher already hands them so, reducing again is a no-op): no pod env, args, commands or annotations
outside the allow-list ever reach the file.

:class:`RecordingSession` (``auditor record --kube-only``) is the watcher and the recorder together, with
the counts of its progress line.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import IO, Any

from auditor.errors import AuditorError
from auditor.kubeapi.watcher import KubeWatcher, WatchEvent
from auditor.model.kube import format_time_ns
from auditor.model.reduce import reduce_object


class StreamRecorder:
    """Append events to a file (path, opened in append mode) or to an open text file object.

    Thread-safe (every watcher thread may call :meth:`write`); each event is flushed as it is written,
    so a crash loses at most the event being written.
    """

    def __init__(self, target: str | Path | IO[str]) -> None:
        self._lock = threading.Lock()
        self.count = 0
        if isinstance(target, str | Path):
            self.path: Path | None = Path(target)
            try:
                self._file: IO[str] = self.path.open("a", encoding="utf-8")
            except OSError as exc:
                raise AuditorError(
                    f"cannot open for writing: {exc.strerror}", where=str(target), hint="check the path"
                ) from None
            self._owned = True
        else:
            self.path, self._file, self._owned = None, target, False

    def write(self, event_type: str, obj: dict[str, Any], observed_ns: int, relisted: bool = False) -> None:
        """Append one event (the object reduced). ``relisted``: learnt by a relist, so observedAt only
        bounds the change."""
        doc: dict[str, Any] = {
            "type": event_type,
            "object": reduce_object(obj),
            "observedAt": format_time_ns(observed_ns),
        }
        if relisted:
            doc["relisted"] = True
        line = json.dumps(doc, separators=(",", ":"), ensure_ascii=False)
        with self._lock:
            self._file.write(line + "\n")
            self._file.flush()
            self.count += 1

    def write_event(self, event: WatchEvent) -> None:
        """Append a :class:`WatchEvent` (usable directly as ``KubeWatcher(on_event=...)``)."""
        self.write(
            event.type, event.object, event.observed_ns, relisted=bool(getattr(event, "relisted", False))
        )

    def close(self) -> None:
        with self._lock:
            if self._owned and not self._file.closed:
                self._file.close()
            elif not self._file.closed:
                self._file.flush()

    def __enter__(self) -> StreamRecorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class RecordingSession:
    """``auditor record --kube-only``: a :class:`KubeWatcher` whose events go to a :class:`StreamRecorder`,
    with the counts a progress line shows (objects seen, watch events, pod deletions).

    Nothing here needs root or bcc: the API is read with the kubeconfig's credentials, like kubectl does.
    ``start()``, then ``stop()`` (stops the watch threads, then flushes and closes the file).
    """

    def __init__(
        self,
        api_client: Any,
        path: str | Path,
        *,
        namespace: str | None = None,
        label_selector: str = "",
        kinds: tuple[str, ...] = ("pods", "endpointslices", "events"),
        **watch_options: Any,
    ) -> None:
        self.recorder = StreamRecorder(path)
        self._lock = threading.Lock()
        self._objects: dict[str, set[str]] = {k: set() for k in kinds}  # kind -> uids (or ns/name) seen
        self._by_type: dict[str, int] = {}  # ADDED | MODIFIED | DELETED -> count
        self._deleting: set[str] = set()  # pods seen with a deletionTimestamp or DELETED
        self.kinds = kinds
        self.watcher = KubeWatcher(
            api_client, kinds, on_event=self._on_event, namespace=namespace, label_selector=label_selector,
            **watch_options,
        )  # fmt: skip

    def _on_event(self, event: WatchEvent) -> None:
        self.recorder.write_event(event)
        meta = event.object.get("metadata") or {}
        ident = str(meta.get("uid") or f"{meta.get('namespace')}/{meta.get('name')}")
        with self._lock:
            self._objects.setdefault(event.kind, set()).add(ident)
            self._by_type[event.type] = self._by_type.get(event.type, 0) + 1
            if event.kind == "pods" and (event.type == "DELETED" or meta.get("deletionTimestamp")):
                self._deleting.add(ident)

    def start(self) -> RecordingSession:
        self.watcher.start()
        return self

    def stop(self, timeout: float = 5.0) -> bool:
        """Stop watching, then flush and close the file; True when every watch thread ended in time."""
        ended = self.watcher.stop(timeout)
        self.recorder.close()
        return ended

    def counts(self) -> dict[str, Any]:
        """``objects`` per kind, ``events`` (written), per ``type``, ``pod_deletions`` and the watch's own
        counters (lists, relists, reconnects, errors, bad lines)."""
        stats = self.watcher.stats()
        with self._lock:
            objects = {k: len(v) for k, v in self._objects.items()}
            by_type = dict(self._by_type)
            deletions = len(self._deleting)
        return {
            "objects": objects,
            "events": self.recorder.count,
            "by_type": by_type,
            "pod_deletions": deletions,
            "lists": dict(stats.lists),
            "relists": sum(stats.relists.values()),
            "reconnects": sum(stats.reconnects.values()),
            "errors": sum(stats.errors.values()),
            "bad_lines": sum(stats.bad_lines.values()),
            "callback_errors": sum(stats.callback_errors.values()),
        }

    def listed(self) -> bool:
        """True once every kind was listed at least once."""
        lists = self.watcher.stats().lists
        return all(lists.get(k) for k in self.kinds)
