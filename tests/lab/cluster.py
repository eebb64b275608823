"""The lab as a cluster behind the fake API server, for ``auditor rollout-test`` run as is (issue 12).

:class:`LabCluster` builds the lab's node, client and pod namespaces, kube-proxy's rules and the pods'
HTTP servers (tests/lab: netns, rules, server, probe, the :class:`~tests.lab.rollout._Lab` pieces), serves
them through a :class:`~tests.kubeserver.proxy.ProxyApiServer` (kubeconfig ``<out>/kubeconfig``) with a
Deployment ``default/web`` and its Service, runs ``auditor agent`` for the node (registered as a pod whose
``/logs`` the pod proxy reaches), and runs the controllers a cluster would:

* **Deployment controller**: the pod template's hash names the ReplicaSet (``web-<hash>``, as Kubernetes'
  ``pod-template-hash``); when a PATCH changes the template (the ``restartedAt`` annotation, the fix), it
  rolls the pods as the real controller does with the Deployment's ``maxSurge``/``maxUnavailable``: a new
  pod (``web-<hash>-xxxxx``, owned by its ReplicaSet) is created and started (a namespace, the server,
  ready when it answers), added to the EndpointSlice and to kube-proxy's rules at once, and old pods are
  deleted while the available ones stay above ``replicas - maxUnavailable``. A terminating pod no longer
  counts (``status.replicas``), so a rollout is complete when its last old pod is *deleted*, before that pod
  has finished terminating, as in Kubernetes. Status: observedGeneration, replicas, updated, ready,
  available, the Available and Progressing conditions.
* **kubelet**, per deleted pod (a thread): deletionTimestamp and the EndpointSlice's terminating endpoint
  at the deletion; the pod's own preStop hook (the native ``sleep`` action waits its seconds; an ``exec``
  hook runs its command in the pod's namespace, as the runtime runs it in the container), bounded by the
  pod's terminationGracePeriodSeconds; SIGTERM to the server; SIGKILL at the end of the grace period; then
  the pod's terminated status, DELETED, and the endpoint removed; the pod's namespace (its sandbox) is
  removed once the node no longer routes to it. Like Calico, the node has a blackhole route for its pod
  block: a late packet for a removed pod (a kept-alive client's FIN to a server that closed first) is
  dropped, where the lab's node would otherwise answer it with an ICMP net unreachable, which the agent
  counts as a failed connection (see the report of issue 12).
* **kube-proxy** (a thread): an endpoint joins the rules when its pod is ready, and leaves them
  ``delay`` seconds after its pod's deletion (the propagation delay; the restore process is started ahead
  so the change is committed at its due time, see :meth:`~tests.lab.rules.Dataplane.prepare`).
* **Job controller**: a Job gets one pod in the client's namespace (podIP the client's address) that runs
  the container's command (``auditor`` is this checkout's ``python -m auditor``) in that namespace. Its
  log is what the container runtime keeps: stdout and stderr, whole lines in the order they came
  (``pods/log``). A deleted Job's pod gets SIGTERM, then SIGKILL after its grace period, and is deleted.

Ground truth: ``truth.json`` (each termination: hook, SIGTERM as sent and as the server saw it, rule
removal, exit, the RSTs and unreachables tcpdump counted for its address; each rollout; each load), and
the files of the rollout lab (``kube.json``, ``pods/*.jsonl``, ``node.pcap``, ``icmp.pcap``, ``rules.log``).

Run by hand (root)::

    flock /run/lock/auditor-lab.lock .venv/bin/python -m tests.lab.cluster --out /tmp/cluster
    # then, in another shell: auditor rollout-test deployment/web --kubeconfig /tmp/cluster/kubeconfig --apply
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from auditor.rollout.workload import int_or_percent
from tests.conftest import exclusive_host
from tests.kubeserver.proxy import ProxyApiServer
from tests.lab import netns
from tests.lab.agent import NODE, AgentProcess, ApiMirror
from tests.lab.client import count_stale_unreachables
from tests.lab.kube import _ALNUM, IMAGE, NODE_NAME, LabPod, ReplicaSet, rfc3339, safe_suffix
from tests.lab.probe import http_ready
from tests.lab.rollout import CLIENT_IP, REPO, RUNS_DIR, LabConfig, _Lab, remove_stale_namespaces, stop
from tests.lab.rules import SyncTimes

NAMESPACE, NAME = "default", "web"
AGENT_NAMESPACE = "auditor"
POD_CIDR = "10.244.0.0/24"  # the node's pod addresses (tests/lab/rollout.py: 10.244.0.<10 + n>)
USER = "lab-user"  # the kubeconfig's token ("fake-token") authenticates as this user
S = 1_000_000_000


@dataclass
class ClusterConfig:
    replicas: int = 3
    delay: float = 1.0  # kube-proxy's propagation delay: pod deletion -> its rule removed
    grace: int = 30  # the Deployment's terminationGracePeriodSeconds
    prestop: int = 0  # the Deployment's native preStop sleep, seconds (0: no hook)
    backend: str = "nft"
    drain: float = 5.0  # the server's drain timeout after SIGTERM (idle kept-alive connections close at once)
    agent: bool = True
    agent_settle: float = 2.0
    version: tuple[int, int] = (1, 34)  # what GET /version answers


def template_hash(template: dict[str, Any]) -> str:
    """Kubernetes' pod-template-hash: FNV-1a (32 bit) of the template, its decimal digits safe-encoded."""
    h = 0x811C9DC5
    for b in json.dumps(template, sort_keys=True, separators=(",", ":")).encode():
        h = ((h ^ b) * 0x01000193) & 0xFFFFFFFF
    return "".join(_ALNUM[ord(c) % len(_ALNUM)] for c in str(h))


def prestop_hook(container: dict[str, Any]) -> tuple[str, Any]:
    """``("sleep", seconds)``, ``("exec", argv)``, ``("none", None)`` or ``(other action, its spec)``."""
    hook = (container.get("lifecycle") or {}).get("preStop")
    if not isinstance(hook, dict):
        return "none", None
    if isinstance(hook.get("sleep"), dict):
        return "sleep", float(hook["sleep"].get("seconds") or 0)
    if isinstance(hook.get("exec"), dict):
        return "exec", [str(a) for a in hook["exec"].get("command") or []]
    action = next((k for k, v in hook.items() if v is not None), "unknown")
    return action, hook.get(action)


def rsts_since(pcap: Path, ip: str, port: int, since_ns: int) -> dict[str, int]:
    """:func:`~tests.lab.client.count_rsts_from` from ``since_ns`` on (the pod ready): the RSTs answering the
    readiness probe's SYNs while its server started are the probe's, not a client's; they are counted apart
    (``rst_refused_starting``)."""
    rst = f"src host {ip} and tcp src port {port} and tcp[tcpflags] & tcp-rst != 0"

    def times(bpf: str) -> list[int]:
        proc = subprocess.run(["tcpdump", "-r", str(pcap), "-n", "-tt", "-q", bpf], capture_output=True, text=True,
                              timeout=60, check=False)  # fmt: skip
        if proc.returncode != 0:
            raise RuntimeError(f"tcpdump -r {pcap} {bpf!r}: {proc.stderr.strip()}")
        out = []
        for line in proc.stdout.splitlines():
            sec, _, frac = line.split(" ", 1)[0].partition(".")
            out.append(int(sec) * S + int(frac.ljust(9, "0")[:9]))
        return out

    refused = times(f"{rst} and tcp[4:4] == 0")
    established = [t for t in times(f"{rst} and tcp[4:4] != 0") if t >= since_ns]
    n_refused = sum(1 for t in refused if t >= since_ns)
    return {"rst_from_pod": n_refused + len(established), "rst_refused": n_refused,
            "rst_established": len(established), "t_rst_established": established,
            "rst_refused_starting": len(refused) - n_refused}  # fmt: skip


def deployment_manifest(cfg: ClusterConfig, port: int) -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": "web", "image": IMAGE, "args": ["netexec", f"--http-port={port}"],
        "ports": [{"name": "http", "containerPort": port, "protocol": "TCP"}],
        "readinessProbe": {"httpGet": {"path": "/", "port": port, "scheme": "HTTP"}, "periodSeconds": 1,
                           "timeoutSeconds": 1, "successThreshold": 1, "failureThreshold": 3},
    }  # fmt: skip
    if cfg.prestop:
        container["lifecycle"] = {"preStop": {"sleep": {"seconds": cfg.prestop}}}
    return {
        "kind": "Deployment", "apiVersion": "apps/v1",
        "metadata": {"name": NAME, "namespace": NAMESPACE, "labels": {"app": NAME}},
        "spec": {
            "replicas": cfg.replicas, "selector": {"matchLabels": {"app": NAME}},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}},
            "template": {"metadata": {"labels": {"app": NAME}},
                         "spec": {"terminationGracePeriodSeconds": cfg.grace, "containers": [container]}},
        },
    }  # fmt: skip


@dataclass
class TemplatePod(LabPod):
    """A lab pod made from the Deployment's pod template: its containers, labels, annotations, grace and
    preStop are the template's (the base class renders the rest: status, ownerReference, IP)."""

    template: dict[str, Any] = field(default_factory=dict)
    generation: int = 0  # the Deployment generation that created it
    hook: tuple[str, Any] = ("none", None)
    deleted_generation: int = 0  # the generation whose rollout deleted it

    def to_object(self, rv: int, port: int) -> dict[str, Any]:
        obj = super().to_object(rv, port)
        tmeta = self.template.get("metadata") or {}
        obj["metadata"]["labels"] = {
            **(tmeta.get("labels") or {}),
            "pod-template-hash": self.rs.template_hash,
        }
        if tmeta.get("annotations"):
            obj["metadata"]["annotations"] = dict(tmeta["annotations"])
        spec = self.template.get("spec") or {}
        obj["spec"]["containers"] = copy.deepcopy(spec.get("containers") or [])
        obj["spec"]["terminationGracePeriodSeconds"] = self.grace_s
        return obj


class ClusterApi(ApiMirror):
    """The lab's mirror on a :class:`ProxyApiServer` (pod proxy to the agent, label selectors)."""

    def __init__(
        self, run_dir: Path, version: tuple[int, int]
    ) -> None:  # no super().__init__: another server
        self.server = ProxyApiServer(history=20_000, bookmark_interval=1.0).start()
        self.server.set_version(*version)
        self.kubeconfig = self.server.write_kubeconfig(run_dir / "kubeconfig")
        self.faults: list[dict[str, Any]] = []
        self.last_rv: dict[tuple[str, str], int] = {}
        self.lock = threading.Lock()

    def apply(self, kind: str, obj: dict[str, Any]) -> None:
        with self.lock:
            super().apply(kind, obj)


class KubeProxy:
    """kube-proxy of the lab node in a thread: adds at once, removes ``delay`` after the deletion."""

    def __init__(self, lab: _Lab, delay: float) -> None:
        self.dataplane, self.delay = lab.dataplane, delay
        self.cond = threading.Condition()
        self.wanted: list[str] = []  # in the rules' order
        self.due: dict[str, int] = {}  # ip -> removal due (ns)
        self.added: dict[str, SyncTimes] = {}
        self.removed: dict[str, SyncTimes] = {}
        self.removed_due: dict[str, int] = {}
        self.errors: list[str] = []
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="kube-proxy", daemon=True)

    def start(self) -> KubeProxy:
        self._thread.start()
        return self

    def add(self, ip: str) -> None:
        with self.cond:
            self.wanted.append(ip)
            self.cond.notify_all()

    def delete(self, ip: str, deleted_ns: int) -> None:
        with self.cond:
            self.due[ip] = deleted_ns + int(self.delay * S)
            self.cond.notify_all()

    def wait_added(self, ip: str, timeout: float) -> SyncTimes:
        with self.cond:
            if not self.cond.wait_for(lambda: ip in self.added or self._stop, timeout):
                raise RuntimeError(f"kube-proxy did not add {ip} within {timeout:g} s")
            return self.added[ip]

    def wait_removed(self, ip: str, timeout: float) -> SyncTimes | None:
        with self.cond:
            self.cond.wait_for(lambda: ip in self.removed or self._stop, timeout)
            return self.removed.get(ip)

    def stop(self) -> None:
        with self.cond:
            self._stop = True
            self.cond.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout=15)

    def _run(self) -> None:
        applied: list[str] = []
        while True:
            with self.cond:
                if self._stop:
                    return
                now = time.time_ns()
                gone = {ip for ip, t in self.due.items() if t <= now}
                target = [ip for ip in self.wanted if ip not in gone]
                if target == applied:
                    pending = [t for ip, t in self.due.items() if ip not in gone]
                    wait = (min(pending) - now) / S if pending else 1.0
                    if pending and wait < 0.1:
                        self.dataplane.prepare()  # only the payload is left to write at the due time
                    self.cond.wait(max(0.0005, min(wait, 1.0)))
                    continue
            try:
                times = self.dataplane.sync(target)
            except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
                self.errors.append(str(exc))
                time.sleep(0.05)
                continue
            with self.cond:
                for ip in target:
                    if ip not in applied:
                        self.added[ip] = times
                for ip in applied:
                    if ip not in target:
                        self.removed[ip] = times
                        self.removed_due[ip] = self.due.pop(ip)
                        self.wanted.remove(ip)
                applied = target
                self.cond.notify_all()


@dataclass
class _Load:
    """One Job's pod: the process in the client namespace and its log."""

    job: str
    job_uid: str
    pod: str
    proc: subprocess.Popen[bytes]
    grace_s: float
    started_ns: int
    deadline_ns: int
    log: bytearray = field(default_factory=bytearray)
    lock: threading.Lock = field(default_factory=threading.Lock)
    pumps: list[threading.Thread] = field(default_factory=list)
    stopped_ns: int = 0
    exit_code: int | None = None
    finished: bool = False

    def read(self) -> bytes:
        with self.lock:
            return bytes(self.log)

    def pump(self, stream: Any) -> None:
        """Whole lines, as the runtime's log does (a partial last line at EOF too)."""
        for line in iter(stream.readline, b""):
            with self.lock:
                self.log += line
        stream.close()


class _ClusterLab(_Lab):
    """The rollout lab's node, client, pods and dataplane, driven by controllers instead of a script."""

    def __init__(self, cfg: ClusterConfig, out: Path) -> None:
        lab_cfg = LabConfig(replicas=cfg.replicas, prestop=cfg.prestop, delay=cfg.delay, grace=cfg.grace,
                            backend=cfg.backend, drain=cfg.drain, keep_idle=False, small_capture=True)  # fmt: skip
        super().__init__(lab_cfg, out)
        self.ccfg = cfg
        self.cluster_api = ClusterApi(out, cfg.version)
        self.api = self.cluster_api
        self.stream.mirror = self.cluster_api.apply
        self.server = self.cluster_api.server
        self.lock = threading.RLock()  # the watch stream, the EndpointSlice, the pod lists
        self.proxy = KubeProxy(self, cfg.delay)
        self.pods: list[TemplatePod] = []
        self.rs: dict[str, ReplicaSet] = {}
        self.terminations: list[dict[str, Any]] = []
        self.rollouts: list[dict[str, Any]] = []
        self.loads: dict[str, _Load] = {}
        self.load_truth: list[dict[str, Any]] = []
        self.kubelets: list[threading.Thread] = []
        self.errors: list[str] = []
        self.captures: list[subprocess.Popen[bytes]] = []
        self._stop = threading.Event()
        self._controllers: list[threading.Thread] = []
        self._generation = 0
        self._status: dict[str, Any] = {}

    # -- the API's view -----------------------------------------------------------------------------------
    def emit(self, kind: str, obj: Any, at_ns: int | None = None) -> None:
        with self.lock:
            self.stream.emit(kind, obj, at_ns)

    def emit_slice(self, trigger_ns: int) -> None:
        with self.lock:
            self.slice.trigger_ns = trigger_ns
            self.stream.emit("MODIFIED", self.slice)

    # -- setup --------------------------------------------------------------------------------------------
    def setup(self) -> None:
        cfg = self.ccfg
        (RUNS_DIR / f"{self.run_id}.pid").write_text(str(os.getpid()))
        netns.make_node(self.node)
        self.namespaces.append(self.node)
        netns.attach_client(self.node, self.client, self.client, CLIENT_IP, "10.1.0.1")
        self.namespaces.append(self.client)
        # Calico's blackhole route for the node's IPAM block: a packet for a pod whose sandbox is gone is
        # dropped, not answered with "net unreachable" (see the module's docstring)
        netns.sh(["ip", "route", "add", "blackhole", POD_CIDR], ns=self.node)
        self.dataplane.install()
        self.proxy.start()
        server = self.server
        server.add_token("fake-token", USER)  # what write_kubeconfig gives every client, the agent included
        server.grant(USER, "get", "nodes", "proxy")  # the agent's /logs check (SubjectAccessReview)
        server.create({"kind": "Service", "apiVersion": "v1",
                       "metadata": {"name": NAME, "namespace": NAMESPACE, "uid": self.slice.service_uid},
                       "spec": {"selector": {"app": NAME}, "clusterIP": self.svc.cluster_ip, "type": "ClusterIP",
                                "ports": [{"name": self.svc.port_name, "port": self.svc.port, "protocol": "TCP",
                                           "targetPort": self.svc.target_port}]}})  # fmt: skip
        self.slice.created_ns = self.slice.trigger_ns = time.time_ns()
        self.emit("ADDED", self.slice)
        server.create(deployment_manifest(cfg, self.svc.target_port))
        self._controllers = [threading.Thread(target=self._loop, args=(f, p), name=n, daemon=True)
                             for f, p, n in ((self._deployments, 0.05, "deployment-controller"),
                                             (self._jobs, 0.1, "job-controller"))]  # fmt: skip
        for t in self._controllers:
            t.start()
        self.wait_complete(60.0)
        self.captures = self.start_capture()
        if cfg.agent:
            backend = {"nft": "iptables-nft", "legacy": "iptables-legacy"}.get(cfg.backend, cfg.backend)
            self.agent = AgentProcess(self.out / "agent", self.cluster_api.kubeconfig, backend, self.node,
                                      cfg.agent_settle)  # fmt: skip
            self.agent.wait_ready()
            server.add_agent_pod(f"auditor-{safe_suffix(self.rng, 5)}", NODE, self.agent.port,
                                 namespace=AGENT_NAMESPACE)  # fmt: skip

    def wait_complete(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._raise_errors()
            status = (self.server.get("Deployment", NAMESPACE, NAME) or {}).get("status") or {}
            if status.get("updatedReplicas") == self.ccfg.replicas and status.get("availableReplicas") == self.ccfg.replicas \
                    and status.get("replicas") == self.ccfg.replicas:  # fmt: skip
                return
            time.sleep(0.05)
        raise RuntimeError(f"the lab's Deployment did not become available within {timeout:g} s")

    def _raise_errors(self) -> None:
        errors = self.errors + self.proxy.errors
        if errors:
            raise RuntimeError("lab cluster: " + "; ".join(errors[:3]))

    def _loop(self, step: Any, period: float) -> None:
        while not self._stop.is_set():
            try:
                step()
            except Exception as exc:  # a test must see it, not a silent thread death
                self.errors.append(f"{step.__name__}: {type(exc).__name__}: {exc}")
                return
            self._stop.wait(period)

    # -- the Deployment controller ----------------------------------------------------------------------
    def _deployments(self) -> None:
        d = self.server.get("Deployment", NAMESPACE, NAME)
        if d is None:
            return
        gen = int(d["metadata"].get("generation") or 1)
        spec = d.get("spec") or {}
        template = copy.deepcopy(spec.get("template") or {})
        h = template_hash(template)
        if h not in self.rs:
            self.rs[h] = ReplicaSet(h)
        rs = self.rs[h]
        if gen != self._generation:
            if self._generation:
                self.rollouts.append({"generation": gen, "replicaset": rs.name, "t_observed": time.time_ns(),
                                      "t_complete": 0, "template": template})  # fmt: skip
            self._generation = gen
        desired = int(spec.get("replicas") if isinstance(spec.get("replicas"), int) else 1)
        rolling = (spec.get("strategy") or {}).get("rollingUpdate") or {}
        surge = int_or_percent(rolling.get("maxSurge", "25%"), desired, True) or 0
        unavailable = int_or_percent(rolling.get("maxUnavailable", "25%"), desired, False) or 0
        if surge == 0 and unavailable == 0:
            unavailable = 1  # what the controller does with both at 0
        with self.lock:
            live = [p for p in self.pods if not p.deleted_ns]
        new = [p for p in live if p.rs is rs]
        old = [p for p in live if p.rs is not rs]
        if len(new) < desired and len(live) < desired + surge:
            self.create_pod(rs, template, gen)  # started and ready when it returns
            live.append(self.pods[-1])
            new.append(self.pods[-1])
        available = [p for p in live if p.ready_ns]
        for pod in old[: max(0, len(available) - (desired - unavailable))]:
            self.delete_pod(pod, gen)
            live.remove(pod)
            available = [p for p in available if p is not pod]
        new_ready = [p for p in new if p.ready_ns]
        complete = len(new) == desired and len(new_ready) == desired and len(live) == desired
        status = {
            "observedGeneration": gen, "replicas": len(live), "updatedReplicas": len(new),
            "readyReplicas": len(available), "availableReplicas": len(available),
            "unavailableReplicas": max(0, desired - len(available)),
            "conditions": [
                {"type": "Available", "status": str(len(available) >= desired - unavailable),
                 "reason": "MinimumReplicasAvailable"},
                {"type": "Progressing", "status": "True",
                 "reason": "NewReplicaSetAvailable" if complete else "ReplicaSetUpdated",
                 "message": f'ReplicaSet "{rs.name}" ' + ("has successfully progressed." if complete else "is progressing.")},
            ],
        }  # fmt: skip
        if status != self._status:
            self._status = status
            self.server.set_status("Deployment", NAMESPACE, NAME, status)
        if (
            complete
            and self.rollouts
            and not self.rollouts[-1]["t_complete"]
            and self.rollouts[-1]["generation"] == gen
        ):
            self.rollouts[-1]["t_complete"] = time.time_ns()

    def create_pod(self, rs: ReplicaSet, template: dict[str, Any], gen: int) -> TemplatePod:
        spec = template.get("spec") or {}
        grace = spec.get("terminationGracePeriodSeconds")
        containers = [c for c in spec.get("containers") or [] if isinstance(c, dict)]
        with self.lock:
            self.pod_count += 1
            pod = TemplatePod(name=f"{rs.name}-{safe_suffix(self.rng, 5)}", ip=f"10.244.0.{10 + self.pod_count}",
                              rs=rs, prestop_s=0, grace_s=int(grace) if isinstance(grace, int) else 30,
                              template=template, generation=gen,
                              hook=prestop_hook(containers[0]) if containers else ("none", None))  # fmt: skip
            pod.created_ns = time.time_ns()
            self.pods.append(pod)
        self.emit("ADDED", pod)
        self.start_pod(pod, watched=True)  # the sandbox, the container, ready when it answers
        self.emit("MODIFIED", pod, pod.ready_ns)
        with self.lock:
            self.slice.endpoints.append((pod, False))
        self.emit_slice(pod.ready_ns)
        self.proxy.add(pod.ip)
        return pod

    def start_pod(self, pod: LabPod, watched: bool = False) -> None:
        """As the lab's, with the pod's namespace from its address (pods start from several threads)."""
        ns = self.pod_ns(pod)
        netns.attach_pod(self.node, ns, ns, pod.ip)
        with self.lock:
            self.namespaces.append(ns)
        events = self.out / "pods" / f"{pod.name}.jsonl"
        self.servers[pod.name] = self.procs.start(ns, [
            sys.executable, "-m", "tests.lab.server", "--port", str(self.svc.target_port),
            "--name", pod.name, "--events", str(events), "--drain", str(self.cfg.drain)])  # fmt: skip
        pod.started_ns = time.time_ns()
        if watched:
            self.emit("MODIFIED", pod, pod.started_ns)
        deadline = time.monotonic() + 10.0
        while not http_ready(self.node, pod.ip, self.svc.target_port):
            if time.monotonic() > deadline or self.servers[pod.name].poll() is not None:
                raise RuntimeError(f"pod {pod.name} did not become ready within 10 s")
            time.sleep(0.02)
        pod.ready_ns = time.time_ns()

    def delete_pod(self, pod: TemplatePod, gen: int) -> None:
        """The API's part of a deletion (deletionTimestamp, the endpoint terminating), then the kubelet's."""
        pod.deleted_ns = time.time_ns()
        pod.deleted_generation = gen
        self.emit("MODIFIED", pod, pod.deleted_ns)
        with self.lock:
            self.slice.endpoints = [(p, t or p is pod) for p, t in self.slice.endpoints]
        self.emit_slice(pod.deleted_ns)
        self.proxy.delete(pod.ip, pod.deleted_ns)
        kubelet = threading.Thread(
            target=self._terminate, args=(pod,), name=f"kubelet-{pod.name}", daemon=True
        )
        self.kubelets.append(kubelet)
        kubelet.start()

    # -- the kubelet ---------------------------------------------------------------------------------------
    def _terminate(self, pod: TemplatePod) -> None:
        try:
            self._terminate_pod(pod)
        except Exception as exc:
            self.errors.append(f"kubelet {pod.name}: {type(exc).__name__}: {exc}")

    def _terminate_pod(self, pod: TemplatePod) -> None:
        server = self.servers[pod.name]
        grace_end = pod.deleted_ns + pod.grace_s * S
        kind, arg = pod.hook
        hook: dict[str, Any] = {"kind": kind, "t_start": time.time_ns()}
        if kind == "sleep":
            self._stop.wait(max(0.0, min(pod.deleted_ns + float(arg) * S, grace_end) - time.time_ns()) / S)
        elif kind == "exec":
            try:  # in the container: its namespace (the lab's containers share the host's filesystem)
                done = subprocess.run(["ip", "netns", "exec", self.pod_ns(pod), *arg], capture_output=True,
                                      timeout=max(0.001, (grace_end - time.time_ns()) / S), check=False)  # fmt: skip
                hook["exit_code"] = done.returncode
                hook["stderr"] = done.stderr.decode(errors="replace").strip()[-300:]
            except subprocess.TimeoutExpired:
                hook["exit_code"] = None
                hook["stderr"] = "killed at the end of the grace period"
            except OSError as exc:
                hook["exit_code"] = None
                hook["stderr"] = str(exc)
        elif kind != "none":
            hook["unsupported"] = True  # httpGet/tcpSocket: the lab's server has no hook endpoint
        hook["t_end"] = time.time_ns()
        t_sigterm = time.time_ns()
        server.send_signal(signal.SIGTERM)
        t_kill = 0
        try:
            server.wait(max(0.0, (grace_end - time.time_ns()) / S))
        except subprocess.TimeoutExpired:
            t_kill = time.time_ns()
            server.kill()
            server.wait(5.0)
        pod.finished_ns = time.time_ns()
        self.emit("MODIFIED", pod, pod.finished_ns)
        self.emit("DELETED", pod)
        with self.lock:
            self.slice.endpoints = [(p, t) for p, t in self.slice.endpoints if p is not pod]
        self.emit_slice(pod.finished_ns)
        removed = self.proxy.wait_removed(pod.ip, self.ccfg.delay + 30.0)
        ns = self.pod_ns(pod)  # the sandbox goes once the node no longer routes to it
        netns.remove_namespaces([ns])
        with self.lock:
            if ns in self.namespaces:
                self.namespaces.remove(ns)
        ground: dict[str, dict[str, Any]] = {}
        events = self.out / "pods" / f"{pod.name}.jsonl"
        for line in events.read_text().splitlines() if events.exists() else []:
            row = json.loads(line)
            ground.setdefault(row["event"], row)
        with self.lock:
            self.terminations.append({
                "name": pod.name, "uid": pod.uid, "ip": pod.ip, "generation": pod.generation,
                "deleted_by_generation": pod.deleted_generation, "grace_s": pod.grace_s, "hook": hook,
                "prestop": {"kind": kind, "arg": arg},
                "t_ready": pod.ready_ns, "t_delete": pod.deleted_ns, "t_sigterm": t_sigterm,
                "t_server_sigterm": ground.get("sigterm", {}).get("time_ns", 0),
                "t_listener_closed": ground.get("listener_closed", {}).get("time_ns", 0),
                "t_exit": ground.get("exit", {}).get("time_ns", 0), "t_exit_observed": pod.finished_ns,
                "t_sigkill": t_kill,
                "t_rule_removed_due": self.proxy.removed_due.get(pod.ip, 0),
                "t_rule_removed_before": removed.before_ns if removed else 0,
                "t_rule_removed_after": removed.after_ns if removed else 0,
                "server_served": ground.get("exit", {}).get("served", 0),
                "server_aborted": ground.get("exit", {}).get("aborted", 0),
            })  # fmt: skip

    # -- the Job controller ----------------------------------------------------------------------------------
    def _jobs(self) -> None:
        jobs = {j["metadata"]["uid"]: j for j in self.server.objects("Job", NAMESPACE)}
        for uid, job in jobs.items():
            if uid not in self.loads:
                self.loads[uid] = self._start_load(job)
        for uid, load in list(self.loads.items()):
            if load.finished:
                continue
            if uid not in jobs:
                self._end_load(load, "the Job was deleted")
                continue
            code = load.proc.poll()
            if code is None and time.time_ns() > load.deadline_ns:
                self._end_load(load, "activeDeadlineSeconds")
                continue
            if code is not None and load.exit_code is None:
                load.exit_code = code
                phase = "Succeeded" if code == 0 else "Failed"
                with contextlib.suppress(KeyError):
                    self.server.set_status("Pod", NAMESPACE, load.pod, {"phase": phase, "containerStatuses": [
                        {"name": "load", "ready": False, "restartCount": 0,
                         "state": {"terminated": {"exitCode": code, "reason": "Completed" if code == 0 else "Error"}}}]})  # fmt: skip
                with contextlib.suppress(KeyError):
                    self.server.set_status(
                        "Job", NAMESPACE, load.job, {"active": 0, ("succeeded" if code == 0 else "failed"): 1}
                    )

    def _start_load(self, job: dict[str, Any]) -> _Load:
        name, uid = job["metadata"]["name"], job["metadata"]["uid"]
        template = (job.get("spec") or {}).get("template") or {}
        spec = copy.deepcopy(template.get("spec") or {})
        (container,) = spec.get("containers") or [{}]
        command = [str(a) for a in [*(container.get("command") or []), *(container.get("args") or [])]]
        if command[:1] == ["auditor"]:  # the image's entrypoint: this checkout's
            command = [sys.executable, "-m", "auditor", *command[1:]]
        pod_name = f"{name}-{safe_suffix(self.rng, 5)}"
        labels = {**((template.get("metadata") or {}).get("labels") or {}), "job-name": name,
                  "batch.kubernetes.io/job-name": name, "controller-uid": uid}  # fmt: skip
        spec["nodeName"] = NODE_NAME
        now = time.time_ns()
        self.server.create({
            "kind": "Pod", "apiVersion": "v1",
            "metadata": {"name": pod_name, "namespace": NAMESPACE, "labels": labels,
                         "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": name, "uid": uid,
                                              "controller": True, "blockOwnerDeletion": True}]},
            "spec": spec, "status": {"phase": "Pending"},
        })  # fmt: skip
        proc = subprocess.Popen(["ip", "netns", "exec", self.client, *command], cwd=REPO, stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
        deadline = (job.get("spec") or {}).get("activeDeadlineSeconds")
        grace = spec.get("terminationGracePeriodSeconds")
        load = _Load(name, uid, pod_name, proc, float(grace) if isinstance(grace, int) else 30.0, now,
                     now + int(deadline) * S if isinstance(deadline, int) else now + 3600 * S)  # fmt: skip
        for stream in (proc.stdout, proc.stderr):
            t = threading.Thread(target=load.pump, args=(stream,), name=f"log-{pod_name}", daemon=True)
            t.start()
            load.pumps.append(t)
        self.server.set_pod_log(NAMESPACE, pod_name, load.read)
        self.server.set_status("Pod", NAMESPACE, pod_name, {
            "phase": "Running", "podIP": CLIENT_IP, "podIPs": [{"ip": CLIENT_IP}], "hostIP": "10.1.0.1",
            "startTime": rfc3339(now),
            "containerStatuses": [{"name": container.get("name", "load"), "ready": True, "started": True,
                                   "restartCount": 0, "state": {"running": {"startedAt": rfc3339(now)}}}]})  # fmt: skip
        self.server.set_status("Job", NAMESPACE, name, {"active": 1, "startTime": rfc3339(now)})
        return load

    def _end_load(self, load: _Load, why: str) -> None:
        """The pod's termination (SIGTERM, SIGKILL after its grace) and its deletion."""
        load.finished = True
        load.stopped_ns = time.time_ns()
        code = stop(load.proc, signal.SIGTERM, load.grace_s)
        for t in load.pumps:
            t.join(timeout=5)
        with contextlib.suppress(KeyError):
            self.server.delete("Pod", NAMESPACE, load.pod)
        said = [x for x in load.read().decode(errors="replace").splitlines() if x.startswith("auditor load:")]
        retried = re.search(r"(\d+) retried", said[-1]) if said else None
        self.load_truth.append({"job": load.job, "pod": load.pod, "why_stopped": why, "t_start": load.started_ns,
                                "t_stop": load.stopped_ns, "exit_code": code, "log_bytes": len(load.log),
                                "summary": said[-1] if said else "", "retried": int(retried.group(1)) if retried else None})  # fmt: skip

    # -- the end ----------------------------------------------------------------------------------------------
    def finish(self) -> dict[str, Any]:
        """Stop the controllers and the load (if any), wait for the terminations, count the capture's truth."""
        self._stop.set()
        for t in self._controllers:
            t.join(timeout=30)
        for load in list(self.loads.values()):
            if not load.finished:
                self._end_load(load, "the lab stopped")
        for t in self.kubelets:
            t.join(timeout=self.ccfg.grace + self.ccfg.delay + 40)
        for capture in self.captures:
            stop(capture, signal.SIGINT, 10.0)
        self.captures = []
        pcap = self.out / "node.pcap"
        stale = count_stale_unreachables(self.out / "icmp.pcap", pcap, CLIENT_IP) if pcap.exists() else {}
        for ep in self.terminations:
            ep.update(rsts_since(pcap, ep["ip"], self.svc.target_port, ep["t_ready"]))
            ep["t_unreachable"] = stale.pop(ep["ip"], [])
            ep["unreachable"] = len(ep["t_unreachable"])
        agent = None
        if self.agent is not None:
            agent = {
                "log_dir": str(self.agent.log_dir),
                "exit_code": self.agent.stop(),
                "metrics_port": self.agent.port,
            }
        return {
            "config": asdict(self.ccfg), "run_id": self.run_id, "node": NODE,
            "service": {"namespace": self.svc.namespace, "name": self.svc.name, "cluster_ip": self.svc.cluster_ip,
                        "port": self.svc.port, "target_port": self.svc.target_port},
            "client_ip": CLIENT_IP, "rollouts": self.rollouts, "terminations": self.terminations,
            "loads": self.load_truth, "unreachable_elsewhere": stale, "agent": agent,
            "errors": self.errors + self.proxy.errors, "kube_events": self.stream.count,
        }  # fmt: skip

    def close(self) -> None:
        self._stop.set()
        for load in self.loads.values():
            if load.proc.poll() is None:
                load.proc.kill()
        self.proxy.stop()
        super().close()  # the API server too (self.api)


class LabCluster:
    """The lab cluster as a context manager (root; takes the lab lock): ``kubeconfig`` while it runs,
    :meth:`finish` for the truth (also written to ``truth.json`` on exit)."""

    def __init__(self, cfg: ClusterConfig, out: Path) -> None:
        self.cfg, self.out = cfg, out
        self.truth: dict[str, Any] = {}
        self._lab: _ClusterLab | None = None
        self._lock: contextlib.ExitStack | None = None

    @property
    def kubeconfig(self) -> Path:
        assert self._lab is not None
        return self._lab.cluster_api.kubeconfig

    @property
    def server(self) -> ProxyApiServer:
        assert self._lab is not None
        return self._lab.server

    def __enter__(self) -> LabCluster:
        self.out.mkdir(parents=True, exist_ok=True)
        self._lock = contextlib.ExitStack()
        self._lock.enter_context(exclusive_host())
        try:
            remove_stale_namespaces()
            self._lab = _ClusterLab(self.cfg, self.out)
            self._lab.setup()
        except BaseException:  # the setup's error, not one of the cleanup's
            if self._lab is not None:
                with contextlib.suppress(Exception):
                    self._lab.close()
            self._lab = None
            self._lock.close()
            self._lock = None
            raise
        return self

    def finish(self) -> dict[str, Any]:
        """Stop the controllers, the load and the agent; the truth (idempotent)."""
        if not self.truth and self._lab is not None:
            self.truth = self._lab.finish()
            (self.out / "truth.json").write_text(json.dumps(self.truth, indent=2, default=str) + "\n")
        return self.truth

    def __exit__(self, *exc: object) -> None:
        try:
            if self._lab is not None:
                try:
                    self.finish()
                finally:
                    self._lab.close()
        finally:
            if self._lock is not None:
                self._lock.close()
            self._lock = None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.lab.cluster", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    d = ClusterConfig()
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--delay", type=float, default=d.delay)
    parser.add_argument("--grace", type=int, default=d.grace)
    parser.add_argument("--prestop", type=int, default=d.prestop)
    parser.add_argument("--no-agent", action="store_true")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("tests.lab.cluster: needs root (network namespaces, iptables)", file=sys.stderr)
        return 2
    cfg = ClusterConfig(delay=args.delay, grace=args.grace, prestop=args.prestop, agent=not args.no_agent)
    with LabCluster(cfg, args.out) as cluster:
        print(f"kubeconfig: {cluster.kubeconfig}  (Ctrl-C stops the lab)", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            while True:
                time.sleep(1)
    return 0


if __name__ == "__main__":
    random.seed()
    sys.exit(main())
