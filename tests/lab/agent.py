"""The lab's side of a live run: its objects served over HTTP, and ``auditor agent`` as a subprocess.

:class:`ApiMirror` copies every watch event the driver writes to ``kube.json`` into a
:class:`~tests.kubeserver.server.FakeApiServer` (real list/watch: resourceVersion, chunked watch, 410,
bookmarks), whose kubeconfig the agent reads like any other. :class:`AgentProcess` runs
``python -m auditor agent`` in the host namespace (its probes are global) with the dataplane watcher in
the lab's node namespace, waits (bounded) until it listed the API and watches the rules, and stops it
with SIGTERM.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Any

from tests.kubeserver.server import FakeApiServer

NODE = "lab-node"


class ApiMirror:
    """Serves the lab's pods and EndpointSlice: create on ADDED, replace on MODIFIED, remove on DELETED."""

    def __init__(self, run_dir: Path) -> None:
        self.server = FakeApiServer(history=10_000, bookmark_interval=1.0).start()
        self.kubeconfig = self.server.write_kubeconfig(run_dir / "kubeconfig")
        self.faults: list[dict[str, Any]] = []
        self.last_rv: dict[tuple[str, str], int] = {}  # (kind, name) -> resourceVersion of its last change

    def apply(self, kind: str, obj: dict[str, Any]) -> None:
        meta = obj["metadata"]
        if kind == "DELETED":
            stored = self.server.delete(obj["kind"], meta["namespace"], meta["name"])
        else:
            stored = self.server.apply(obj)
        self.last_rv[(obj["kind"], meta["name"])] = int(stored["metadata"]["resourceVersion"])

    def served_ns(self, kind: str, rv: int | None) -> int:
        """When the API server wrote the change ``rv`` of a ``kind`` to a watcher (the agent), 0 if never."""
        plural = {"Pod": "pods", "EndpointSlice": "endpointslices"}[kind]
        return (self.server.sent_ns(plural, rv) or 0) if rv is not None else 0

    def break_watches(self) -> dict[str, Any]:
        """Abruptly close every watch, and forget history so that resuming gets 410 Gone."""
        at = time.time_ns()
        dropped = self.server.drop_watches()
        self.server.expire_history()
        fault = {"time_ns": at, "dropped": dropped, "resource_version": self.server.resource_version}
        self.faults.append(fault)
        return fault

    def close(self) -> None:
        self.server.stop()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class AgentProcess:
    """``auditor agent`` for the lab node; :meth:`wait_ready` before load, :meth:`stop` after."""

    def __init__(self, log_dir: Path, kubeconfig: Path, backend: str, node_ns: str, settle_s: float,
                 extra: tuple[str, ...] = ()) -> None:  # fmt: skip
        self.log_dir = log_dir
        log_dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.summary_path = log_dir / f"agent-{NODE}.json"
        self.episodes_path = log_dir / f"episodes-{NODE}.jsonl"
        self._err: IO[bytes] = (log_dir.parent / "agent.log").open("wb")
        argv = [sys.executable, "-m", "auditor", "agent", "--node-name", NODE, "--log-dir", str(log_dir),
                "--kubeconfig", str(kubeconfig), "--metrics-addr", f"127.0.0.1:{self.port}",
                "--dataplane", backend, "--dataplane-netns", node_ns, "--settle-s", str(settle_s),
                "--flush-ms", "200", "--format", "jsonl", *extra]  # fmt: skip
        self.proc = subprocess.Popen(argv, cwd=Path(__file__).resolve().parents[2], stdout=self._err,
                                     stderr=subprocess.STDOUT)  # fmt: skip
        self.exit_code: int | None = None
        self.sigterm_ns = 0  # when terminate() sent SIGTERM

    def summary(self) -> dict[str, Any]:
        try:
            return dict(json.loads(self.summary_path.read_text()))
        except (OSError, ValueError):
            return {}

    def wait_ready(self, timeout: float = 90.0) -> None:
        """Until the agent listed pods and EndpointSlices and its dataplane watcher runs (bounded)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"auditor agent exited with {self.proc.returncode} (see agent.log)")
            s = self.summary()
            kube = s.get("kube") if isinstance(s.get("kube"), dict) else {}
            lists = (kube or {}).get("lists") or {}
            dp = s.get("dataplane")
            if lists.get("pods") and lists.get("endpointslices") and isinstance(dp, dict):
                return
            time.sleep(0.1)
        raise RuntimeError(f"auditor agent not ready within {timeout:.0f} s (see agent.log)")

    def episodes(self) -> list[dict[str, Any]]:
        if not self.episodes_path.exists():
            return []
        return [json.loads(line) for line in self.episodes_path.read_text().splitlines() if line.strip()]

    def wait_episodes(self, n: int, timeout: float) -> int:
        """Until ``n`` episode lines were written (bounded); returns how many there are."""
        deadline = time.monotonic() + timeout
        while len(self.episodes()) < n and time.monotonic() < deadline and self.proc.poll() is None:
            time.sleep(0.2)
        return len(self.episodes())

    def terminate(self) -> int:
        """Send SIGTERM once (as the kubelet does); returns when (ns)."""
        if not self.sigterm_ns:
            self.sigterm_ns = time.time_ns()
            self.proc.send_signal(signal.SIGTERM)
        return self.sigterm_ns

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM unless sent already, wait for the flush-and-exit (bounded), then SIGKILL; returns the exit
        code. Never a second SIGTERM: the agent restores the default handler once it has stopped, so one
        arriving while the process winds down kills it (exit -15, seen under load in the SIGTERM test)."""
        if self.proc.poll() is None:
            self.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5.0)
        self.exit_code = self.proc.returncode
        self._err.close()
        return self.exit_code
