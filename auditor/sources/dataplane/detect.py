"""Which kube-proxy dataplane a node uses, and the watcher for it.

``auto``: the mode and backend whose tables hold kube-proxy's rules (see :func:`detect_backend`).
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


def _answers(argv: list[str]) -> bool:
    proc = _run(argv)
    return proc is not None and proc.returncode == 0


def detect_backend(netns: str | None = None) -> str:
    """The kube-proxy dataplane of the namespace's node; AuditorError if neither tool answers.

    Where kube-proxy's rules are: nft ``table ip kube-proxy`` (nftables mode), ``KUBE-SERVICES`` in
    the nf_tables or the legacy nat table (iptables mode); with no rules yet, what ``iptables -V`` says.
    """
    prefix = netns_argv(netns)
    if _answers([*prefix, "nft", "list", "chain", "ip", "kube-proxy", "services"]):
        return "nftables"
    if _answers([*prefix, "iptables-nft", "-t", "nat", "-S", "KUBE-SERVICES"]):
        return "iptables-nft"
    # listing the legacy nat table would load iptable_nat: only look if it exists
    tables = _run([*prefix, "cat", "/proc/net/ip_tables_names"])
    if (
        tables is not None
        and "nat" in tables.stdout.split()
        and _answers([*prefix, "iptables-legacy", "-t", "nat", "-S", "KUBE-SERVICES"])
    ):
        return "iptables-legacy"
    version = _run([*prefix, "iptables", "-V"])
    backend = backend_from_version(version.stdout or version.stderr) if version is not None else None
    if backend is None:
        raise AuditorError(
            "cannot tell kube-proxy's dataplane: no nft table kube-proxy, no iptables -V",
            hint="install iptables / nftables, or pass --backend",
        )
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
    raise AuditorError(
        f"unknown dataplane backend {backend!r}",
        hint=f"use auto or one of {', '.join(BACKENDS)} (ipvs is not watched yet)",
    )
