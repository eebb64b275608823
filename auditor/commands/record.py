"""``auditor record --kube-only``: the Kubernetes side of a rollout, recorded from anywhere with a kubeconfig.

No root, no bcc, no node access: it lists and watches pods, EndpointSlices and Events (cluster-wide, or one
namespace; pods optionally by a label selector) with the official client, exactly as the agent does (list
then watch, relist on 410 Gone, reconnect with backoff), and writes each event as it arrives, stamped with
its receipt time (``observedAt``), into ``kube-<name>-<stamp>.json`` in ``--out``: the file the agent
writes, which ``auditor analyze --dir`` or ``--kube`` reads. Receipt times make the deletion times precise
(a plain ``kubectl --watch`` leaves only the objects' one-second timestamps).

It stops on Ctrl-C, SIGTERM or ``--duration``, every event written (each line is flushed as it is
written). On a terminal, a progress line on stderr: objects, watch events, pod deletions, elapsed.

Only ``auditor.kubeapi`` and the model are imported here: nothing of the agent, the probes or bcc.
"""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from auditor.errors import AuditorError

# options of `auditor record` that mean something with --kube-only
KUBE_ONLY_OPTIONS = ("duration", "out", "as_json", "node_name", "kubeconfig", "kube_only", "namespace", "selector")
_TICK_S = 0.5


class _LastWarning(logging.Handler):
    """Keeps the watcher's last warning for the progress line; without a terminal, prints it."""

    MAX_ECHOED = 10

    def __init__(self, echo: bool) -> None:
        super().__init__(logging.WARNING)
        self.last = ""
        self.echo = echo
        self.seen = 0

    def emit(self, record: logging.LogRecord) -> None:
        msg = record.getMessage()
        self.last = msg if len(msg) <= 200 else msg[:197] + "..."
        self.seen += 1
        if self.echo and self.seen <= self.MAX_ECHOED:
            more = " (further watch warnings only counted)" if self.seen == self.MAX_ECHOED else ""
            click.echo(f"auditor record: {self.last}{more}", err=True)


def _progress(counts: dict[str, Any], elapsed: float, warning: str, listed: bool) -> str:
    objects = counts["objects"]
    line = (
        f"{'watching' if listed else 'listing '} {int(elapsed) // 60}:{int(elapsed) % 60:02d}  "
        f"objects {sum(objects.values())} "
        f"(pods {objects.get('pods', 0)}, endpointslices {objects.get('endpointslices', 0)}, "
        f"Events {objects.get('events', 0)})  watch events {counts['events']}  "
        f"pod deletions {counts['pod_deletions']}"
    )
    trouble = [f"{k} {counts[k]}" for k in ("reconnects", "relists", "errors") if counts[k]]
    if trouble:
        line += "  [" + ", ".join(trouble) + "]"
    if warning and counts["errors"]:
        line += f"  last: {warning[:60]}"
    return line


def record_kube_only(
    out: str,
    name: str,
    kubeconfig: str | None,
    namespace: str | None,
    selector: str,
    duration_s: float | None,
    as_json: bool,
    *,
    clock: Callable[[], float] = time.monotonic,
) -> int:
    """Record until a signal or ``duration_s``; prints the summary; returns the exit code (1: the API
    server was never listed)."""
    from auditor.kubeapi.config import load_api_client
    from auditor.kubeapi.recorder import RecordingSession
    from auditor.model.logfiles import kube_stream_name, safe_node_dir, segment_stamp

    if not name or not safe_node_dir(name):
        raise AuditorError(f"bad name {name!r}", "--node-name", "a name for the file: letters, digits, '-', '.'")
    api = load_api_client(kubeconfig)  # a bad configuration: one line, before anything starts
    host = str(getattr(getattr(api, "configuration", None), "host", "") or "the API server")
    directory = Path(out)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise AuditorError(f"cannot create the directory: {exc.strerror}", out, "check the path") from None
    path = directory / kube_stream_name(name, segment_stamp(time.time()))
    tty = sys.stderr.isatty()
    warnings = _LastWarning(echo=not tty)
    watch_log = logging.getLogger("auditor.kubeapi.watcher")
    watch_log.addHandler(warnings)
    watch_log.propagate = False
    session = RecordingSession(api, path, namespace=namespace, label_selector=selector)
    stop = threading.Event()
    why = {"reason": "duration"}

    def on_signal(signum: int, _frame: Any) -> None:
        why["reason"] = signal.Signals(signum).name
        stop.set()
        signal.signal(signum, signal.SIG_DFL)  # a second Ctrl-C ends at once

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    scope = f"namespace {namespace}" if namespace else "all namespaces"
    if selector:
        scope += f", pods with labels {selector}"
    click.echo(f"recording pods, EndpointSlices and Events ({scope}) from {host} into {path}; "
               f"{'Ctrl-C' if tty else 'SIGINT/SIGTERM'} to stop"
               + (f" (or after {duration_s:g} s)" if duration_s else ""), err=True)  # fmt: skip
    started_wall = time.time_ns()
    t0 = clock()
    session.start()
    announced = False
    try:
        while not stop.wait(_TICK_S):
            elapsed = clock() - t0
            listed = session.listed()
            if listed and not announced and not tty:  # when the rollout may start: said once
                objects = session.counts()["objects"]
                click.echo("listed " + ", ".join(f"{k} {n}" for k, n in objects.items()) + "; watching", err=True)
            announced = announced or listed
            if tty:
                line = _progress(session.counts(), elapsed, warnings.last, listed)
                sys.stderr.write("\r\x1b[2K" + line)
                sys.stderr.flush()
            if duration_s is not None and elapsed >= duration_s:
                break
    finally:
        ended = session.stop()
        for s, handler in previous.items():
            signal.signal(s, handler)
        watch_log.removeHandler(warnings)
        watch_log.propagate = True
        if tty:
            sys.stderr.write("\n")
    elapsed = clock() - t0
    counts = session.counts()
    summary = {
        "file": str(path), "server": host, "namespace": namespace, "label_selector": selector or None,
        "started": started_wall, "elapsed_s": round(elapsed, 3), "stopped_by": why["reason"],
        "threads_ended": ended, **counts,
    }  # fmt: skip
    listed = all(counts["lists"].get(k) for k in session.kinds)
    if as_json:
        click.echo(json.dumps(summary, indent=2))
    else:
        names = {"pods": "pods", "endpointslices": "EndpointSlices", "events": "Events"}
        by_kind = ", ".join(f"{names.get(k, k)} {n}" for k, n in counts["objects"].items())
        click.echo(
            f"recorded {counts['events']} watch events of {sum(counts['objects'].values())} objects ({by_kind}; "
            f"pod deletions {counts['pod_deletions']}) in {elapsed:.1f} s into {path}; lists "
            f"{sum(counts['lists'].values())}, relists {counts['relists']}, reconnects {counts['reconnects']}, "
            f"errors {counts['errors']}, unparsable lines {counts['bad_lines']}"
        )
        click.echo(f"analyze: auditor analyze --dir {directory} --pcap NODE=FILE.pcap ... (or --kube {path})")
    if not listed:
        missing = [k for k in session.kinds if not counts["lists"].get(k)]
        click.echo(
            f"auditor: {host}: never listed {', '.join(missing)} ({counts['errors']} failed requests"
            + (f"; last: {warnings.last}" if warnings.last else "")
            + ") — check the kubeconfig, the network and that you may list and watch them",
            err=True,
        )
        return 1
    return 0
