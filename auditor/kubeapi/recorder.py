"""Record watch events as a kubectl watch stream, each stamped with ``observedAt``.

The file is what ``kubectl get pods,endpointslices -A --watch --output-watch-events -o json`` writes —
concatenated JSON objects ``{"type": "ADDED|MODIFIED|DELETED", "object": {...}}`` — with one extra key,
``"observedAt"`` (RFC 3339, UTC, nanoseconds), the moment the agent received the event. We write one
compact object per line, so the file is also JSON Lines; readers use ``json.JSONDecoder.raw_decode``.

Objects are written reduced to what the audit reads (:func:`auditor.model.reduce.reduce_object`; the
watcher already hands them so, reducing again is a no-op): no pod env, args, commands or annotations
outside the allow-list ever reach the file.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import IO, Any

from auditor.errors import AuditorError
from auditor.kubeapi.watcher import WatchEvent
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
