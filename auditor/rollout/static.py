"""The static audit: what the workload's own manifest says about its rolling updates, before anything runs.

Pure functions on the workload object as the API serves it (a dict). Each :class:`Finding` says what,
why it loses requests, and the fix. What cannot be known from the manifest is said as a note: whether
the application keeps answering (and its readiness probe keeps passing) after SIGTERM is up to the code
in the image; the test measures it (requests that fail after a pod's SIGTERM are counted by cause).

Which check applies where:

============================  ==========  ===========  =========
check                         Deployment  StatefulSet  DaemonSet
============================  ==========  ===========  =========
no readinessProbe             yes         yes          yes
no preStop                    yes         yes          yes
grace < preStop + drain       yes         yes          yes
exec preStop, shell-less      yes         yes          yes
maxUnavailable = every pod    yes         yes          yes (known size)
Recreate strategy             yes         --           --
a single replica              yes         yes          --
============================  ==========  ===========  =========
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from auditor.rollout.workload import (
    containers,
    exec_command,
    grace_seconds,
    int_or_percent,
    looks_shell_less,
    needs_shell,
    prestop,
    replicas,
    serving_containers,
)

DEFAULT_DRAIN_S = 5.0  # assumed time a server needs after SIGTERM for its in-flight requests (not measured)
SEVERITIES = ("error", "warning", "note")
NATIVE_SLEEP = (
    "the native sleep action `lifecycle.preStop.sleep.seconds` (no binary needed in the image; "
    "beta and on by default since Kubernetes 1.30, GA in 1.34)"
)


@dataclass(frozen=True)
class Finding:
    code: str  # stable identifier, e.g. "no-prestop"
    severity: str  # "error" (loses requests in most rollouts) | "warning" | "note"
    subject: str  # "container web", "strategy", "replicas", "" (the workload)
    message: str
    why: str
    fix: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def line(self) -> str:
        where = f" ({self.subject})" if self.subject else ""
        return f"{self.severity.upper()} {self.code}{where}: {self.message}"


def static_audit(
    kind: str, obj: dict[str, Any], drain_s: float = DEFAULT_DRAIN_S, wanted: tuple[str, ...] = ()
) -> list[Finding]:
    """Every finding for the workload (``kind``: deployment, statefulset, daemonset), errors first.
    ``drain_s``: the time assumed for the application's drain after SIGTERM; ``wanted``: the containers
    the Service reaches (default: those with ports, else all)."""
    found: list[Finding] = []
    serving = serving_containers(obj, wanted)
    for c in serving:
        found += _container_findings(c)
    found += _grace(obj, serving, drain_s)
    for c in containers(obj):
        found += _shell_less(c)
    found += _strategy(kind, obj)
    found.append(Finding(
        "readiness-after-sigterm", "note", "",
        "whether the application keeps serving (and its readiness probe keeps passing) after SIGTERM is "
        "not knowable from the manifest: the test will check it",
        "a server that stops accepting at SIGTERM refuses the connections nodes still route to it; one that "
        "drops kept-alive connections mid-request resets them; neither shows in the manifest",
        "run the test: refusals and resets after each pod's SIGTERM are counted by cause",
    ))  # fmt: skip
    order = {s: i for i, s in enumerate(SEVERITIES)}
    return sorted(found, key=lambda f: order[f.severity])


def _container_findings(c: dict[str, Any]) -> list[Finding]:
    name = f"container {c.get('name', '?')}"
    out: list[Finding] = []
    if not isinstance(c.get("readinessProbe"), dict):
        out.append(Finding(
            "no-readiness-probe", "warning", name, "no readinessProbe",
            "a new pod is added to the Service's endpoints as soon as its container starts, before it "
            "listens: new connections to it are refused during every rollout",
            "add a readinessProbe on the serving port (httpGet on a health path, or tcpSocket)",
        ))  # fmt: skip
    kind, _ = prestop(c)
    if kind == "none":
        out.append(Finding(
            "no-prestop", "error", name, "no preStop hook",
            "SIGTERM arrives as soon as the pod is deleted, while every node's kube-proxy, ingress and "
            "load balancer still send it new connections until they learn of the deletion (their "
            "propagation delay): those connections are refused or reset",
            f"a preStop sleep longer than the slowest propagation delay, with {NATIVE_SLEEP}; the test "
            "measures the delay and writes the patch",
        ))  # fmt: skip
    return out


def _grace(obj: dict[str, Any], serving: list[dict[str, Any]], drain_s: float) -> list[Finding]:
    sleeps = [s for k, s in (prestop(c) for c in serving) if s is not None and k in ("sleep", "exec")]
    longest, grace = max(sleeps, default=0.0), grace_seconds(obj)
    if grace >= longest + drain_s:
        return []
    severity = "error" if grace <= longest else "warning"
    return [Finding(
        "grace-too-short", severity, "terminationGracePeriodSeconds",
        f"terminationGracePeriodSeconds {grace} s is shorter than preStop {longest:g} s + drain {drain_s:g} s",
        "the grace period counts from the deletion and includes the preStop hook: the application gets only "
        f"{max(0.0, grace - longest):g} s after SIGTERM to finish its requests before SIGKILL",
        f"set terminationGracePeriodSeconds >= {int(longest + drain_s + 0.999)} (preStop + the drain your "
        "server needs + a margin)",
    )]  # fmt: skip


def _shell_less(c: dict[str, Any]) -> list[Finding]:
    command = exec_command(c)
    image = str(c.get("image") or "")
    if not command or not needs_shell(command) or not looks_shell_less(image):
        return []
    return [Finding(
        "exec-prestop-shell-less", "error", f"container {c.get('name', '?')}",
        f"the preStop hook runs {command[0]!r} but the image {image} looks shell-less",
        "distroless, scratch and Chainguard-style images have no shell and no sleep binary: the hook fails "
        "at once and SIGTERM follows immediately, so the preStop delays nothing",
        f"the native sleep action is needed: {NATIVE_SLEEP}",
    )]  # fmt: skip


def _strategy(kind: str, obj: dict[str, Any]) -> list[Finding]:
    spec = obj.get("spec") or {}
    total = replicas(kind, obj)
    out: list[Finding] = []
    if kind == "deployment":
        strategy = spec.get("strategy") or {}
        if strategy.get("type") == "Recreate":
            return [Finding(
                "recreate-strategy", "error", "strategy", "strategy Recreate",
                "every old pod is deleted before any new one starts: the Service has no endpoint during "
                "each rollout, whatever the preStop",
                "use type RollingUpdate with maxUnavailable 0 and maxSurge 1 (or 25%)",
            )]  # fmt: skip
        rolling = strategy.get("rollingUpdate") or {}
        unavailable, surge = rolling.get("maxUnavailable", "25%"), rolling.get("maxSurge", "25%")
    elif kind == "statefulset":
        rolling = (spec.get("updateStrategy") or {}).get("rollingUpdate") or {}
        unavailable, surge = rolling.get("maxUnavailable", 1), 0
    else:
        rolling = (spec.get("updateStrategy") or {}).get("rollingUpdate") or {}
        unavailable, surge = rolling.get("maxUnavailable", 1), rolling.get("maxSurge", 0)
    if total is not None and total > 0:
        down = int_or_percent(unavailable, total, round_up=False)
        up = int_or_percent(surge, total, round_up=True)
        if down is not None and down >= total:
            extra = (" and maxSurge 0: no new pod starts before the old ones are gone, so the Service has no "
                     "endpoint at all for a while") if up == 0 else ""  # fmt: skip
            out.append(Finding(
                "max-unavailable-all", "error", "strategy",
                f"maxUnavailable {unavailable!s} takes every one of the {total} pod(s) at once{extra}",
                "all old pods terminate together: every consumer must learn of every deletion at the same "
                "moment, and any propagation delay or slow start is an outage",
                "set maxUnavailable 0 (or a share below 100%) and maxSurge >= 1 where the kind allows it",
            ))  # fmt: skip
    if kind in ("deployment", "statefulset") and total == 1:
        if kind == "statefulset":
            why = ("a StatefulSet deletes its pod before it creates the replacement: every update is an "
                   "outage as long as the new pod takes to become ready")  # fmt: skip
            severity = "error"
        else:
            why = ("while the pod terminates only its replacement can serve, and any node drain or eviction "
                   "leaves the Service without an endpoint (no PodDisruptionBudget can protect one replica)")  # fmt: skip
            severity = "warning"
        out.append(Finding("single-replica", severity, "replicas", "a single replica", why,
                           "run at least 2 replicas (and a PodDisruptionBudget with minAvailable 1)"))  # fmt: skip
    return out


__all__ = ["DEFAULT_DRAIN_S", "NATIVE_SLEEP", "Finding", "static_audit"]
