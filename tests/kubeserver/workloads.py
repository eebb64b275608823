"""A controller emulation for :class:`~tests.kubeserver.server.FakeApiServer`: what the Deployment and Job
controllers and the kubelet would do, as far as ``auditor rollout-test``'s tests need it (not the lab).

A thread polls the server's store every ``poll_s`` and:

* a Deployment first seen gets a complete status (every replica updated and available, observedGeneration
  = generation); when its ``metadata.generation`` grows (a template change: a restart or a patch), its
  status shows the rollout progressing (observedGeneration caught up, 1 of N updated, one extra old pod),
  ``on_rollout(before, after, time_ns)`` is called with the object before and after the change, and
  ``rollout_s`` later the status is complete again; ``stall=True`` leaves it progressing forever, and
  ``deadline_exceeded=True`` also sets the Progressing condition's reason ProgressDeadlineExceeded;
* a Job gets one pod (its template's labels, plus ``job-name``) in phase ``job_phase`` (a pod that never
  starts: ``"Pending"`` with ``waiting_reason``), whose log is ``job_log(job, created_ns)`` on every read;
* a pod whose Job is gone is deleted (the garbage collector of a Background deletion).

:func:`vegeta_lines` writes load records as ``auditor load`` does (vegeta JSON lines).
"""

from __future__ import annotations

import contextlib
import copy
import json
import threading
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

from tests.kubeserver.server import FakeApiServer

JobLog = Callable[[dict[str, Any], int], bytes]
OnRollout = Callable[[dict[str, Any], dict[str, Any], int], None]


def iso_ns(ns: int) -> str:
    """RFC 3339 with nanoseconds, as vegeta writes its timestamps (UTC here)."""
    dt = datetime.fromtimestamp(ns // 1_000_000_000, UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S") + f".{ns % 1_000_000_000:09d}Z"


def vegeta_line(t_ns: int, url: str, seq: int, code: int = 200, error: str = "", latency_ns: int = 1_500_000) -> bytes:
    doc = {"attack": "", "seq": seq, "code": code, "timestamp": iso_ns(t_ns), "latency": latency_ns,
           "bytes_out": 0, "bytes_in": 3 if code == 200 else 0, "error": error, "body": None,
           "method": "GET", "url": url, "headers": None}  # fmt: skip
    return json.dumps(doc, separators=(",", ":")).encode() + b"\n"


def refused(url: str) -> str:
    host = url.split("//", 1)[-1].split("/", 1)[0]
    return f'Get "{url}": dial tcp 10.244.0.99:41000->{host}: connect: connection refused'


def vegeta_lines(
    start_ns: int, end_ns: int, url: str, every_ns: int = 10_000_000, failures: Iterable[tuple[int, int, str]] = ()
) -> bytes:
    """Successes every ``every_ns`` from ``start_ns`` to ``end_ns``, and each failure ``(time_ns, code,
    error)``, in time order."""
    rows = [(t, 200, "") for t in range(start_ns, end_ns, every_ns)] + list(failures)
    rows.sort()
    return b"".join(vegeta_line(t, url, i, code, err) for i, (t, code, err) in enumerate(rows))


def complete_status(obj: dict[str, Any]) -> dict[str, Any]:
    n = int((obj.get("spec") or {}).get("replicas") or 1)
    return {
        "observedGeneration": int(obj["metadata"].get("generation") or 1),
        "replicas": n, "updatedReplicas": n, "readyReplicas": n, "availableReplicas": n,
        "conditions": [
            {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable"},
            {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"},
        ],
    }  # fmt: skip


class ControllerEmulation:
    def __init__(
        self, server: FakeApiServer, *, rollout_s: float = 0.3, stall: bool = False,
        deadline_exceeded: bool = False, job_log: JobLog | None = None, on_rollout: OnRollout | None = None,
        job_phase: str = "Running", waiting_reason: str = "", poll_s: float = 0.02,
    ) -> None:  # fmt: skip
        self.server = server
        self.rollout_s, self.stall, self.deadline_exceeded = rollout_s, stall, deadline_exceeded
        self.job_log = job_log or (lambda job, created: b"")
        self.on_rollout = on_rollout
        self.job_phase, self.waiting_reason, self.poll_s = job_phase, waiting_reason, poll_s
        self.rollouts: list[tuple[str, int]] = []  # (namespace/name, time_ns)
        self.jobs_seen: list[str] = []
        self._known: dict[tuple[str, str], dict[str, Any]] = {}  # deployment -> last object seen
        self._complete_at: dict[tuple[str, str], float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="controller-emulation", daemon=True)
        self.errors: list[str] = []

    def start(self) -> ControllerEmulation:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def __enter__(self) -> ControllerEmulation:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._deployments()
                self._jobs()
            except Exception as exc:  # a test must see it, not a silent thread death
                self.errors.append(f"{type(exc).__name__}: {exc}")
            self._stop.wait(self.poll_s)

    def _deployments(self) -> None:
        now = time.monotonic()
        for d in self.server.objects("Deployment"):
            key = (d["metadata"]["namespace"], d["metadata"]["name"])
            gen = int(d["metadata"].get("generation") or 1)
            old = self._known.get(key)
            if old is None:
                self._known[key] = d
                if int((d.get("status") or {}).get("observedGeneration") or 0) < gen:
                    self.server.set_status("Deployment", *key, complete_status(d))
                continue
            if gen > int(old["metadata"].get("generation") or 1):
                self._known[key] = d
                self._progressing(key, d)
                at = time.time_ns()
                self.rollouts.append((f"{key[0]}/{key[1]}", at))
                if self.on_rollout is not None:
                    self.on_rollout(copy.deepcopy(old), copy.deepcopy(d), at)
                if not self.stall:
                    self._complete_at[key] = now + self.rollout_s
            due = self._complete_at.get(key)
            if due is not None and now >= due:
                del self._complete_at[key]
                current = self.server.get("Deployment", *key)
                if current is not None:
                    self.server.set_status("Deployment", *key, complete_status(current))

    def _progressing(self, key: tuple[str, str], d: dict[str, Any]) -> None:
        n = int((d.get("spec") or {}).get("replicas") or 1)
        reason, message = "ReplicaSetUpdated", f'ReplicaSet "{key[1]}-new" is progressing.'
        if self.deadline_exceeded:
            reason, message = "ProgressDeadlineExceeded", f'ReplicaSet "{key[1]}-new" has timed out progressing.'
        self.server.set_status("Deployment", *key, {
            "observedGeneration": int(d["metadata"].get("generation") or 1),
            "replicas": n + 1, "updatedReplicas": 1, "readyReplicas": n, "availableReplicas": n,
            "unavailableReplicas": 1,
            "conditions": [
                {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable"},
                {"type": "Progressing", "status": "False" if self.deadline_exceeded else "True",
                 "reason": reason, "message": message},
            ],
        })  # fmt: skip

    def _jobs(self) -> None:
        jobs = {(j["metadata"]["namespace"], j["metadata"]["name"]): j for j in self.server.objects("Job")}
        pods = self.server.objects("Pod")
        owners = {(p["metadata"]["namespace"], (p["metadata"].get("labels") or {}).get("job-name")) for p in pods}
        for key, job in jobs.items():
            if key in owners:
                continue
            self.jobs_seen.append(key[1])
            template = (job.get("spec") or {}).get("template") or {}
            labels = {**((template.get("metadata") or {}).get("labels") or {}), "job-name": key[1]}
            name = f"{key[1]}-{job['metadata']['uid'][:5]}"
            status: dict[str, Any] = {"phase": self.job_phase, "podIP": "10.244.0.99"}
            if self.waiting_reason:
                status["containerStatuses"] = [{"name": "load", "ready": False, "state": {"waiting": {
                    "reason": self.waiting_reason, "message": f"Back-off pulling image: {self.waiting_reason}"}}}]  # fmt: skip
            created = time.time_ns()
            self.server.create({"kind": "Pod", "metadata": {"name": name, "namespace": key[0], "labels": labels},
                                "spec": copy.deepcopy(template.get("spec") or {}), "status": status})  # fmt: skip
            self.server.set_pod_log(key[0], name, lambda job=job, created=created: self.job_log(job, created))
        for p in pods:
            owner = (p["metadata"].get("labels") or {}).get("job-name")
            if owner and (p["metadata"]["namespace"], owner) not in jobs:
                with contextlib.suppress(KeyError):
                    self.server.delete("Pod", p["metadata"]["namespace"], p["metadata"]["name"])


def deployment(
    name: str = "web", namespace: str = "default", *, replicas: int = 3, image: str = "registry.example/web:1",
    container: dict[str, Any] | None = None, grace: int | None = None, strategy: dict[str, Any] | None = None,
) -> dict[str, Any]:  # fmt: skip
    """A Deployment as ``kubectl get -o json`` would show it (before its controller writes a status)."""
    c = container or {
        "name": "web", "image": image, "ports": [{"name": "http", "containerPort": 8080}],
        "readinessProbe": {"httpGet": {"path": "/ready", "port": 8080}, "periodSeconds": 1},
    }  # fmt: skip
    spec: dict[str, Any] = {"containers": [c]}
    if grace is not None:
        spec["terminationGracePeriodSeconds"] = grace
    return {
        "kind": "Deployment", "apiVersion": "apps/v1",
        "metadata": {"name": name, "namespace": namespace, "labels": {"app": name}},
        "spec": {
            "replicas": replicas, "selector": {"matchLabels": {"app": name}},
            "strategy": strategy or {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": spec},
        },
    }  # fmt: skip


def service(name: str = "web", namespace: str = "default", ip: str = "10.96.0.10", port: int = 80) -> dict[str, Any]:
    return {"kind": "Service", "apiVersion": "v1", "metadata": {"name": name, "namespace": namespace},
            "spec": {"selector": {"app": name}, "clusterIP": ip, "ports": [{"name": "http", "port": port,
                                                                              "targetPort": 8080}]}}  # fmt: skip


__all__ = ["ControllerEmulation", "complete_status", "deployment", "iso_ns", "refused", "service", "vegeta_line", "vegeta_lines"]
