"""The workload under test: ``deployment/NAME`` parsed, and what its pod template says (pure functions on
the object as the API serves it, a dict)."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from auditor.errors import AuditorError
from auditor.sources.kube_pod import hook_duration

# what `kubectl` accepts for the three kinds
_ALIASES = {
    "deployment": "deployment", "deployments": "deployment", "deploy": "deployment",
    "statefulset": "statefulset", "statefulsets": "statefulset", "sts": "statefulset",
    "daemonset": "daemonset", "daemonsets": "daemonset", "ds": "daemonset",
}  # fmt: skip
KIND_NAMES = {"deployment": "Deployment", "statefulset": "StatefulSet", "daemonset": "DaemonSet"}
DEFAULT_GRACE_S = 30  # the API's default terminationGracePeriodSeconds
SHELLS = frozenset({"sh", "bash", "ash", "dash", "zsh", "ksh", "busybox"})
# images built without a shell or coreutils; a name hint only (the registry is never asked)
_SHELL_LESS = re.compile(
    r"distroless|(^|/)scratch(:|@|$)|chainguard|cgr\.dev/|(^|/)static(:|@|$)|-static(:|@|$)|ko\.local|"
    r"(^|/)pause(:|@|$)",
    re.IGNORECASE,
)
_DNS_NAME = re.compile(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?")


@dataclass(frozen=True)
class WorkloadRef:
    """``kind`` is ``deployment``, ``statefulset`` or ``daemonset``."""

    kind: str
    name: str
    namespace: str

    @property
    def kind_name(self) -> str:
        return KIND_NAMES[self.kind]

    def __str__(self) -> str:
        return f"{self.kind}/{self.name}"

    @property
    def qualified(self) -> str:
        """``deployment default/web``"""
        return f"{self.kind} {self.namespace}/{self.name}"


def parse_ref(text: str, namespace: str) -> WorkloadRef:
    """``deployment/web`` (or ``deploy/web``, ``sts/db``, ``ds/edge``) in ``namespace``."""
    kind, sep, name = text.partition("/")
    canonical = _ALIASES.get(kind.strip().lower())
    if not sep or canonical is None or not name:
        raise AuditorError(
            f"not a workload: {text!r}", "rollout-test",
            "give KIND/NAME with KIND deployment, statefulset or daemonset, e.g. deployment/web",
        )  # fmt: skip
    if not _DNS_NAME.fullmatch(name) or len(name) > 253:
        raise AuditorError(f"not a valid object name: {name!r}", "rollout-test", "use the name kubectl shows")
    return WorkloadRef(canonical, name, namespace)


def match_labels(obj: dict[str, Any]) -> str:
    """The workload's ``spec.selector.matchLabels`` as a label selector (``a=b,c=d``); "" when it has none
    (a selector of matchExpressions only)."""
    labels = ((obj.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items())) if isinstance(labels, dict) else ""


def pod_spec(obj: dict[str, Any]) -> dict[str, Any]:
    spec = ((obj.get("spec") or {}).get("template") or {}).get("spec")
    return spec if isinstance(spec, dict) else {}


def containers(obj: dict[str, Any]) -> list[dict[str, Any]]:
    return [c for c in pod_spec(obj).get("containers") or [] if isinstance(c, dict)]


def template_labels(obj: dict[str, Any]) -> dict[str, str]:
    labels = (((obj.get("spec") or {}).get("template") or {}).get("metadata") or {}).get("labels") or {}
    return {str(k): str(v) for k, v in labels.items()}


def grace_seconds(obj: dict[str, Any]) -> int:
    """The pod template's terminationGracePeriodSeconds (30 when not set, the API's default)."""
    value = pod_spec(obj).get("terminationGracePeriodSeconds")
    return int(value) if isinstance(value, int) else DEFAULT_GRACE_S


def replicas(ref_kind: str, obj: dict[str, Any]) -> int | None:
    """How many pods the workload runs: ``spec.replicas`` (default 1) for Deployments and StatefulSets,
    ``status.desiredNumberScheduled`` for a DaemonSet (None when the status does not say yet)."""
    if ref_kind == "daemonset":
        n = (obj.get("status") or {}).get("desiredNumberScheduled")
        return int(n) if isinstance(n, int) else None
    n = (obj.get("spec") or {}).get("replicas")
    return int(n) if isinstance(n, int) else 1


def prestop(container: dict[str, Any]) -> tuple[str, float | None]:
    """The container's preStop hook as ``(kind, seconds it delays SIGTERM)``: ``("none", None)``,
    ``("sleep", 5.0)`` (the native action, or an exec that only sleeps), ``("exec", 3.0 | None)`` (the
    sleeps found in a script: a lower bound), ``("http"|"tcp"|"unknown", None)``."""
    hook = (container.get("lifecycle") or {}).get("preStop")
    if not isinstance(hook, dict):
        return "none", None
    return hook_duration(hook)


def hook_action(container: dict[str, Any]) -> str:
    """Which action the container's preStop hook has: ``sleep`` (native), ``exec``, ``httpGet``,
    ``tcpSocket``, or ``""`` (no hook)."""
    hook = (container.get("lifecycle") or {}).get("preStop")
    if not isinstance(hook, dict):
        return ""
    for action in ("sleep", "exec", "httpGet", "tcpSocket"):
        if hook.get(action) is not None:
            return action
    return "unknown"


def exec_command(container: dict[str, Any]) -> list[str]:
    hook = (container.get("lifecycle") or {}).get("preStop") or {}
    command = (hook.get("exec") or {}).get("command") if isinstance(hook, dict) else None
    return [str(a) for a in command] if isinstance(command, list) else []


def program(command: list[str]) -> str:
    return command[0].rsplit("/", 1)[-1] if command else ""


def needs_shell(command: list[str]) -> bool:
    """The exec command needs a shell or coreutils' ``sleep`` in the image."""
    return program(command) in SHELLS | {"sleep", "env", "timeout"}


def looks_shell_less(image: str) -> bool:
    """The image's name says it has no shell and no ``sleep`` binary (distroless, scratch, Chainguard's
    and ko's static bases...): a hint from the name, the image itself is not inspected."""
    return bool(_SHELL_LESS.search(image or ""))


def serving_containers(obj: dict[str, Any], wanted: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """The containers the fix is for: those named in ``wanted``; else those that declare ports (the ones
    a Service sends traffic to); else all of them."""
    every = containers(obj)
    if wanted:
        return [c for c in every if c.get("name") in wanted]
    with_ports = [c for c in every if c.get("ports")]
    return with_ports or every


def first_port(container: dict[str, Any]) -> int | str | None:
    """The container's first declared port (its name when it has one)."""
    for port in container.get("ports") or []:
        if isinstance(port, dict):
            return port.get("name") or port.get("containerPort")
    return None


def int_or_percent(value: Any, total: int, round_up: bool) -> int | None:
    """A rolling-update bound (``1`` or ``"25%"``) as a number of pods of ``total`` (maxSurge rounds up,
    maxUnavailable down, as the Deployment controller does); None when unreadable."""
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.endswith("%"):
        try:
            share = float(value[:-1]) / 100 * total
        except ValueError:
            return None
        return math.ceil(share) if round_up else math.floor(share)
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return None


__all__ = [
    "DEFAULT_GRACE_S",
    "KIND_NAMES",
    "WorkloadRef",
    "containers",
    "exec_command",
    "first_port",
    "grace_seconds",
    "hook_action",
    "int_or_percent",
    "looks_shell_less",
    "match_labels",
    "needs_shell",
    "parse_ref",
    "pod_spec",
    "prestop",
    "program",
    "replicas",
    "serving_containers",
    "template_labels",
]
