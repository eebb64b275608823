"""The fix as a strategic-merge patch: a preStop that outlasts the propagation delay, a grace period that
covers it and the drain, and a readinessProbe suggestion where there is none.

The preStop action depends on the API server (``GET /version``), because of the feature gate
``PodLifecycleSleepAction`` (KEP-3960) behind ``lifecycle.preStop.sleep.seconds``:

=============  ==============================  =============================================
server         state                           the patch uses
=============  ==============================  =============================================
< 1.29         absent (the field is dropped)   ``exec: {command: ["sleep", "N"]}``
1.29           alpha, off by default           ``exec`` sleep
1.30 - 1.33    beta, on by default             the native ``sleep`` action
>= 1.34        GA                              the native ``sleep`` action
=============  ==============================  =============================================

An ``exec`` sleep needs a ``sleep`` binary in the image: the patch says so, louder when the image looks
shell-less (distroless, scratch, Chainguard). A server where the gate was turned off drops the field
silently: the runner reads the workload back after ``--apply`` and says so.

Existing hooks are extended, never replaced (a hook has one action):

* a native sleep or an exec that only sleeps, shorter than needed: its seconds raised;
* an exec running a shell script (``sh -c '...'``): ``sleep N && `` prefixed to the script;
* an exec running a program directly: wrapped as ``/bin/sh -c 'sleep N && exec <program ...>'`` (the
  image needs a shell), or, in a shell-less image, left alone with what to do instead;
* an exec that needs a shell in a shell-less image never ran: replaced by the native sleep (said so);
* an httpGet or tcpSocket hook: left alone, with what to do instead.

Containers are addressed by name (the ``containers`` list merges by name in a strategic merge), and the
patch carries ``apiVersion``, ``kind`` and ``metadata`` so it also works as a kustomize patch. The
recommended seconds come from the audit's recommendation (plain numbers here).
"""

from __future__ import annotations

import math
import shlex
from dataclasses import dataclass, field
from typing import Any

from auditor.rollout.static import DEFAULT_DRAIN_S
from auditor.rollout.workload import (
    SHELLS,
    WorkloadRef,
    exec_command,
    first_port,
    grace_seconds,
    hook_action,
    looks_shell_less,
    needs_shell,
    prestop,
    program,
    serving_containers,
)
from auditor.rollout.yamltext import to_yaml

GA_MINOR, BETA_MINOR, ALPHA_MINOR = 34, 30, 29
ACTIONS = ("auto", "sleep", "exec")


@dataclass(frozen=True)
class SleepSupport:
    """Whether the server takes the native preStop sleep action, and why."""

    native: bool
    state: str  # "GA" | "beta" | "alpha" | "absent" | "unknown"
    version: str

    def line(self) -> str:
        what = {
            "GA": "GA since 1.34",
            "beta": "beta, on by default since 1.30 (feature gate PodLifecycleSleepAction)",
            "alpha": "alpha in 1.29, off by default (feature gate PodLifecycleSleepAction)",
            "absent": "not available before 1.29",
            "unknown": "the server's version is unknown",
        }[self.state]
        use = "native sleep action" if self.native else "exec sleep"
        return f"server {self.version}: lifecycle.preStop.sleep {what}: {use}"


def sleep_support(major: int | None, minor: int | None, version: str = "", action: str = "auto") -> SleepSupport:
    """From the server's major/minor version; ``action`` ``sleep`` or ``exec`` overrides the choice."""
    shown = version or (f"v{major}.{minor}" if major is not None and minor is not None else "unknown")
    if major is None or minor is None:
        state = "unknown"
    elif major > 1 or minor >= GA_MINOR:
        state = "GA"
    elif minor >= BETA_MINOR:
        state = "beta"
    elif minor == ALPHA_MINOR:
        state = "alpha"
    else:
        state = "absent"
    native = state in ("GA", "beta") if action == "auto" else action == "sleep"
    return SleepSupport(native, state, shown)


@dataclass
class FixPatch:
    """The patch: ``document`` (with apiVersion, kind, metadata: for files and kustomize), ``body`` (what is
    sent to the API: ``{"spec": ...}``), ``text`` (the YAML with its comments)."""

    document: dict[str, Any]
    body: dict[str, Any]
    text: str
    prestop_seconds: int
    grace_seconds: int
    grace_needed: int  # what preStop + drain + margin needs (the patch never lowers the current value)
    action: str  # "sleep" | "exec" | "mixed" | "none" (no container changed)
    changed: bool  # False: the workload already has what the patch would set
    changes: list[str] = field(default_factory=list)  # one line per change
    warnings: list[str] = field(default_factory=list)  # what the patch cannot fix, what the image needs

    def as_dict(self) -> dict[str, Any]:
        return {
            "prestop_seconds": self.prestop_seconds, "termination_grace_period_seconds": self.grace_seconds,
            "termination_grace_period_seconds_needed": self.grace_needed,
            "action": self.action, "changed": self.changed, "changes": self.changes, "warnings": self.warnings,
            "patch": self.document, "yaml": self.text,
        }  # fmt: skip


@dataclass
class _Plan:
    hook: dict[str, Any] | None = None  # the new preStop (None: unchanged)
    action: str = ""  # "sleep" | "exec" when changed
    hook_s: float = 0.0  # how long the hook delays SIGTERM after the patch
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def build_patch(
    ref: WorkloadRef,
    obj: dict[str, Any],
    prestop_seconds: int,
    grace_seconds_needed: int | None,
    support: SleepSupport,
    *,
    drain_s: float | None = None,
    margin_s: float = 0.5,
    basis: str = "",
    wanted: tuple[str, ...] = (),
) -> FixPatch:
    """The patch that gives the serving containers (``wanted``, else those with ports, else all) a preStop
    of at least ``prestop_seconds`` and the pod ``terminationGracePeriodSeconds`` of at least
    ``grace_seconds_needed`` (None: preStop + ``drain_s`` + margin), never lowering what is there."""
    p = max(1, math.ceil(prestop_seconds))
    drain = DEFAULT_DRAIN_S if drain_s is None else drain_s
    base = "spec", "template", "spec"
    comments: dict[tuple[str, ...], list[str]] = {}
    entries: list[dict[str, Any]] = []
    changes: list[str] = []
    warnings: list[str] = []
    actions: set[str] = set()
    longest = float(p)
    for c in serving_containers(obj, wanted):
        name = str(c.get("name") or "")
        plan = _plan(c, p, support)
        entry: dict[str, Any] = {"name": name}
        if plan.hook is not None:
            entry["lifecycle"] = {"preStop": plan.hook}
            actions.add(plan.action)
            changes.append(f"container {name}: {plan.notes[0]}")
        longest = max(longest, plan.hook_s)
        notes = [f"{name}: {n}" for n in plan.notes] + [f"{name}: WARNING: {w}" for w in plan.warnings]
        warnings += [f"container {name}: {w}" for w in plan.warnings]
        if not isinstance(c.get("readinessProbe"), dict):
            notes += _readiness_suggestion(name, c)
        if plan.hook is not None or notes:
            entries.append(entry)
            comments[(*base, "containers", name)] = notes
    current = grace_seconds(obj)
    needed = grace_seconds_needed if grace_seconds_needed is not None else math.ceil(p + drain + margin_s)
    needed = max(needed, math.ceil(longest + drain + margin_s) if longest > p else needed)
    grace = max(current, needed)
    if grace > current:
        changes.append(f"terminationGracePeriodSeconds {current} -> {grace} s")
        grace_note = (f"terminationGracePeriodSeconds: {current} -> {grace} s (>= preStop {longest:g} s + drain "
                      f"{drain:.1f} s + margin {margin_s:g} s)")  # fmt: skip
    else:
        grace_note = (f"terminationGracePeriodSeconds: {current} s already >= {needed} s = preStop {longest:g} s + "
                      f"drain {drain:.1f} s + margin {margin_s:g} s, rounded up (unchanged, written out for overlays)")  # fmt: skip
    comments[(*base, "terminationGracePeriodSeconds")] = [grace_note]
    spec: dict[str, Any] = {"terminationGracePeriodSeconds": grace}
    if entries:
        spec["containers"] = entries
    body = {"spec": {"template": {"spec": spec}}}
    metadata = {"name": ref.name, "namespace": ref.namespace}
    document = {"apiVersion": "apps/v1", "kind": ref.kind_name, "metadata": metadata, **body}
    action = "none" if not actions else actions.pop() if len(actions) == 1 else "mixed"
    header = [
        f"auditor rollout-test: the fix for {ref.qualified}",
        f"preStop >= {p} s, terminationGracePeriodSeconds {grace} s (>= {needed} s needed)" + (f"; {basis}" if basis else ""),
        support.line(),
        "existing preStop hooks are extended, not replaced (see each container)",
        f"apply: kubectl -n {ref.namespace} patch {ref.kind} {ref.name} --patch-file FILE "
        "(strategic merge), or list FILE under `patches:` in a kustomize overlay",
    ]
    text = "\n".join(f"# {h}" for h in header) + "\n" + to_yaml(document, comments)
    return FixPatch(document, body, text, p, grace, needed, action, bool(changes), changes, warnings)


def _native(p: int) -> dict[str, Any]:
    return {"sleep": {"seconds": p}}


def _plan(c: dict[str, Any], p: int, support: SleepSupport) -> _Plan:
    """What to do with one container's preStop hook."""
    kind, seconds = prestop(c)
    action = hook_action(c)
    image = str(c.get("image") or "")
    shell_less = looks_shell_less(image)
    if action == "":
        if support.native:
            return _Plan(_native(p), "sleep", p, [f"preStop added: native sleep {p} s"])
        plan = _Plan({"exec": {"command": ["sleep", str(p)]}}, "exec", p, [f"preStop added: exec sleep {p} s"])
        plan.warnings.append(f"the exec sleep needs a `sleep` binary in the image {image}" + (
            "; this image looks shell-less, so the hook would fail: use a server with the native sleep action "
            "(>= 1.30) or add a sleep binary" if shell_less else ""))  # fmt: skip
        return plan
    if action == "sleep":
        have = float(seconds or 0)
        if have >= p:
            return _Plan(None, "", have, [f"native preStop sleep {have:g} s already >= {p} s: unchanged"])
        return _Plan(_native(p), "sleep", p, [f"preStop extended: native sleep {have:g} -> {p} s"])
    if action == "exec":
        return _plan_exec(c, p, support, kind, seconds, shell_less)
    what = {"httpGet": "an httpGet", "tcpSocket": "a tcpSocket"}.get(action, "an unrecognized")
    plan = _Plan(None, "", 0.0, [f"preStop is {what} hook: not changed (a hook has one action)"])
    plan.warnings.append(
        f"cannot add a {p} s sleep to {what} preStop hook: make its endpoint wait {p} s before it answers "
        f"(the kubelet waits for the answer, within the grace period), or replace the hook with "
        f"`exec: sh -c 'sleep {p} && <the call>'` where the image has a shell"
    )
    return plan


def _plan_exec(
    c: dict[str, Any], p: int, support: SleepSupport, kind: str, seconds: float | None, shell_less: bool
) -> _Plan:
    command = exec_command(c)
    if needs_shell(command) and shell_less:
        if support.native:
            return _Plan(_native(p) | {"exec": None}, "sleep", p, [
                f"preStop exec {command[0]!r} cannot run in the shell-less image {c.get('image')} (it never "
                f"delayed anything): replaced by the native sleep {p} s"])  # fmt: skip
        plan = _Plan(None, "", 0.0, [f"preStop exec {command[0]!r} cannot run in this shell-less image: not changed"])
        plan.warnings.append(
            f"the image {c.get('image')} looks shell-less and server {support.version} has no native sleep "
            "action: upgrade to >= 1.30, or add a `sleep` binary to the image"
        )
        return plan
    name = program(command)
    if kind == "sleep" and name == "sleep":  # exec ["sleep", "N"]
        have = float(seconds or 0)
        if have >= p:
            return _Plan(None, "", have, [f"preStop exec sleep {have:g} s already >= {p} s: unchanged"])
        return _Plan({"exec": {"command": [command[0], str(p)]}}, "exec", p,
                     [f"preStop extended: exec sleep {have:g} -> {p} s"])  # fmt: skip
    if name in SHELLS and "-c" in command and command.index("-c") + 1 < len(command):
        i = command.index("-c") + 1
        script = command[i]
        if kind == "sleep" and (seconds or 0) >= p:
            return _Plan(None, "", float(seconds or 0), [f"preStop script sleeps {seconds:g} s already: unchanged"])
        new = [*command[:i], f"sleep {p} && {script}", *command[i + 1 :]]
        return _Plan({"exec": {"command": new}}, "exec", p + float(seconds or 0), [
            f"preStop extended: `sleep {p} && ` prefixed to its {name} -c script (the script still runs after it)"])  # fmt: skip
    if shell_less:
        plan = _Plan(None, "", float(seconds or 0), [f"preStop exec {command[0]!r}: not changed (no shell to chain a sleep)"])
        plan.warnings.append(
            f"cannot extend the preStop exec {shlex.join(command)!r}: a hook has one action and the image "
            f"{c.get('image')} has no shell to run `sleep {p}` before it: make {command[0]} wait {p} s before it "
            "stops the server, or do its work in the application's SIGTERM handler and use the native sleep action"
        )
        return plan
    wrapped = ["/bin/sh", "-c", f"sleep {p} && exec {shlex.join(command)}"]
    plan = _Plan({"exec": {"command": wrapped}}, "exec", p + float(seconds or 0), [
        f"preStop extended: {command[0]!r} wrapped as /bin/sh -c 'sleep {p} && exec ...'"])  # fmt: skip
    plan.warnings.append(f"the wrapped hook needs /bin/sh and sleep in the image {c.get('image')}")
    return plan


def _readiness_suggestion(name: str, c: dict[str, Any]) -> list[str]:
    port = first_port(c)
    target = port if port is not None else "PORT"
    return [
        f"{name}: no readinessProbe; a suggestion, NOT applied (check the path and the port):",
        "    readinessProbe:",
        f"      httpGet: {{path: /healthz, port: {target}}}",
        "      periodSeconds: 2",
        "      failureThreshold: 2",
    ]


__all__ = ["ACTIONS", "FixPatch", "SleepSupport", "build_patch", "sleep_support"]
