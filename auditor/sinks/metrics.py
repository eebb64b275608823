"""Prometheus metrics of the live agent and the HTTP server that exposes them (``/metrics``, ``/healthz``).

Series (all prefixed ``auditor_``):

* ``events_received_total{kind}``: packet events the agent received from its sources;
* ``events_written_total``: rows written to the event log;
* ``events_lost_total{kind}``: what did not reach the log: in-kernel losses per event kind,
  ``perf_buffer``, ``decode``, ``queue_full``, ``kube_watch`` (errors and relists), ``dataplane``;
* ``events_counted_total{kind}``: every event the probes saw, from their in-kernel aggregates: exact
  whatever detail was lost (``events_received_total`` is the detail, sampled under a storm);
* ``failures_counted_total{failure}``: refused / reset / unreachable connections on this node, from the
  aggregates (exact; a refusal seen from both ends counts once), whatever pod they were for;
* ``connection_failures_total{namespace,pod,failure,cause}``: refused / reset connections explained by
  a finished termination episode. Pods are labelled only when terminating, and at most ``max_pods``
  distinct pods are named; the rest share ``pod="_other"`` (bounded cardinality). Where the episode's
  detail was sampled, the failures its exact counts hold beyond the detail's have ``cause="detail_lost"``;
* ``propagation_delay_seconds{consumer_kind,consumer}``: histogram of measured propagation delays per
  endpoint consumer: ``kube-proxy`` of a node (its rule removal), a ``pod`` dialing pod IPs itself (an
  ingress), an ``external`` address (ms buckets);
* ``gap_seconds``: histogram of the per-node gap (time new connections still went to the pod);
* ``episodes_total{verdict}``: finished termination episodes by verdict (SAFE / GAP / INCONCLUSIVE).

Given a ``log_dir``, the server also hands out the agent's log directory read-only for
``auditor collect``: ``GET /logs`` (JSON listing) and ``GET /logs/<name>`` (one listed file, streamed);
see :mod:`auditor.sinks.logserve` for what is listed and why nothing else can be read. Only to a
bearer token the API server authenticates and authorizes (:mod:`auditor.sinks.logauth`: 401 without
a token or with one it rejects, 403 without the permission, 503 when no check can be made); without
a ``log_access`` every ``/logs`` request answers 503. ``/metrics`` and ``/healthz`` stay open.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from auditor.errors import AuditorError
from auditor.model.counts import CountRecord, failure_of
from auditor.sinks.logauth import LogsAccess, unchecked_logs

DELAY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
OTHER_POD = "_other"


class AgentMetrics:
    """The agent's series in their own registry (tests may create several)."""

    def __init__(self, max_pods: int = 200, registry: Any = None) -> None:
        from prometheus_client import CollectorRegistry, Counter, Histogram

        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.max_pods = max_pods
        self._pods: set[tuple[str, str]] = set()
        self._totals: dict[str, int] = {}
        self._lock = threading.Lock()
        self.received = Counter(
            "auditor_events_received", "Packet events received from the sources.", ["kind"], registry=r
        )
        self.written = Counter(
            "auditor_events_written", "Packet events written to the event log.", registry=r
        )
        self.lost = Counter(
            "auditor_events_lost", "Events lost before the log, by kind or stage.", ["kind"], registry=r
        )
        self.counted = Counter(
            "auditor_events_counted",
            "Events the probes saw, from their in-kernel aggregates (exact, whatever detail was lost).",
            ["kind"],
            registry=r,
        )
        self.failures_counted = Counter(
            "auditor_failures_counted",
            "Refused, reset and unreachable connections on this node, from the in-kernel aggregates (exact).",
            ["failure"],
            registry=r,
        )
        self.failures = Counter(
            "auditor_connection_failures",
            "Refused or reset connections by cause, for terminating pods.",
            ["namespace", "pod", "failure", "cause"],
            registry=r,
        )
        self.delay = Histogram(
            "auditor_propagation_delay_seconds",
            "Per endpoint consumer (kube-proxy of a node, a pod dialing pod IPs, an external address): pod "
            "deletion seen -> the consumer's last new connection to it.",
            ["consumer_kind", "consumer"],
            buckets=DELAY_BUCKETS,
            registry=r,
        )
        self._consumers: set[tuple[str, str]] = set()
        self.gap = Histogram(
            "auditor_gap_seconds",
            "Per node: how long new connections still reached a pod that no longer listened.",
            buckets=DELAY_BUCKETS,
            registry=r,
        )
        self.episodes = Counter(
            "auditor_episodes", "Finished pod termination episodes by verdict.", ["verdict"], registry=r
        )

    def count_received(self, kind: str, n: int = 1) -> None:
        self.received.labels(kind=kind).inc(n)

    def count_counted(self, records: list[CountRecord]) -> None:
        """Aggregate records (exact counts): events per kind, failures per failure kind. A refusal seen
        from both ends on this node is in two records of one bucket (the server's RST, the client's
        ``refused``): per server and bucket the larger of the two counts, as in ``failure_counts``."""
        kinds: dict[str, int] = {}
        failures: dict[str, int] = {}
        refusals: dict[tuple[str, int], list[int]] = {}  # (server, bucket) -> [by the server, by clients]
        for r in records:
            kinds[r.kind] = kinds.get(r.kind, 0) + r.events
            failure = failure_of(r)
            if failure == "refused":
                pair = refusals.setdefault((r.server, r.time_ns), [0, 0])
                pair[r.kind != "rst_sent"] += r.events
            elif failure is not None:
                failures[failure] = failures.get(failure, 0) + r.events
        if refusals:
            failures["refused"] = sum(max(pair) for pair in refusals.values())
        for kind, n in kinds.items():
            self.counted.labels(kind=kind).inc(n)
        for failure, n in failures.items():
            self.failures_counted.labels(failure=failure).inc(n)

    def count_written(self, n: int) -> None:
        self.written.inc(n)

    def set_lost_total(self, kind: str, total: int) -> None:
        """Report a source's running loss total; the counter advances by the difference."""
        with self._lock:
            delta = total - self._totals.get(kind, 0)
            if delta <= 0:
                if kind not in self._totals:
                    self._totals[kind] = 0
                    self.lost.labels(kind=kind)  # expose the series at 0
                return
            self._totals[kind] = total
        self.lost.labels(kind=kind).inc(delta)

    def count_failures(self, namespace: str, pod: str, failure: str, cause: str, n: int = 1) -> None:
        with self._lock:
            key = (namespace, pod)
            if key not in self._pods:
                if len(self._pods) >= self.max_pods:
                    namespace, pod = "", OTHER_POD
                else:
                    self._pods.add(key)
        self.failures.labels(namespace=namespace, pod=pod, failure=failure, cause=cause).inc(n)

    def observe_delay(self, seconds: float, consumer_kind: str = "kube-proxy", consumer: str = "") -> None:
        """One consumer's propagation delay; past ``max_pods`` distinct consumers, they share one series
        (``consumer="other"``), as pods do for the failure counter."""
        with self._lock:
            key = (consumer_kind, consumer)
            if key not in self._consumers:
                if len(self._consumers) >= self.max_pods:
                    consumer = OTHER_POD
                else:
                    self._consumers.add(key)
        self.delay.labels(consumer_kind=consumer_kind, consumer=consumer).observe(max(0.0, seconds))

    def observe_gap(self, seconds: float) -> None:
        self.gap.observe(max(0.0, seconds))

    def count_episode(self, verdict: str) -> None:
        self.episodes.labels(verdict=verdict).inc()

    def exposition(self) -> bytes:
        from prometheus_client import generate_latest

        return bytes(generate_latest(self.registry))


def parse_addr(text: str) -> tuple[str, int]:
    """``HOST:PORT`` / ``:PORT`` / ``[::1]:PORT`` -> (host, port); an empty host means all addresses."""
    host, sep, port = text.rpartition(":")
    if not sep:
        raise AuditorError(f"bad listen address {text!r}", "--metrics-addr", "use HOST:PORT, e.g. :9808")
    try:
        number = int(port)
    except ValueError:
        raise AuditorError(f"bad port in {text!r}", "--metrics-addr", "use HOST:PORT, e.g. :9808") from None
    if not 0 <= number <= 65535:
        raise AuditorError(f"port out of range in {text!r}", "--metrics-addr", "use a port 0..65535")
    return host.strip("[]"), number


class MetricsServer:
    """``/metrics`` (Prometheus text format), ``/healthz`` (200 "ok" or 503 with the reason) and, with
    ``log_dir``, ``/logs`` and ``/logs/<name>`` (the log directory, read-only, to whom ``log_access``
    allows)."""

    def __init__(
        self,
        metrics: AgentMetrics,
        addr: str,
        health: Callable[[], tuple[bool, str]],
        log_dir: str | Path | None = None,
        log_access: LogsAccess | None = None,
    ) -> None:
        host, port = parse_addr(addr)
        self.log_access = log_access if log_access is not None else unchecked_logs()
        handler = _handler(metrics, health, Path(log_dir) if log_dir is not None else None, self.log_access)
        server_class = ThreadingHTTPServer
        if ":" in host:
            import socket

            class _V6(ThreadingHTTPServer):
                address_family = socket.AF_INET6

            server_class = _V6
        try:
            self._server = server_class((host or "0.0.0.0", port), handler)
        except OSError as exc:
            raise AuditorError(
                f"cannot listen on {addr} ({exc.strerror})", "--metrics-addr", "pick a free port"
            ) from None
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="metrics-http", daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> MetricsServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread.is_alive():
            self._server.shutdown()
        self._server.server_close()


def _handler(
    metrics: AgentMetrics,
    health: Callable[[], tuple[bool, str]],
    log_dir: Path | None = None,
    log_access: LogsAccess | None = None,
) -> type[BaseHTTPRequestHandler]:
    from prometheus_client import CONTENT_TYPE_LATEST

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # quiet: scrapes every few seconds
            return

        def _send(self, code: int, body: bytes, ctype: str) -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._send(200, metrics.exposition(), CONTENT_TYPE_LATEST)
            elif path == "/healthz":
                ok, text = health()
                self._send(200 if ok else 503, (text + "\n").encode(), "text/plain; charset=utf-8")
            elif log_dir is not None and (path == "/logs" or path.startswith("/logs/")):
                decision = (log_access or unchecked_logs()).check(self.headers)
                if not decision.allowed:
                    self._refuse(decision.status, decision.message)
                    return
                self._logs(log_dir, path)
            else:
                self._send(404, b"not found: try /metrics or /healthz\n", "text/plain; charset=utf-8")

        def _refuse(self, code: int, message: str) -> None:
            body = f"{code} {HTTPStatus(code).phrase}: {message}\n".encode()
            self.send_response(code)
            if code == 401:
                self.send_header("WWW-Authenticate", 'Bearer realm="auditor-agent"')
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _logs(self, directory: Path, path: str) -> None:
            import json
            from urllib.parse import unquote

            from auditor.sinks.logserve import find_log_file, list_log_files, read_log_file

            if path in ("/logs", "/logs/"):
                files = [f.as_dict() for f in list_log_files(directory)]
                self._send(200, json.dumps({"files": files}).encode(), "application/json")
                return
            found = find_log_file(directory, unquote(path[len("/logs/") :]))
            if found is None:
                self._send(404, b"not found: not a log file of this agent (GET /logs lists them)\n",
                           "text/plain; charset=utf-8")  # fmt: skip
                return
            try:
                chunks = read_log_file(directory, found)
                first = next(chunks, b"")
            except OSError:
                self._send(404, b"not found: the file was rotated away\n", "text/plain; charset=utf-8")
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(found.size))
            self.end_headers()
            try:
                self.wfile.write(first)
                for block in chunks:
                    self.wfile.write(block)
            except OSError:
                self.close_connection = True  # client went away, or the file shrank: short body

    return Handler


__all__ = ["DELAY_BUCKETS", "OTHER_POD", "AgentMetrics", "MetricsServer", "parse_addr"]
