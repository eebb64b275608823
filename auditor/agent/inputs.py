"""The agent's non-packet inputs: the Kubernetes watch and the dataplane watcher.

Each one records what it receives to the log directory (so ``auditor analyze --dir`` replays it) and
feeds the live correlator. Both report their losses as running totals, like packet sources do.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from auditor.agent.correlator import LiveCorrelator
from auditor.errors import AuditorError

log = logging.getLogger(__name__)


class KubeInput:
    """KubeWatcher -> StreamRecorder (``kube-<node>-<stamp>.json``) + correlator.

    ``api_client``: a ``WatchProcess`` runs the watch in a child process (what ``auditor agent`` does,
    so receipt times do not wait for this process's GIL, see :mod:`auditor.kubeapi.child`); a
    ``kubernetes.client.ApiClient`` runs it in threads of this process.
    """

    def __init__(
        self,
        api_client: Any,
        path: Path,
        correlator: LiveCorrelator,
        on_pod: Callable[[str, dict[str, Any], int], None] | None = None,
    ) -> None:
        """``on_pod(type, object, observed_ns)``: every pod event too, before the correlator has it."""
        from auditor.kubeapi import KINDS, KubeWatcher, StreamRecorder
        from auditor.kubeapi.isolated import IsolatedKubeWatcher, WatchProcess

        self.path = path
        self._kind_names = {k: spec.kind for k, spec in KINDS.items()}
        self.recorder = StreamRecorder(path)
        self.correlator = correlator
        self.on_pod = on_pod
        kinds = ("pods", "endpointslices", "events")
        self.watcher: Any
        if isinstance(api_client, WatchProcess):
            self.watcher = IsolatedKubeWatcher(api_client.kubeconfig, kinds=kinds, on_event=self._on_event)
        else:
            self.watcher = KubeWatcher(api_client, kinds=kinds, on_event=self._on_event)

    def _on_event(self, event: Any) -> None:
        self.recorder.write_event(event)
        kind = self._kind_names.get(event.kind, event.kind)
        if kind == "Pod" and self.on_pod is not None:
            self.on_pod(event.type, event.object, event.observed_ns)
        self.correlator.add_kube(kind, event.type, event.object, event.observed_ns,
                                 relisted=bool(event.relisted))  # fmt: skip

    def start(self) -> None:
        self.watcher.start()

    def stop(self, timeout: float) -> bool:
        done: bool = self.watcher.stop(timeout)
        self.recorder.close()
        return done

    def synced(self) -> bool:
        synced: bool = self.watcher.wait_synced(0)
        return synced

    def lost(self) -> dict[str, int]:
        """Watch gaps: failed or broken watches, 410 relists, unparsable lines, callback failures."""
        s = self.watcher.stats()
        total = sum(s.errors.values()) + sum(s.relists.values()) + sum(s.bad_lines.values())
        return {"kube_watch": total + sum(s.callback_errors.values())}

    def notes(self) -> dict[str, Any]:
        s = self.watcher.stats()
        return {
            "file": self.path.name,
            "process": type(self.watcher).__name__ == "IsolatedKubeWatcher",
            "recorded": self.recorder.count,
            "lists": dict(s.lists), "relists": dict(s.relists), "errors": dict(s.errors),
            "reconnects": dict(s.reconnects), "bad_lines": dict(s.bad_lines),
            "callback_errors": dict(s.callback_errors), "resource_version": dict(s.resource_version),
        }  # fmt: skip


class DataplaneInput:
    """``auditor.sources.dataplane.watch_dataplane`` -> ``dataplane-<node>-<stamp>.jsonl`` + correlator."""

    def __init__(
        self, node: str, backend: str, path: Path, correlator: LiveCorrelator, netns: str | None = None
    ) -> None:
        self.node, self.backend, self.path, self.netns = node, backend, path, netns
        self.correlator = correlator
        self.count = 0
        self.errors = 0
        self._lock = threading.Lock()
        self._file: IO[str] | None = None
        self._watcher: Any = None

    def start(self) -> None:
        """Start watching; AuditorError if the watcher is missing or cannot start."""
        try:
            from auditor.sources.dataplane import watch_dataplane
        except ImportError as exc:
            raise AuditorError(f"the dataplane watcher is not available in this build ({exc})") from None
        try:
            self._watcher = watch_dataplane(self.node, backend=self.backend, netns=self.netns)
        except AuditorError:
            raise
        except Exception as exc:
            raise AuditorError(f"dataplane watcher failed to start: {type(exc).__name__}: {exc}") from None
        self._file = self.path.open("a", encoding="utf-8")
        self._watcher.start(self._on_record)

    def _on_record(self, record: Any) -> None:
        try:
            line = record.to_json_line()
        except Exception:
            self.errors += 1
            return
        with self._lock:
            if self._file is None or self._file.closed:
                self.errors += 1
                return
            self._file.write(line + "\n")
            self._file.flush()
            self.count += 1
        self.correlator.add_dataplane(record)

    def stop(self) -> None:
        if self._watcher is not None:
            try:
                self._watcher.stop()
            except Exception as exc:
                log.warning("dataplane watcher stop failed: %s", exc)
        with self._lock:
            if self._file is not None:
                self._file.close()

    def resync_clock(self) -> int | None:
        """Re-measure the watcher's kernel -> wall clock offset; the correction in ns, None if the
        watcher stamps nothing by the kernel (or is not running)."""
        resync = getattr(self._watcher, "resync_clock", None)
        return resync() if resync is not None else None

    def lost(self) -> dict[str, int]:
        c = getattr(self._watcher, "counters", None)
        extra = sum(int(getattr(c, name, 0) or 0) for name in ("lost", "parse_failures", "callback_errors"))
        return {"dataplane": self.errors + extra}

    def notes(self) -> dict[str, Any]:
        c = getattr(self._watcher, "counters", None)
        return {
            "counters": {k: getattr(c, k) for k in getattr(c, "__slots__", ())} if c is not None else {},
            "file": self.path.name,
            "backend": self.backend,
            "netns": self.netns or "own",
            "recorded": self.count,
            "errors": self.errors,
        }
