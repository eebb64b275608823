"""The Kubernetes objects the lab emulates, written as a ``kubectl get --watch`` stream.

The stream is what ``kubectl get pods,endpointslices -A --watch --output-watch-events -o json``
prints (pretty JSON ``{"type", "object"}`` events, concatenated) plus ``observedAt`` (RFC 3339,
nanoseconds, UTC) on each event: the wall-clock time the driver made the change.
"""

from __future__ import annotations

import json
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

NODE_NAME = "lab-node"
IMAGE = "registry.k8s.io/e2e-test-images/agnhost:2.47"
_ALNUM = "bcdfghjklmnpqrstvwxz2456789"  # Kubernetes' SafeEncodeString alphabet


def rfc3339_nano(ns: int) -> str:
    """``2024-05-01T12:00:00.123456789Z``: always nine fraction digits."""
    secs, frac = divmod(ns, 1_000_000_000)
    return datetime.fromtimestamp(secs, UTC).strftime("%Y-%m-%dT%H:%M:%S") + f".{frac:09d}Z"


def go_rfc3339_nano(ns: int) -> str:
    """Go's time.RFC3339Nano: trailing zeros of the fraction trimmed (as in annotations)."""
    text = rfc3339_nano(ns)[:-1].rstrip("0").rstrip(".")
    return text + "Z"


def rfc3339(ns: int) -> str:
    """Second resolution, as the API server writes metav1.Time."""
    return datetime.fromtimestamp(ns // 1_000_000_000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def safe_suffix(rng: random.Random, n: int) -> str:
    return "".join(rng.choice(_ALNUM) for _ in range(n))


@dataclass
class ReplicaSet:
    """A ReplicaSet of the ``web`` Deployment: name ``web-<pod-template-hash>``."""

    template_hash: str
    uid: str = field(default_factory=lambda: str(uuid.uuid4()))

    @property
    def name(self) -> str:
        return f"web-{self.template_hash}"


@dataclass
class LabPod:
    """One emulated pod and its lifecycle times (wall-clock ns; 0 = not yet)."""

    name: str
    ip: str
    rs: ReplicaSet
    prestop_s: int
    grace_s: int
    uid: str = field(default_factory=lambda: str(uuid.uuid4()))
    container_id: str = field(default_factory=lambda: uuid.uuid4().hex + uuid.uuid4().hex)
    created_ns: int = 0
    started_ns: int = 0
    ready_ns: int = 0
    deleted_ns: int = 0  # the delete request
    finished_ns: int = 0  # the container exited

    def to_object(self, rv: int, port: int) -> dict[str, Any]:
        """The Pod as the API server returns it."""
        meta: dict[str, Any] = {
            "name": self.name, "generateName": f"{self.rs.name}-", "namespace": "default",
            "uid": self.uid, "resourceVersion": str(rv), "creationTimestamp": rfc3339(self.created_ns),
            "labels": {"app": "web", "pod-template-hash": self.rs.template_hash},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": self.rs.name,
                                 "uid": self.rs.uid, "controller": True, "blockOwnerDeletion": True}],
        }
        if self.deleted_ns:
            # the API sets deletionTimestamp = time of the delete request + grace period
            meta["deletionTimestamp"] = rfc3339(self.deleted_ns + self.grace_s * 1_000_000_000)
            meta["deletionGracePeriodSeconds"] = self.grace_s
        container: dict[str, Any] = {
            "name": "web", "image": IMAGE, "args": ["netexec", f"--http-port={port}"],
            "ports": [{"name": "http", "containerPort": port, "protocol": "TCP"}],
            "readinessProbe": {"httpGet": {"path": "/", "port": port, "scheme": "HTTP"},
                               "periodSeconds": 1, "timeoutSeconds": 1, "successThreshold": 1,
                               "failureThreshold": 3},
            "imagePullPolicy": "IfNotPresent",
        }
        if self.prestop_s > 0:
            container["lifecycle"] = {"preStop": {"exec": {"command": ["sleep", str(self.prestop_s)]}}}
        spec = {"containers": [container], "nodeName": NODE_NAME, "restartPolicy": "Always",
                "terminationGracePeriodSeconds": self.grace_s, "dnsPolicy": "ClusterFirst",
                "schedulerName": "default-scheduler", "serviceAccountName": "default"}
        return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec, "status": self._status()}

    def _status(self) -> dict[str, Any]:
        cond = [{"type": "PodScheduled", "status": "True", "lastTransitionTime": rfc3339(self.created_ns)}]
        if not self.started_ns:
            return {"phase": "Pending", "conditions": cond, "qosClass": "BestEffort"}
        ready = bool(self.ready_ns) and not self.finished_ns
        ready_t = rfc3339(self.finished_ns or self.ready_ns or self.started_ns)
        cond += [
            {"type": "Initialized", "status": "True", "lastTransitionTime": rfc3339(self.started_ns)},
            {"type": "Ready", "status": str(ready), "lastTransitionTime": ready_t},
            {"type": "ContainerReady", "status": str(ready), "lastTransitionTime": ready_t},
        ]
        cid = f"containerd://{self.container_id}"
        state: dict[str, Any] = {"running": {"startedAt": rfc3339(self.started_ns)}}
        if self.finished_ns:
            state = {"terminated": {"exitCode": 0, "reason": "Completed", "containerID": cid,
                                    "startedAt": rfc3339(self.started_ns),
                                    "finishedAt": rfc3339(self.finished_ns)}}
        return {
            "phase": "Succeeded" if self.finished_ns else "Running",
            "conditions": cond, "hostIP": "10.1.0.1", "hostIPs": [{"ip": "10.1.0.1"}],
            "podIP": self.ip, "podIPs": [{"ip": self.ip}], "startTime": rfc3339(self.started_ns),
            "qosClass": "BestEffort",
            "containerStatuses": [{"name": "web", "image": IMAGE, "imageID": IMAGE, "containerID": cid,
                                   "ready": ready, "started": not self.finished_ns, "restartCount": 0,
                                   "state": state}],
        }


@dataclass
class EndpointSlice:
    """The ``web`` service's single EndpointSlice, maintained as the endpointslice controller does."""

    name: str
    service_uid: str = field(default_factory=lambda: str(uuid.uuid4()))
    uid: str = field(default_factory=lambda: str(uuid.uuid4()))
    created_ns: int = 0
    trigger_ns: int = 0
    endpoints: list[tuple[LabPod, bool]] = field(default_factory=list)  # (pod, terminating)

    def to_object(self, rv: int, port: int) -> dict[str, Any]:
        eps = []
        for pod, terminating in self.endpoints:
            eps.append({"addresses": [pod.ip],
                        "conditions": {"ready": not terminating, "serving": True, "terminating": terminating},
                        "nodeName": NODE_NAME,
                        "targetRef": {"kind": "Pod", "namespace": "default", "name": pod.name,
                                      "uid": pod.uid}})
        return {
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {
                "name": self.name, "generateName": "web-", "namespace": "default", "uid": self.uid,
                "resourceVersion": str(rv), "creationTimestamp": rfc3339(self.created_ns),
                "generation": rv,
                "labels": {"endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io",
                           "kubernetes.io/service-name": "web"},
                "annotations": {"endpoints.kubernetes.io/last-change-trigger-time":
                                go_rfc3339_nano(self.trigger_ns)},
                "ownerReferences": [{"apiVersion": "v1", "kind": "Service", "name": "web",
                                     "uid": self.service_uid, "controller": True,
                                     "blockOwnerDeletion": True}],
            },
            "addressType": "IPv4",
            "endpoints": eps,
            "ports": [{"name": "http", "port": port, "protocol": "TCP"}],
        }


class WatchStream:
    """Appends watch events to a file, in the order the driver observes them."""

    def __init__(self, path: Path, port: int) -> None:
        self.path, self.port = path, port
        self._f: IO[str] = path.open("w")
        self.rv = 1000
        self.count = 0
        self.mirror: Callable[[str, dict[str, Any]], None] | None = None  # e.g. the lab's API server

    def emit(self, kind: str, obj: LabPod | EndpointSlice, at_ns: int | None = None) -> int:
        """Write one event (``ADDED``/``MODIFIED``/``DELETED``); return its observedAt in ns."""
        at = at_ns or time.time_ns()
        self.rv += 1
        served = obj.to_object(self.rv, self.port)
        event = {"type": kind, "object": served, "observedAt": rfc3339_nano(at)}
        if self.mirror is not None:
            self.mirror(kind, served)
        self._f.write(json.dumps(event, indent=4) + "\n")
        self._f.flush()
        self.count += 1
        return at

    def close(self) -> None:
        self._f.close()
