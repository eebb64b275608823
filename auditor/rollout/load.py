"""The load of a rollout test: ``auditor load`` in a short-lived Job (or locally), and its records.

``auditor load URL --qps N --connections N --keepalive|--no-keepalive --duration Ss --out -`` writes one
vegeta-format JSON result per request to stdout (``{"timestamp", "code", "latency", "error", ...}``, what
``auditor analyze --client`` reads as ``vegeta-json``). In the cluster it runs as a Job with the auditor
image; its records come back through the pod's log (``pods/log``), read whole once the test is over and
followed meanwhile for the progress display. ``--from-here`` runs the same command here as a subprocess
(``python -m auditor load ...``) writing to a file.

A runner that dies without cleaning up (SIGKILL, a lost machine) leaves a Job that ends by itself: the
load's own ``--duration`` bound, the Job's ``activeDeadlineSeconds``, then ``ttlSecondsAfterFinished``
for the garbage collector.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import secrets
import signal
import subprocess
import sys
import threading
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from auditor.model.client import ErrorClass, classify
from auditor.rollout.workload import WorkloadRef

DEFAULT_IMAGE = os.environ.get("AUDITOR_IMAGE", "auditor-agent:0.1.0")
LOAD_LABEL = "app.kubernetes.io/instance"  # the pods of one load Job: LOAD_LABEL=<job name>
JOB_TTL_S = 600
# what runs `auditor` for --from-here (tests point it at a stand-in)
LOCAL_PREFIX: list[str] = [sys.executable, "-m", "auditor"]


@dataclass(frozen=True)
class LoadSpec:
    url: str
    qps: int
    connections: int
    keepalive: bool = True
    duration_s: float = 600.0  # the load stops by itself after this; the runner usually stops it sooner


def load_args(spec: LoadSpec) -> list[str]:
    """``auditor``'s arguments for the load (the same in the Job and locally)."""
    return [
        "load", spec.url, "--qps", str(spec.qps), "--connections", str(spec.connections),
        "--keepalive" if spec.keepalive else "--no-keepalive",
        "--duration", f"{math.ceil(spec.duration_s)}s", "--out", "-",
    ]  # fmt: skip


def job_name(ref: WorkloadRef) -> str:
    """``auditor-load-<workload>-<5 random>``, within the 63 characters a Job's pods' labels allow."""
    stem = f"auditor-load-{ref.name}"[:50].rstrip("-.")
    return f"{stem}-{secrets.token_hex(3)[:5]}"


def load_job(ref: WorkloadRef, spec: LoadSpec, name: str, image: str) -> dict[str, Any]:
    """The Job manifest: one pod, never restarted, no privileges, gone by itself if nobody deletes it."""
    labels = {
        "app.kubernetes.io/name": "auditor-load",
        "app.kubernetes.io/part-of": "auditor",
        "app.kubernetes.io/component": "rollout-test",
        LOAD_LABEL: name,
    }
    container = {
        "name": "load",
        "image": image,
        "command": ["auditor"],
        "args": load_args(spec),
        "resources": {"requests": {"cpu": "500m", "memory": "128Mi"}, "limits": {"memory": "512Mi"}},
        "securityContext": {
            "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
    }  # fmt: skip
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name, "namespace": ref.namespace, "labels": labels,
            "annotations": {"auditor/target": f"{ref.kind}/{ref.name}", "auditor/url": spec.url},
        },
        "spec": {
            "backoffLimit": 0,
            "activeDeadlineSeconds": math.ceil(spec.duration_s) + 60,
            "ttlSecondsAfterFinished": JOB_TTL_S,
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "restartPolicy": "Never",
                    "terminationGracePeriodSeconds": 5,
                    "automountServiceAccountToken": False,
                    "containers": [container],
                },
            },
        },
    }


@dataclass
class Tally:
    """Counts of vegeta-format result lines fed in chunks (a line may span chunks)."""

    requests: int = 0
    failed: int = 0
    by_class: Counter[str] = field(default_factory=Counter)
    status: Counter[int] = field(default_factory=Counter)
    lines: int = 0  # complete lines seen (results or not)
    _rest: bytes = b""
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def feed(self, chunk: bytes) -> None:
        with self._lock:
            data = self._rest + chunk
            *complete, self._rest = data.split(b"\n")
            for line in complete:
                self.lines += 1
                self._count(line)

    def _count(self, line: bytes) -> None:
        try:
            obj = json.loads(line)
        except ValueError:
            return
        if not isinstance(obj, dict) or "code" not in obj:
            return
        raw = obj.get("code")
        code = raw if isinstance(raw, int) else 0
        self.requests += 1
        self.status[code] += 1
        cls = classify(code, str(obj.get("error") or ""))
        if cls is not ErrorClass.NONE:
            self.failed += 1
            self.by_class[cls.value] += 1

    def snapshot(self) -> tuple[int, int]:
        with self._lock:
            return self.requests, self.failed


def complete_lines(data: bytes) -> bytes:
    """The data up to its last newline: a result still being written is left out."""
    end = data.rfind(b"\n")
    return data[: end + 1] if end >= 0 else b""


def split_log(data: bytes) -> tuple[bytes, list[str]]:
    """A pod log holds the container's stdout and stderr: the records (JSON lines) and the other lines
    (the load's summary or its error), of complete lines only."""
    records: list[bytes] = []
    other: list[str] = []
    for line in complete_lines(data).splitlines(keepends=True):
        if line.lstrip().startswith(b"{"):
            records.append(line)
        elif line.strip():
            other.append(line.decode(errors="replace").strip())
    return b"".join(records), other


class LocalLoad:
    """``auditor load`` as a subprocess writing to ``out``; :meth:`stop` sends SIGTERM (the load flushes
    and exits), then SIGKILL after ``grace_s``."""

    def __init__(self, spec: LoadSpec, out: Path, prefix: list[str] | None = None) -> None:
        self.argv = [*(prefix or LOCAL_PREFIX), *load_args(spec)]
        self.out = out
        self.tally = Tally()
        self._proc: subprocess.Popen[bytes] | None = None
        self._stderr: IO[bytes] | None = None
        self._read = 0

    def start(self) -> None:
        self.out.parent.mkdir(parents=True, exist_ok=True)
        with self.out.open("wb") as stdout:
            self._stderr = self.out.with_suffix(".stderr").open("w+b")
            # its own session: a Ctrl-C at the terminal reaches the runner, which stops the load itself
            self._proc = subprocess.Popen(self.argv, stdout=stdout, stderr=self._stderr, start_new_session=True)

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def exit_status(self) -> int | None:
        return None if self._proc is None else self._proc.poll()

    def poll(self) -> tuple[int, int]:
        """Feed what the load wrote since the last call; (requests, failed) so far."""
        with contextlib.suppress(OSError), self.out.open("rb") as f:
            f.seek(self._read)
            data = f.read()
            self._read += len(data)
            self.tally.feed(data)
        return self.tally.snapshot()

    def stderr_tail(self) -> str:
        """The last line the load wrote to stderr (its error, when it failed)."""
        try:
            text = self.out.with_suffix(".stderr").read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        lines = [x for x in text.splitlines() if x.strip()]
        return lines[-1].strip() if lines else ""

    def stop(self, grace_s: float = 10.0) -> None:
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None


__all__ = [
    "DEFAULT_IMAGE",
    "LOAD_LABEL",
    "LOCAL_PREFIX",
    "LoadSpec",
    "LocalLoad",
    "Tally",
    "complete_lines",
    "job_name",
    "load_args",
    "load_job",
    "split_log",
]
