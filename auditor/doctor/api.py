"""Kubernetes API access: credentials present, and with ``--kubeconfig`` (or in-cluster) a GET /version."""

from __future__ import annotations

import os
from pathlib import Path

from auditor.doctor.check import Check, Status

SERVICE_ACCOUNT_TOKEN = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")
NO_API_FIX = "the agent needs the API: run it with the DaemonSet's service account, or pass --kubeconfig"


def fetch_version(kubeconfig: Path | None, timeout: float) -> str:
    """GET /version with one attempt and a short timeout (through :mod:`auditor.kubeapi`)."""
    from auditor.kubeapi.config import server_version  # lazy: the client is slow to import

    return server_version(None if kubeconfig is None else str(kubeconfig), timeout)


def _readable(path: Path) -> bool:
    try:
        return path.is_file() and os.access(path, os.R_OK)
    except OSError:
        return False


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:200]}"


def check_api(kubeconfig: Path | None, timeout: float = 3.0, token: Path = SERVICE_ACCOUNT_TOKEN) -> Check:
    name = "api access"
    in_cluster = _readable(token) and "KUBERNETES_SERVICE_HOST" in os.environ
    if kubeconfig is not None or in_cluster:
        source = f"kubeconfig {kubeconfig}" if kubeconfig is not None else "in-cluster service account"
        try:
            version = fetch_version(kubeconfig, timeout)
        except Exception as exc:  # any failure of the client is the answer, not a crash
            fix = "check the server address, credentials and network; `kubectl version` shows the same"
            return Check(name, Status.FAIL, f"{source}: GET /version failed: {_one_line(exc)}", fix)
        return Check(name, Status.OK, f"{source}: {version}")
    candidates = [Path(p) for p in os.environ.get("KUBECONFIG", "").split(os.pathsep) if p]
    candidates.append(Path.home() / ".kube" / "config")
    present = [p for p in candidates if _readable(p)]
    if present:
        detail = f"kubeconfig {present[0]} present (not contacted: pass --kubeconfig to try it)"
        return Check(name, Status.OK, detail)
    return Check(name, Status.WARN, "no service account token and no kubeconfig", NO_API_FIX)
