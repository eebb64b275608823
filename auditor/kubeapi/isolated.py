"""The agent's side of the isolated Kubernetes watch (:mod:`auditor.kubeapi.child`).

``IsolatedKubeWatcher`` offers what the agent uses of :class:`~auditor.kubeapi.watcher.KubeWatcher`
(``start``, ``stop``, ``wait_synced``, ``stats``, events to ``on_event``), with the watch running in a
child process that stamps each event when its line arrived. If the child dies it is started again
after a capped backoff; its first list then comes as a relist (``relisted=True``), and the restart is
counted in ``stats().errors["watch-process"]``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import IO, Any

from auditor.kubeapi.watcher import Backoff, WatchEvent, WatchStats

log = logging.getLogger(__name__)

_COUNTERS = (
    "bookmarks",
    "lists",
    "relists",
    "watches",
    "reconnects",
    "errors",
    "bad_lines",
    "callback_errors",
)


@dataclass(frozen=True, slots=True)
class WatchProcess:
    """Where the isolated watch finds the API: a kubeconfig path, or None for the usual search
    (``$KUBECONFIG``, in-cluster, ``~/.kube/config``), as :func:`~auditor.kubeapi.load_api_client`."""

    kubeconfig: str | None = None


def stats_from_json(obj: dict[str, Any]) -> WatchStats:
    events: Counter[tuple[str, str]] = Counter()
    for key, n in (obj.get("events") or {}).items():
        kind, _, etype = str(key).partition("/")
        events[(kind, etype)] = int(n)
    counters = {
        name: Counter({str(k): int(v) for k, v in (obj.get(name) or {}).items()}) for name in _COUNTERS
    }
    return WatchStats(events=events, resource_version=dict(obj.get("resource_version") or {}), **counters)


class IsolatedKubeWatcher:
    def __init__(
        self,
        kubeconfig: str | None,
        kinds: Sequence[str] = ("pods", "endpointslices", "events"),
        on_event: Callable[[WatchEvent], None] | None = None,
        *,
        python: str = sys.executable,
        backoff_base_s: float = 0.5,
        backoff_cap_s: float = 30.0,
    ) -> None:
        self.kubeconfig, self.kinds = kubeconfig, tuple(kinds)
        self.on_event = on_event or (lambda _e: None)
        self.python = python
        self._backoff = Backoff(backoff_base_s, backoff_cap_s)
        self._stop = threading.Event()
        self._synced = threading.Event()
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._thread: threading.Thread | None = None
        self._base = WatchStats()  # totals of children that ended
        self._current = WatchStats()  # the running child's last report
        self._restarts = 0
        self._bad_lines = 0
        self._callback_errors = 0

    def _argv(self, relisted: bool) -> list[str]:
        argv = [self.python, "-m", "auditor.kubeapi.child", "--kinds", ",".join(self.kinds)]
        if self.kubeconfig:
            argv += ["--kubeconfig", self.kubeconfig]
        return argv + (["--relisted"] if relisted else [])

    def start(self) -> IsolatedKubeWatcher:
        self._thread = threading.Thread(target=self._run, name="kubewatch-process", daemon=True)
        self._thread.start()
        return self

    def _spawn(self, relisted: bool) -> subprocess.Popen[bytes]:
        # glibc: two heap arenas, big blocks mapped on their own, free memory given back: its RSS counts
        # with the agent's under one memory limit (a list of a large cluster is parsed page by page)
        env = {"MALLOC_ARENA_MAX": "2", "MALLOC_MMAP_THRESHOLD_": "262144", "MALLOC_TRIM_THRESHOLD_": "4194304",
               **os.environ}  # fmt: skip
        proc = subprocess.Popen(self._argv(relisted), stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
        with self._lock:
            self._proc = proc
        return proc

    def _run(self) -> None:
        relisted = False
        while not self._stop.is_set():
            try:
                proc = self._spawn(relisted)
            except OSError as exc:
                log.warning("kube watch process cannot start: %s", exc)
                self._stop.wait(self._backoff.next_delay())
                continue
            assert proc.stdout is not None
            ended = self._read(proc.stdout)
            code = proc.wait()
            for pipe in (proc.stdin, proc.stdout):
                if pipe is not None:
                    with contextlib.suppress(OSError):
                        pipe.close()
            with self._lock:
                self._fold(self._current)
                self._current = WatchStats()
            if self._stop.is_set():
                break
            self._restarts += 1
            log.warning(
                "kube watch process exited (status %s, %s); restarting", code, "clean" if ended else "cut"
            )
            relisted = True  # what changed meanwhile comes from the new child's list
            self._stop.wait(self._backoff.next_delay())

    def _read(self, stream: IO[bytes]) -> bool:
        """Handle the child's lines until EOF; True if it said ``end``."""
        for raw in stream:
            try:
                obj = json.loads(raw)
                kind = obj["t"]
            except (ValueError, KeyError, TypeError):
                self._bad_lines += 1
                continue
            if kind == "e":
                try:
                    event = WatchEvent(obj["k"], obj["y"], obj["o"], int(obj["n"]), bool(obj["r"]))
                except (KeyError, TypeError, ValueError):
                    self._bad_lines += 1
                    continue
                try:
                    self.on_event(event)
                except Exception:
                    self._callback_errors += 1
                    log.exception("kube on_event callback failed")
            elif kind == "synced":
                self._synced.set()
                self._backoff.reset()
            elif kind == "stats":
                stats = stats_from_json(obj)
                with self._lock:
                    self._current = stats
            elif kind == "end":
                return True
        return False

    def _fold(self, s: WatchStats) -> None:
        b = self._base
        for name in ("events", *_COUNTERS):
            getattr(b, name).update(getattr(s, name))
        b.resource_version.update(s.resource_version)

    def stop(self, timeout: float = 5.0) -> bool:
        """Close the child's stdin (it stops its watch, reports, exits); True if done within ``timeout``."""
        self._stop.set()
        deadline = time.monotonic() + timeout
        with self._lock:
            proc = self._proc
        if proc is not None and proc.stdin is not None:
            with contextlib.suppress(OSError):
                proc.stdin.close()
        if self._thread is not None:
            self._thread.join(max(0.0, deadline - time.monotonic()))
        clean = self._thread is None or not self._thread.is_alive()
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(2)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(2)
            clean = False
        return clean

    @property
    def pid(self) -> int | None:
        """The running watch process (its memory counts with the agent's), None between two."""
        with self._lock:
            proc = self._proc
        return proc.pid if proc is not None and proc.poll() is None else None

    def wait_synced(self, timeout: float) -> bool:
        return self._synced.wait(timeout)

    def stats(self) -> WatchStats:
        with self._lock:
            out = WatchStats()
            for s in (self._base, self._current):
                for name in ("events", *_COUNTERS):
                    getattr(out, name).update(getattr(s, name))
                out.resource_version.update(s.resource_version)
        if self._restarts:
            out.errors["watch-process"] += self._restarts
        if self._bad_lines:
            out.bad_lines["watch-process"] += self._bad_lines
        if self._callback_errors:
            out.callback_errors["watch-process"] += self._callback_errors
        return out
