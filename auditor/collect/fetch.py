"""Download every node agent's log directory through the API server's pod proxy.

Why the pod proxy (``GET /api/v1/namespaces/<ns>/pods/<pod>:<port>/proxy/logs/...``) and an HTTP
route of the agent, rather than ``kubectl exec``/``cp``: the user needs only ``pods: list`` and
``pods/proxy: get`` in the agent's namespace (exec into a pod holding CAP_BPF and CAP_NET_ADMIN on the
host network would be a far bigger grant), the agent image needs no ``tar``, files stream without
being re-encoded, and the agent's route can refuse everything but its own log files.

Who may read them is the agent's decision (:mod:`auditor.sinks.logauth`): every request carries the
user's own bearer token (from the kubeconfig, or ``--token-file``) in ``X-Auditor-Authorization``, the
header the API server's pod proxy forwards (it strips ``Authorization``; see
:mod:`auditor.kubeapi.proxy`); the agent reviews it with the API server and serves its files only to a
user allowed ``get`` on ``nodes/proxy`` of its node. A refusal is that agent's failed line, with the hint.

Resumable: a file already in ``out/<node>/`` with the listed size is skipped; downloads go to a
hidden temporary name and are renamed only when complete, so an interrupted run leaves no half file
that looks whole. Every agent is independent: one that is down is one failed line in the summary.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from auditor.errors import AuditorError
from auditor.kubeapi.proxy import ApiCallError, PodProxy, error_line, list_pods
from auditor.model.logfiles import MANIFEST, classify_log_file, list_segments, safe_node_dir, superseded

RBAC_HINT = "the user needs 'list' on pods and 'get' on pods/proxy in the agent namespace"
LOGS_HINT = (
    "the agent checks your bearer token with the API server: you need 'get' on nodes/proxy of its node "
    "(see daemonset/README.md), and a token (--token-file, when your kubeconfig uses a client certificate)"
)


@dataclass
class AgentPod:
    """One agent pod as listed by the API."""

    name: str
    node: str
    phase: str


@dataclass
class NodeResult:
    """What was collected from one agent."""

    node: str
    pod: str
    fetched: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # already complete locally
    too_old: int = 0  # left out by --since
    vanished: list[str] = field(default_factory=list)  # listed, then rotated away before download
    replaced: int = 0  # local copies of live segments removed: their finished Parquet twin arrived
    bytes: int = 0
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def as_dict(self) -> dict[str, Any]:
        return {
            "node": self.node, "pod": self.pod, "ok": self.ok, "error": self.error,
            "fetched": self.fetched, "skipped": self.skipped, "vanished": self.vanished,
            "too_old": self.too_old, "replaced": self.replaced, "bytes": self.bytes,
        }  # fmt: skip

    def line(self) -> str:
        if self.error is not None:
            return f"{self.node}: FAILED ({self.pod}): {self.error}"
        extra = f", {len(self.vanished)} rotated away" if self.vanished else ""
        extra += f", {self.too_old} older than --since" if self.too_old else ""
        return (
            f"{self.node}: {len(self.fetched)} file(s) fetched ({self.bytes} bytes), "
            f"{len(self.skipped)} already complete{extra}"
        )


def list_agent_pods(api_client: Any, namespace: str, selector: str) -> list[AgentPod]:
    """The agent pods, one per node (Running preferred when a node has two during an upgrade)."""
    try:
        pods = list_pods(api_client, namespace, selector, timeout_s=30)
    except ApiCallError as exc:
        if not exc.answered:
            raise AuditorError(f"cannot reach the API server: {exc}", hint="check --kubeconfig") from None
        hint = RBAC_HINT if exc.status in (401, 403) else "check --namespace and the cluster"
        raise AuditorError(f"cannot list agent pods: {exc}", f"namespace {namespace}", hint) from None
    by_node: dict[str, AgentPod] = {}
    for pod in pods:
        cur = by_node.get(pod.node)
        if cur is None or (cur.phase != "Running" and pod.phase == "Running"):
            by_node[pod.node] = AgentPod(pod.name, pod.node, pod.phase)
    return [by_node[n] for n in sorted(by_node)]


class AgentFiles:
    """The ``/logs`` routes of one agent pod, reached through the pod proxy."""

    def __init__(
        self, api_client: Any, namespace: str, pod: str, port: int, timeout_s: float, token: str | None = None
    ) -> None:
        self._proxy = PodProxy(api_client, namespace, pod, port, timeout_s, token)

    def listing(self) -> list[dict[str, Any]]:
        doc = json.loads(self._proxy.read("logs"))
        files = doc.get("files") if isinstance(doc, dict) else None
        if not isinstance(files, list):
            raise ValueError("the agent's /logs answer has no file list (an older agent image?)")
        return [f for f in files if isinstance(f, dict) and isinstance(f.get("name"), str)]

    def stream(self, name: str) -> Iterator[bytes]:
        return self._proxy.stream(f"logs/{name}")


def _download(files: AgentFiles, name: str, size: int, target: Path) -> int:
    tmp = target.with_name(f".{target.name}.download")
    got = 0
    try:
        with tmp.open("wb") as out:
            for block in files.stream(name):
                out.write(block)
                got += len(block)
        if got < size:  # more is fine: a live file grew (whole lines) between the listing and its download
            raise OSError(f"{name}: got {got} of {size} bytes")
        os.replace(tmp, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    return got


def collect_agent(
    api_client: Any, namespace: str, pod: AgentPod, port: int, out: Path,
    since_s: float | None = None, timeout_s: float = 30.0, now: Callable[[], float] = time.time,
    token: str | None = None,
) -> NodeResult:  # fmt: skip
    """Fetch one agent's log files into ``out/<node>/`` (``token``: the user's bearer token, which the
    agent checks); failures end up in ``NodeResult.error``."""
    res = NodeResult(pod.node or "(unscheduled)", pod.name)
    if not pod.node or not safe_node_dir(pod.node):
        res.error = f"pod not scheduled on a usable node name ({pod.node!r})"
        return res
    if pod.phase != "Running":
        res.error = f"pod is {pod.phase}, not Running"
        return res
    files = AgentFiles(api_client, namespace, pod.name, port, timeout_s, token)
    node_dir = out / pod.node
    try:
        listing = files.listing()
        node_dir.mkdir(parents=True, exist_ok=True)
        for entry in listing:
            name, size = str(entry["name"]), int(entry.get("size", -1))
            if classify_log_file(name) is None or size < 0:
                continue  # never write a name the layout does not know
            if since_s is not None and float(entry.get("mtime", 0)) < now() - since_s:
                res.too_old += 1
                continue
            target = node_dir / name
            if target.is_file() and target.stat().st_size == size:
                res.skipped.append(name)
                continue
            try:
                res.bytes += _download(files, name, size, target)
            except ApiCallError as exc:
                if exc.answered and exc.status == 404:
                    res.vanished.append(name)
                    continue
                raise
            res.fetched.append(name)
        for old in list_segments(node_dir):
            if superseded(old):  # copied while live; its finished Parquet twin has arrived
                old.unlink()
                res.replaced += 1
    except ApiCallError as exc:
        res.error = exc.message
        if exc.answered and exc.status in (401, 403):
            res.error += f" ({LOGS_HINT})"
    except (OSError, ValueError) as exc:
        res.error = error_line(exc)
    return res


def write_manifest(out: Path, results: list[NodeResult], namespace: str, selector: str) -> Path:
    """``out/collect.json``: what each run got per node, which ``analyze --dir`` reports."""
    doc = {
        "collected_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "namespace": namespace,
        "selector": selector,
        "nodes": [r.as_dict() for r in results],
    }
    path = out / MANIFEST
    path.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    return path


__all__ = [
    "LOGS_HINT",
    "RBAC_HINT",
    "AgentFiles",
    "AgentPod",
    "NodeResult",
    "collect_agent",
    "list_agent_pods",
    "write_manifest",
]
