"""Download every node agent's log directory through the API server's pod proxy.

Why the pod proxy (``GET /api/v1/namespaces/<ns>/pods/<pod>:<port>/proxy/logs/...``) and an HTTP
route of the agent, rather than ``kubectl exec``/``cp``: the user needs only ``pods: list`` and
``pods/proxy: get`` in the agent's namespace (exec into a pod holding CAP_BPF and CAP_NET_ADMIN on the
host network would be a far bigger grant), the agent image needs no ``tar``, files stream without
being re-encoded, and the agent's route can refuse everything but its own log files. The cost: the
agent's port also serves the logs to whoever can reach it on the node (see daemonset/README.md).

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

from auditor.collect.layout import MANIFEST, classify_log_file, safe_node_dir, superseded
from auditor.errors import AuditorError

RBAC_HINT = "the user needs 'list' on pods and 'get' on pods/proxy in the agent namespace"


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


def _api_error(exc: BaseException) -> str:
    """One line from an ApiException (Status message when there is one) or a transport error."""
    status = getattr(exc, "status", None)
    body = getattr(exc, "body", None)
    message = ""
    if body:
        try:
            message = str(json.loads(body).get("message", ""))
        except (ValueError, AttributeError, TypeError):
            message = body.decode(errors="replace") if isinstance(body, bytes) else str(body)
    if not message:
        message = str(getattr(exc, "reason", "") or exc)
    text = f"HTTP {status}: {message}" if status else f"{type(exc).__name__}: {message}"
    return " ".join(text.split())[:300]


def list_agent_pods(api_client: Any, namespace: str, selector: str) -> list[AgentPod]:
    """The agent pods, one per node (Running preferred when a node has two during an upgrade)."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    try:
        pods = client.CoreV1Api(api_client).list_namespaced_pod(
            namespace, label_selector=selector, _request_timeout=30
        )
    except ApiException as exc:
        hint = RBAC_HINT if exc.status in (401, 403) else "check --namespace and the cluster"
        raise AuditorError(
            f"cannot list agent pods: {_api_error(exc)}", f"namespace {namespace}", hint
        ) from None
    except (HTTPError, OSError) as exc:
        raise AuditorError(
            f"cannot reach the API server: {_api_error(exc)}", hint="check --kubeconfig"
        ) from None
    by_node: dict[str, AgentPod] = {}
    for pod in pods.items:
        node = (pod.spec.node_name if pod.spec else None) or ""
        phase = (pod.status.phase if pod.status else None) or "Unknown"
        cur = by_node.get(node)
        if cur is None or (cur.phase != "Running" and phase == "Running"):
            by_node[node] = AgentPod(str(pod.metadata.name if pod.metadata else ""), node, phase)
    return [by_node[n] for n in sorted(by_node)]


class AgentFiles:
    """The ``/logs`` routes of one agent pod, reached through the pod proxy."""

    def __init__(self, api_client: Any, namespace: str, pod: str, port: int, timeout_s: float) -> None:
        from kubernetes import client

        self._api = client.CoreV1Api(api_client)
        self.namespace, self.target, self.timeout_s = namespace, f"{pod}:{port}", timeout_s

    def _get(self, path: str) -> Any:
        return self._api.connect_get_namespaced_pod_proxy_with_path(
            self.target, self.namespace, path,
            _preload_content=False, _request_timeout=(self.timeout_s, self.timeout_s),
        )  # fmt: skip

    def listing(self) -> list[dict[str, Any]]:
        resp = self._get("logs")
        try:
            doc = json.loads(resp.data)
        finally:
            resp.release_conn()
        files = doc.get("files") if isinstance(doc, dict) else None
        if not isinstance(files, list):
            raise ValueError("the agent's /logs answer has no file list (an older agent image?)")
        return [f for f in files if isinstance(f, dict) and isinstance(f.get("name"), str)]

    def stream(self, name: str) -> Iterator[bytes]:
        resp = self._get(f"logs/{name}")
        try:
            yield from resp.stream(1 << 16, decode_content=False)
        finally:
            resp.release_conn()


def _download(files: AgentFiles, name: str, size: int, target: Path) -> int:
    tmp = target.with_name(f".{target.name}.download")
    got = 0
    try:
        with tmp.open("wb") as out:
            for block in files.stream(name):
                out.write(block)
                got += len(block)
        if got != size:
            raise OSError(f"{name}: got {got} of {size} bytes")
        os.replace(tmp, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    return got


def collect_agent(
    api_client: Any, namespace: str, pod: AgentPod, port: int, out: Path,
    since_s: float | None = None, timeout_s: float = 30.0, now: Callable[[], float] = time.time,
) -> NodeResult:  # fmt: skip
    """Fetch one agent's log files into ``out/<node>/``; failures end up in ``NodeResult.error``."""
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    res = NodeResult(pod.node or "(unscheduled)", pod.name)
    if not pod.node or not safe_node_dir(pod.node):
        res.error = f"pod not scheduled on a usable node name ({pod.node!r})"
        return res
    if pod.phase != "Running":
        res.error = f"pod is {pod.phase}, not Running"
        return res
    files = AgentFiles(api_client, namespace, pod.name, port, timeout_s)
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
            except ApiException as exc:
                if exc.status == 404:
                    res.vanished.append(name)
                    continue
                raise
            res.fetched.append(name)
        for old in node_dir.glob("events-*.jsonl"):
            if superseded(old):  # copied while live; its finished Parquet twin has arrived
                old.unlink()
                res.replaced += 1
    except ApiException as exc:
        res.error = _api_error(exc)
    except (HTTPError, OSError, ValueError) as exc:
        res.error = _api_error(exc)
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
    "RBAC_HINT",
    "AgentFiles",
    "AgentPod",
    "NodeResult",
    "collect_agent",
    "list_agent_pods",
    "write_manifest",
]
