"""The experiment of every zero-downtime blog post, as one run: load, ``rollout restart``, count what failed,
explain it, write the fix, apply it, and run it all again.

:class:`RolloutTester` drives one workload through

1. ``GET /version`` and the workload; the static audit (:mod:`auditor.rollout.static`);
2. the load (:mod:`auditor.rollout.load`): a Job with the auditor image targeting the Service's ClusterIP
   (or ``--url``), or ``auditor load`` here with ``--from-here``; a warm-up;
3. the restart (the ``kubectl.kubernetes.io/restartedAt`` template annotation, a merge PATCH) and the
   rollout watched to completion (:mod:`auditor.rollout.status`), within a timeout;
4. a tail of load, then its records read from the pod's log; the Job deleted;
5. the evidence and the verdict (:mod:`auditor.rollout.evidence`);
6. the patch (:mod:`auditor.rollout.fix`) and, with ``apply``, the strategic-merge PATCH, its rollout, and
   steps 2-5 again.

The load Job is deleted whatever happens: :meth:`RolloutTester.run` cleans up in ``finally``, and the
command turns SIGINT and SIGTERM into :class:`Interrupted` so that the ``finally`` runs. Every API failure
ends as one :class:`~auditor.errors.AuditorError` line (a 403 names the verb and the resource).
"""

from __future__ import annotations

import shutil
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from auditor.correlate.recommend import Recommendation
from auditor.errors import AuditorError
from auditor.kubeapi.workloads import MERGE, KubeCallError, ServerVersion, WorkloadApi
from auditor.model.audit import EXIT_CODES
from auditor.model.kube import format_time_ns
from auditor.rollout.evidence import (
    SUMMARY_PERIOD_S,
    Analysis,
    analyze,
    collect_agents,
    find_agents,
    wait_summaries,
)
from auditor.rollout.fix import FixPatch, SleepSupport, build_patch, sleep_support
from auditor.rollout.load import (
    DEFAULT_IMAGE,
    LOAD_LABEL,
    LoadSpec,
    LocalLoad,
    Tally,
    job_name,
    load_job,
    split_log,
)
from auditor.rollout.progress import NullProgress, Progress
from auditor.rollout.static import DEFAULT_DRAIN_S, Finding, static_audit
from auditor.rollout.status import RolloutState, generation, restart_patch, rollout_state
from auditor.rollout.workload import (
    WorkloadRef,
    containers,
    grace_seconds,
    hook_action,
    match_labels,
    replicas,
    serving_containers,
    template_labels,
)

RBAC_FILE = "daemonset/rollout-test-rbac.yaml"
DEFAULT_PRESTOP_S = 5  # the preStop the fix uses when no agent measured the delay
_BAD_WAITING = {"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "CreateContainerConfigError",
                "CreateContainerError", "CrashLoopBackOff", "RunContainerError"}  # fmt: skip


class Interrupted(AuditorError):
    """SIGINT or SIGTERM reached the run (raised by the command's signal handler)."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(f"interrupted by {signal.Signals(signum).name}", "rollout-test")
        self.exit_code = 128 + signum


@dataclass
class RunOptions:
    ref: WorkloadRef
    work_dir: Path  # the records, the agents' logs and the analysis of each test go under it
    url: str | None = None
    service: str | None = None  # NAME or NAME:PORT
    path: str = "/"
    from_here: bool = False
    qps: int = 500
    connections: int = 50
    keepalive: bool = True
    duration_s: float | None = None  # total load time; None: until the rollout completes + tail
    warmup_s: float = 5.0
    tail_s: float = 10.0
    image: str = DEFAULT_IMAGE
    timeout_s: float = 300.0  # per rollout
    load_start_timeout_s: float = 120.0
    evidence: str = "auto"  # auto | agents | client
    agent_namespace: str = "auditor"
    agent_selector: str = "app.kubernetes.io/name=auditor"
    agent_port: int = 9808
    token: str | None = None
    margin_s: float = 0.5
    drain_s: float = DEFAULT_DRAIN_S
    default_prestop_s: int = DEFAULT_PRESTOP_S
    containers: tuple[str, ...] = ()
    prestop_action: str = "auto"
    apply: bool = False
    patch_out: Path | None = None
    poll_s: float = 0.5


@dataclass
class TestRun:
    label: str
    url: str
    load: str  # "job <name>" | "local"
    restart_at: str
    rollout_s: float
    rollout_summary: str
    analysis: Analysis
    agents: list[dict[str, Any]] = field(default_factory=list)  # per agent: what was collected
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        a = self.analysis
        return {
            "label": self.label, "url": self.url, "load": self.load, "restart_at": self.restart_at,
            "rollout_seconds": round(self.rollout_s, 3), "rollout": self.rollout_summary,
            "evidence": a.mode, "agents": self.agents, "client": a.client.as_dict(),
            "terminations": a.terminations, "verdict": a.verdict, "verdict_line": a.line,
            "notes": self.notes + a.notes, "analysis": a.document,
        }  # fmt: skip


@dataclass
class Outcome:
    ref: WorkloadRef
    server: ServerVersion
    support: SleepSupport
    findings: list[Finding]
    evidence_line: str
    tests: list[TestRun] = field(default_factory=list)
    patch: FixPatch | None = None
    patch_basis: str = ""
    measured: bool = False
    applied: bool = False
    apply_rollout_s: float | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def verdict(self) -> str:
        return self.tests[-1].analysis.verdict if self.tests else "INCONCLUSIVE"

    @property
    def exit_code(self) -> int:
        return EXIT_CODES.get(self.verdict, 3)


class LogFollower:
    """Follows the load pod's log in a thread for the progress display; keeps what it read as a fallback
    for the final read."""

    def __init__(self, api: WorkloadApi, namespace: str, pod: str) -> None:
        self.api, self.namespace, self.pod = api, namespace, pod
        self.tally = Tally()
        self.data = bytearray()
        self.error: str | None = None
        self._stop = threading.Event()
        self._stream: Any = None
        self._thread = threading.Thread(target=self._run, name=f"follow-{pod}", daemon=True)

    def start(self) -> LogFollower:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            skip = len(self.data)  # a reconnect starts from the beginning of the log again
            try:
                self._stream = self.api.follow_pod_log(self.namespace, self.pod)
                for chunk in self._stream:
                    if self._stop.is_set():
                        return
                    if skip:
                        cut = min(skip, len(chunk))
                        chunk, skip = chunk[cut:], skip - cut
                    if chunk:
                        self.data += chunk
                        self.tally.feed(chunk)
            except KubeCallError as exc:
                self.error = exc.line()
            self._stop.wait(1.0)

    def stop(self) -> None:
        self._stop.set()
        stream = self._stream
        if stream is not None:
            stream.close()
        self._thread.join(timeout=5)


class RolloutTester:
    def __init__(
        self, api_client: Any, options: RunOptions, progress: Progress | None = None,
        emit: Callable[[str], None] | None = None, clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:  # fmt: skip
        self.api_client = api_client
        self.api = WorkloadApi(api_client)
        self.o = options
        self.progress = progress or NullProgress()
        self.emit = emit or (lambda line: None)
        self.clock, self.sleep = clock, sleep
        self.phase_name = "start"
        self.cleaning = False
        self.cleanup_log: list[str] = []
        self._jobs: list[str] = []
        self._local: LocalLoad | None = None
        self._follower: LogFollower | None = None

    # -- the run ---------------------------------------------------------------------------------------
    def run(self) -> Outcome:
        try:
            return self._run()
        except KubeCallError as exc:
            raise AuditorError(exc.line(), "rollout-test", _hint(exc, self.o.ref)) from None
        finally:
            self.cleanup()

    def _phase(self, name: str, detail: str = "") -> None:
        self.phase_name = name
        self.progress.phase(name, detail)

    def _run(self) -> Outcome:
        ref, o = self.o.ref, self.o
        self._phase("static audit", str(ref))
        server = self.api.server_version()
        support = sleep_support(server.major, server.minor, server.text, o.prestop_action)
        obj = self._read_workload()
        self._check_testable(obj)
        findings = static_audit(ref.kind, obj, o.drain_s, o.containers)
        url = o.url or self._service_url(obj)
        agents, evidence_line = find_agents(self.api_client, o.agent_namespace, o.agent_selector, o.evidence)
        outcome = Outcome(ref, server, support, findings, evidence_line)
        self.emit_static(outcome, obj)
        before = self._test("before", url, agents)
        outcome.tests.append(before)
        self._emit_test(before)
        rec = before.analysis.recommendation
        outcome.patch, outcome.patch_basis, outcome.measured = self._patch(obj, support, rec)
        patch = outcome.patch
        self._emit_patch(outcome)
        if o.patch_out is not None:
            try:
                o.patch_out.write_text(patch.text, encoding="utf-8")
            except OSError as exc:
                raise AuditorError(f"cannot write the patch ({exc.strerror})", str(o.patch_out), "check --patch-out") from None
        if not o.apply:
            return outcome
        if not patch.changed:
            outcome.notes.append("--apply: the workload already has what the patch sets; nothing applied")
            return outcome
        if outcome.verdict == "SAFE":
            outcome.notes.append("--apply: the test found no gap; the patch is applied anyway, as asked")
        outcome.apply_rollout_s = self._apply(patch)
        outcome.applied = True
        self.emit(f"applied: {'; '.join(patch.changes)}; rollout complete in {outcome.apply_rollout_s:.1f} s")
        settled = self._settle(obj, rec)
        self.emit(f"before the re-run: {settled}")
        after = self._test("after", url, agents)
        outcome.tests.append(after)
        self._emit_test(after)
        return outcome

    def emit_static(self, outcome: Outcome, obj: dict[str, Any]) -> None:
        from auditor.rollout.report import static_lines

        for line in static_lines(outcome, obj):
            self.emit(line)

    def _emit_patch(self, outcome: Outcome) -> None:
        from auditor.rollout.report import patch_lines

        for line in patch_lines(outcome, self.o.patch_out):
            self.emit(line)

    def _emit_test(self, run: TestRun) -> None:
        from auditor.rollout.report import test_lines

        for line in test_lines(run):
            self.emit(line)

    # -- the workload --------------------------------------------------------------------------------------
    def _read_workload(self) -> dict[str, Any]:
        ref = self.o.ref
        try:
            return self.api.read_workload(ref.kind, ref.namespace, ref.name)
        except KubeCallError as exc:
            if exc.not_found:
                raise AuditorError(
                    f"{ref.kind} {ref.namespace}/{ref.name} not found", "rollout-test",
                    f"check the name and -n/--namespace (kubectl -n {ref.namespace} get {ref.kind}s)",
                ) from None  # fmt: skip
            raise

    def _check_testable(self, obj: dict[str, Any]) -> None:
        ref = self.o.ref
        n = replicas(ref.kind, obj)
        if n == 0:
            raise AuditorError(f"{ref.qualified} has 0 replicas: a restart replaces no pod", "rollout-test",
                               "scale it up first")  # fmt: skip
        strategy = ((obj.get("spec") or {}).get("updateStrategy") or {}).get("type")
        if ref.kind != "deployment" and strategy == "OnDelete":
            raise AuditorError(f"{ref.qualified} has updateStrategy OnDelete: a restart replaces no pod",
                               "rollout-test", "test it with a RollingUpdate strategy")  # fmt: skip
        names = {str(c.get("name")) for c in containers(obj)}
        missing = [c for c in self.o.containers if c not in names]
        if missing:
            raise AuditorError(f"no container named {', '.join(missing)} in {ref.qualified}", "--container")

    def _service_url(self, obj: dict[str, Any]) -> str:
        """``http://<ClusterIP>:<port><path>`` of the Service that selects the workload's pods."""
        ref, o = self.o.ref, self.o
        name, _, port_text = (o.service or "").partition(":")
        if name:
            services = [self.api.read_service(ref.namespace, name)]
        else:
            labels = template_labels(obj)
            services = [
                s for s in self.api.list_services(ref.namespace)
                if (sel := (s.get("spec") or {}).get("selector")) and all(labels.get(k) == v for k, v in sel.items())
            ]  # fmt: skip
            if not services:
                raise AuditorError(f"no Service selects the pods of {ref.qualified}", "rollout-test",
                                   "pass --service NAME or --url URL")  # fmt: skip
            if len(services) > 1:
                names = ", ".join(sorted(str((s.get("metadata") or {}).get("name")) for s in services))
                raise AuditorError(f"several Services select the pods of {ref.qualified} ({names})", "rollout-test",
                                   "choose one with --service NAME")  # fmt: skip
        svc = services[0]
        spec = svc.get("spec") or {}
        svc_name = (svc.get("metadata") or {}).get("name")
        ip = spec.get("clusterIP")
        if not ip or ip == "None":
            raise AuditorError(f"Service {svc_name} has no ClusterIP (headless)", "rollout-test", "pass --url URL")
        ports = [p for p in spec.get("ports") or [] if isinstance(p, dict)]
        chosen = next((p for p in ports if port_text in (str(p.get("port")), str(p.get("name")))), None) if port_text else (ports[0] if ports else None)
        if chosen is None:
            raise AuditorError(f"Service {svc_name} has no port {port_text or ''}".strip(), "--service", "use NAME:PORT")
        host = f"[{ip}]" if ":" in str(ip) else str(ip)
        return f"http://{host}:{chosen.get('port')}{o.path}"

    # -- one test ----------------------------------------------------------------------------------------
    def _test(self, label: str, url: str, agents: list[Any]) -> TestRun:
        o, ref = self.o, self.o.ref
        d = o.work_dir / label
        d.mkdir(parents=True, exist_ok=True)
        bound = o.duration_s or (o.warmup_s + o.timeout_s + o.tail_s + 60)
        spec = LoadSpec(url, o.qps, o.connections, o.keepalive, bound)
        load_started = self.clock()
        wall_started = time.time()
        job = self._start_load(spec, d)
        self._phase(f"{label}: warm-up", f"{o.warmup_s:g} s of load before the restart")
        self._wait(o.warmup_s)
        restart_ns = time.time_ns()
        stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        self._phase(f"{label}: rollout", f"restart of {ref}")
        restarted = self.api.patch_workload(ref.kind, ref.namespace, ref.name, restart_patch(stamp), MERGE)
        rollout_s, state = self._wait_rollout(f"{label}: rollout", generation(restarted))
        end_at = max(self.clock() + o.tail_s, load_started + (o.duration_s or 0))
        self._phase(f"{label}: tail", f"{max(0.0, end_at - self.clock()):.1f} s more load after the rollout")
        self._wait(max(0.0, end_at - self.clock()))
        self._phase(f"{label}: records", "reading the load's records")
        client_file = d / "client.json"
        notes = self._stop_load(job, client_file)
        results: list[dict[str, Any]] = []
        logs: Path | None = None
        if agents:
            self._phase(f"{label}: evidence", "waiting for the agents' summaries to cover the test")
            notes += wait_summaries(self.api_client, o.agent_namespace, agents, o.agent_port, time.time(),
                                    SUMMARY_PERIOD_S + 5.0, o.token, self.sleep, self.clock)  # fmt: skip
            self._phase(f"{label}: evidence", f"collecting {len(agents)} agent log(s)")
            logs = d / "agents"
            since = time.time() - wall_started + 120
            collected = collect_agents(self.api_client, o.agent_namespace, o.agent_selector, agents, o.agent_port,
                                       logs, since, 30.0, o.token)  # fmt: skip
            results = [r.as_dict() for r in collected]
            notes += [r.line() for r in collected if not r.ok]
        self._phase(f"{label}: analysis", "")
        analysis = analyze(ref, client_file, logs, restart_ns, o.margin_s)
        return TestRun(label, url, f"job {job}" if job else "local", format_time_ns(restart_ns), rollout_s,
                       state.summary, analysis, results, notes)  # fmt: skip

    def _wait(self, seconds: float) -> None:
        """Sleep in short steps, updating the load's counts."""
        end = self.clock() + seconds
        while (left := end - self.clock()) > 0:
            self._update_counts()
            self.sleep(min(self.o.poll_s, left))
        self._update_counts()

    def _update_counts(self) -> None:
        if self._local is not None:
            self.progress.counts(*self._local.poll())
        elif self._follower is not None:
            self.progress.counts(*self._follower.tally.snapshot())
        else:
            self.progress.counts(None)

    def _wait_rollout(self, phase: str, min_generation: int) -> tuple[float, RolloutState]:
        ref, o = self.o.ref, self.o
        start = self.clock()
        while True:
            obj = self.api.read_workload(ref.kind, ref.namespace, ref.name)
            state = rollout_state(ref.kind, obj, min_generation)
            self._phase(phase, state.summary)
            self._update_counts()
            if state.done:
                return self.clock() - start, state
            if state.stalled:
                raise AuditorError(
                    f"the rollout of {ref.qualified} stalled: {state.summary}; {state.stalled}", "rollout-test",
                    f"kubectl -n {ref.namespace} describe {ref.kind} {ref.name}",
                )  # fmt: skip
            if self.clock() - start > o.timeout_s:
                raise AuditorError(
                    f"the rollout of {ref.qualified} did not complete within {o.timeout_s:g} s: {state.summary}",
                    "rollout-test",
                    f"look at its new pods and their events (kubectl -n {ref.namespace} get pods,events); "
                    "raise --timeout if it is only slow",
                )  # fmt: skip
            self.sleep(o.poll_s)

    # -- the load ------------------------------------------------------------------------------------------
    def _start_load(self, spec: LoadSpec, d: Path) -> str | None:
        o, ref = self.o, self.o.ref
        if o.from_here:
            self._phase("load", f"auditor load here -> {spec.url}")
            self._local = LocalLoad(spec, d / "client.local.json")
            self._local.start()
            return None
        name = job_name(ref)
        self._phase("load", f"Job {name} -> {spec.url}")
        self._jobs.append(name)  # before the call: an interrupt during it still deletes the Job
        self.api.create_job(ref.namespace, load_job(ref, spec, name, o.image))
        pod = self._wait_load_pod(name)
        self._follower = LogFollower(self.api, ref.namespace, pod).start()
        return name

    def _wait_load_pod(self, job: str) -> str:
        o, ns = self.o, self.o.ref.namespace
        start = self.clock()
        while True:
            state = "no pod yet"
            for pod in self.api.list_pods(ns, f"{LOAD_LABEL}={job}"):
                name = str((pod.get("metadata") or {}).get("name"))
                status = pod.get("status") or {}
                phase = status.get("phase") or "Pending"
                if phase == "Running":
                    return name
                if phase in ("Succeeded", "Failed"):
                    tail = self._log_tail(name)
                    raise AuditorError(
                        f"the load pod {name} ended ({phase}) before the test began" + (f": {tail}" if tail else ""),
                        "rollout-test", f"check that the image {o.image} runs `auditor load` (--image)",
                    )  # fmt: skip
                for cs in status.get("containerStatuses") or []:
                    waiting = ((cs or {}).get("state") or {}).get("waiting") or {}
                    reason = str(waiting.get("reason") or "")
                    if reason in _BAD_WAITING:
                        raise AuditorError(
                            f"the load pod {name} cannot start: {reason}: {waiting.get('message') or ''}".rstrip(": "),
                            "rollout-test", f"pass --image with an auditor image the cluster can pull (now {o.image})",
                        )  # fmt: skip
                    state = reason or phase
            self._phase("load", f"waiting for the load pod ({state})")
            if self.clock() - start > o.load_start_timeout_s:
                raise AuditorError(
                    f"the load pod of Job {job} did not start within {o.load_start_timeout_s:g} s ({state})",
                    "rollout-test", f"kubectl -n {ns} describe job {job}",
                )  # fmt: skip
            self.sleep(o.poll_s)

    def _log_tail(self, pod: str) -> str:
        try:
            lines = self.api.pod_log(self.o.ref.namespace, pod).decode(errors="replace").strip().splitlines()
        except KubeCallError:
            return ""
        return lines[-1][:200] if lines else ""

    def _stop_load(self, job: str | None, out: Path) -> list[str]:
        """Stop the load, write its records to ``out``; notes on what was lost."""
        notes: list[str] = []
        if job is None:
            local = self._local
            assert local is not None
            local.stop()
            status = local.exit_status()
            data = local.out.read_bytes() if local.out.is_file() else b""
            if not data.strip():
                raise AuditorError(f"the local load wrote no records (exit status {status}): {local.stderr_tail()}",
                                   "rollout-test", "check `python -m auditor load --help` works here")  # fmt: skip
            shutil.copyfile(local.out, out)
            said = local.stderr_tail()
            if said:
                notes.append(f"the load said: {said[:300]}")
            self._local = None
            return notes
        follower = self._follower
        pod = follower.pod if follower else ""
        try:
            data = self.api.pod_log(self.o.ref.namespace, pod)
        except KubeCallError as exc:
            if follower is None or not follower.data:
                raise
            notes.append(f"the final read of the load's log failed ({exc.line()}): records as followed")
            data = bytes(follower.data)
        if follower is not None:
            follower.stop()
            self._follower = None
        records, other = split_log(data)
        out.write_bytes(records)
        self._delete_job(job)
        if not records.strip():
            said = f": {other[-1][:200]}" if other else ""
            raise AuditorError(f"the load pod {pod} logged no records{said}", "rollout-test",
                               f"check that the image {self.o.image} runs `auditor load` (--image)")  # fmt: skip
        notes += [f"the load said: {line[:300]}" for line in other[-2:]]
        return notes

    def _delete_job(self, name: str) -> None:
        ns = self.o.ref.namespace
        try:
            gone = self.api.delete_job(ns, name)
        except KubeCallError as exc:
            self.cleanup_log.append(
                f"could not delete the load Job {name}: {exc.line()}; delete it: kubectl -n {ns} delete job {name}"
            )
            if name in self._jobs:
                self._jobs.remove(name)
            return
        if name in self._jobs:
            self._jobs.remove(name)
        self.cleanup_log.append(f"deleted the load Job {name}" if gone else f"the load Job {name} was already gone")

    def cleanup(self) -> None:
        """Stop the load and delete every Job this run created (idempotent)."""
        self.cleaning = True
        if self._follower is not None:
            self._follower.stop()
            self._follower = None
        if self._local is not None:
            self._local.stop()
            self._local = None
        for name in list(self._jobs):
            self._delete_job(name)

    # -- the fix --------------------------------------------------------------------------------------------
    def _patch(self, obj: dict[str, Any], support: SleepSupport, rec: Recommendation | None) -> tuple[FixPatch, str, bool]:
        o = self.o
        if rec is not None and rec.prestop_seconds:
            basis = rec.basis
            patch = build_patch(o.ref, obj, rec.prestop_seconds, rec.termination_grace_period_seconds, support,
                                drain_s=rec.max_drain_s, margin_s=o.margin_s, basis=basis, wanted=o.containers)  # fmt: skip
            return patch, basis, True
        basis = (f"not measured: preStop {o.default_prestop_s} s is a default (no node agent measured the "
                 f"propagation delay), drain {o.drain_s:g} s assumed")  # fmt: skip
        patch = build_patch(o.ref, obj, o.default_prestop_s, None, support, drain_s=o.drain_s, margin_s=o.margin_s,
                            basis=basis, wanted=o.containers)  # fmt: skip
        return patch, basis, False

    def _apply(self, patch: FixPatch) -> float:
        ref = self.o.ref
        self._phase("apply", f"patching {ref}")
        patched = self.api.patch_workload(ref.kind, ref.namespace, ref.name, patch.body)
        self._check_applied(patch, patched)
        rollout_s, _ = self._wait_rollout("apply: rollout", generation(patched))
        return rollout_s

    def _settle(self, obj: dict[str, Any], rec: Recommendation | None) -> str:
        """Before the re-run: a rollout is complete once its last old pod is *deleted*, not gone, and the nodes
        route to the old pods (which have no fix yet) until they learn of it; load started at once measures
        their gap, not the fix's. So wait until no pod of the workload is terminating (bounded by the old
        grace period + 30 s), then the propagation delay measured (else the default preStop) + margin.
        Returns what was waited for."""
        ref, o = self.o.ref, self.o
        selector = match_labels(obj)
        start = self.clock()
        note = ""
        if selector:
            limit = grace_seconds(obj) + 30.0
            while True:
                pods = self.api.list_pods(ref.namespace, selector)
                left = [p for p in pods if (p.get("metadata") or {}).get("deletionTimestamp")]
                if not left:
                    break
                if self.clock() - start > limit:
                    note = f"; {len(left)} old pod(s) still terminating after {limit:g} s: the re-run may see them"
                    break
                self._phase("apply: settle", f"{len(left)} old pod(s) still terminating")
                self._update_counts()
                self.sleep(self.o.poll_s)
        else:
            note = "; the workload's selector has no matchLabels: its terminating pods were not watched"
        waited = self.clock() - start
        measured = rec is not None and rec.max_propagation_delay_s is not None
        delay = rec.max_propagation_delay_s if rec is not None and rec.max_propagation_delay_s is not None else float(o.default_prestop_s)
        allowance = delay + o.margin_s
        self._phase("apply: settle", f"{allowance:.1f} s for every node to stop routing to the old pods")
        self._wait(allowance)
        what = "the propagation delay measured" if measured else "the default preStop (no delay measured)"
        return (f"the old pods were gone {waited:.1f} s after the rollout completed{note}; then {allowance:.1f} s "
                f"({what} + margin) for the nodes to stop routing to them")  # fmt: skip

    def _check_applied(self, patch: FixPatch, patched: dict[str, Any]) -> None:
        """A server whose PodLifecycleSleepAction gate is off drops ``lifecycle.preStop.sleep`` silently."""
        ref = self.o.ref
        wanted = {str(c["name"]) for c in patch.body["spec"]["template"]["spec"].get("containers", [])
                  if "sleep" in ((c.get("lifecycle") or {}).get("preStop") or {})}  # fmt: skip
        for c in serving_containers(patched, tuple(wanted)) if wanted else []:
            if hook_action(c) != "sleep":
                raise AuditorError(
                    f"the server dropped lifecycle.preStop.sleep of container {c.get('name')} in {ref.qualified}: "
                    "its feature gate PodLifecycleSleepAction is off", "rollout-test",
                    "run again with --prestop-action exec (the image needs a sleep binary)",
                )  # fmt: skip


def _hint(exc: KubeCallError, ref: WorkloadRef) -> str:
    if exc.forbidden:
        return (f"{RBAC_FILE} has the roles rollout-test needs (kubectl -n {ref.namespace} create rolebinding "
                f"auditor-rollout-test --clusterrole=auditor-rollout-test --user=YOU)")  # fmt: skip
    if exc.status == 401:
        return "check the kubeconfig's credentials (--kubeconfig)"
    if not exc.answered:
        return "check the cluster is reachable (--kubeconfig)"
    return "see the API server's message"


__all__ = [
    "DEFAULT_PRESTOP_S",
    "RBAC_FILE",
    "Interrupted",
    "LogFollower",
    "Outcome",
    "RolloutTester",
    "RunOptions",
    "TestRun",
]
