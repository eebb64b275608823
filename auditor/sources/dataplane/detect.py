"""Which kube-proxy dataplane a node uses, and the watcher for it.

``auto``: kube-proxy's nftables mode if ``table ip kube-proxy`` has a ``services`` chain; otherwise
its iptables mode, with the backend that ``iptables -V`` names (``nf_tables`` or ``legacy``).
"""

from __future__ import annotations

import re
import subprocess

from auditor.errors import AuditorError
from auditor.sources.dataplane.watcher import DataplaneWatcher, netns_argv

BACKENDS = ("iptables-nft", "iptables-legacy", "nftables")
_VERSION = re.compile(r"^ip6?tables\S*\s+v[\d.]+(?:\s+\(([^)]+)\))?")


def _run(argv: list[str]) -> subprocess.CompletedProcess[str] | None:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None


def backend_from_version(text: str) -> str | None:
    """``iptables v1.8.9 (nf_tables)`` -> iptables-nft; ``(legacy)`` or no suffix -> iptables-legacy."""
    match = _VERSION.match(text.strip())
    if not match:
        return None
    return "iptables-nft" if match[1] == "nf_tables" else "iptables-legacy"


def detect_backend(netns: str | None = None) -> str:
    """The kube-proxy dataplane of the namespace's node; AuditorError if neither tool answers."""
    prefix = netns_argv(netns)
    nft = _run([*prefix, "nft", "list", "chain", "ip", "kube-proxy", "services"])
    if nft is not None and nft.returncode == 0:
        return "nftables"
    version = _run([*prefix, "iptables", "-V"])
    backend = backend_from_version(version.stdout or version.stderr) if version is not None else None
    if backend is None:
        raise AuditorError("cannot tell kube-proxy's dataplane: no nft table kube-proxy, no iptables -V",
                           hint="install iptables / nftables, or pass --backend")
    return backend


def watch_dataplane(node: str, backend: str = "auto", netns: str | None = None) -> DataplaneWatcher:
    """A watcher (not started) for ``backend`` (``auto`` detects it) in ``netns`` (a name or path)."""
    if backend == "auto":
        backend = detect_backend(netns)
    if backend == "iptables-nft":
        from auditor.sources.dataplane.iptables_nft import XtablesMonitorWatcher

        return XtablesMonitorWatcher(node, netns)
    if backend == "iptables-legacy":
        from auditor.sources.dataplane.iptables_legacy import LegacyReplaceWatcher

        return LegacyReplaceWatcher(node, netns)
    if backend == "nftables":
        from auditor.sources.dataplane.nftables import NftMonitorWatcher

        return NftMonitorWatcher(node, netns)
    raise AuditorError(f"unknown dataplane backend {backend!r}",
                       hint=f"use auto or one of {', '.join(BACKENDS)} (ipvs is not watched yet)")
