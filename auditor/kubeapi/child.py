"""The Kubernetes watch in a process of its own: ``python -m auditor.kubeapi.child [--kubeconfig F]``.

Why a process: the receipt time of a watch event (``observedAt``) is the node's half of the measured
propagation delay. In the agent's process, the watch threads share the GIL with the probe reader and
the correlator: during a refusal burst (exactly when a pod is being replaced) a watch line could wait
there for tens of ms before being stamped. Here nothing else runs, so lines are stamped as they
arrive; the agent reads them at its own pace (:class:`auditor.kubeapi.isolated.IsolatedKubeWatcher`).

Protocol, one JSON object per line on stdout:
``{"t": "e", "k": kind, "y": type, "n": observed_ns, "r": relisted, "o": object}`` per event,
``{"t": "synced"}`` once every kind has been listed, ``{"t": "stats", ...}`` every second and at the
end, ``{"t": "end"}`` last. It stops when stdin closes (the agent stopping, or gone) or on SIGTERM.
A bad configuration is one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import signal
import sys
import threading
from typing import IO, Any

from auditor.errors import AuditorError
from auditor.kubeapi.watcher import KINDS, KubeWatcher, WatchEvent, WatchStats


def stats_json(s: WatchStats) -> dict[str, Any]:
    """WatchStats as JSON (``events`` keys ``kind/TYPE``)."""
    return {
        "events": {f"{k}/{t}": n for (k, t), n in s.events.items()},
        **{name: dict(getattr(s, name)) for name in ("bookmarks", "lists", "relists", "watches", "reconnects",
                                                     "errors", "bad_lines", "callback_errors")},
        "resource_version": dict(s.resource_version),
    }  # fmt: skip


class _Out:
    def __init__(self, stream: IO[bytes]) -> None:
        self.stream, self.lock = stream, threading.Lock()

    def write(self, obj: dict[str, Any]) -> None:
        line = json.dumps(obj, separators=(",", ":")).encode() + b"\n"
        with self.lock:
            self.stream.write(line)
            self.stream.flush()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m auditor.kubeapi.child")
    ap.add_argument("--kubeconfig", default=None)
    ap.add_argument("--kinds", default="pods,endpointslices,events")
    ap.add_argument("--relisted", action="store_true", help="mark the first list's objects as relisted")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s kube-watch: %(message)s")
    kinds = tuple(k for k in args.kinds.split(",") if k)
    if not kinds or any(k not in KINDS for k in kinds):
        print(f"auditor kube watch: unknown kinds {args.kinds!r}; known: {', '.join(KINDS)}", file=sys.stderr)
        return 2
    try:
        from auditor.kubeapi.config import load_api_client

        client = load_api_client(args.kubeconfig)
    except AuditorError as exc:
        print(f"auditor kube watch: {exc}", file=sys.stderr)
        return 2
    out = _Out(sys.stdout.buffer)
    stop = threading.Event()

    def on_event(e: WatchEvent) -> None:
        out.write({"t": "e", "k": e.kind, "y": e.type, "n": e.observed_ns, "r": e.relisted, "o": e.object})

    def wait_stdin() -> None:
        with contextlib.suppress(OSError, ValueError):
            sys.stdin.buffer.read()
        stop.set()

    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    threading.Thread(target=wait_stdin, name="stdin", daemon=True).start()
    watcher = KubeWatcher(client, kinds=kinds, on_event=on_event, initial_relisted=args.relisted).start()
    synced, ticks = False, 0
    try:
        while not stop.wait(0.05):
            ticks += 1
            if not synced and watcher.wait_synced(0):
                synced = True
                out.write({"t": "synced"})
            if ticks % 20 == 0:
                out.write({"t": "stats", **stats_json(watcher.stats())})
    except BrokenPipeError:
        return 1
    finally:
        watcher.stop(5.0)
    try:
        out.write({"t": "stats", **stats_json(watcher.stats())})
        out.write({"t": "end"})
    except (BrokenPipeError, ValueError):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
