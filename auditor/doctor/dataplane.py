"""Dataplane checks: which iptables backend the node uses, and where kube-proxy writes its rules."""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from pathlib import Path

from auditor.doctor.check import Check, Output, Status, run_command

Runner = Callable[[list[str]], Output]
_VERSION = re.compile(r"^(?:iptables|ip6tables)\S*\s+v(\d+(?:\.\d+)*)(?:\s+\(([^)]+)\))?")
_DENIED = ("Permission denied", "Operation not permitted")
NEED_ADMIN = "run as root with CAP_NET_ADMIN (and CAP_NET_RAW for legacy), in the node's network namespace"


def parse_iptables_version(text: str) -> tuple[str, str]:
    """``"iptables v1.8.9 (nf_tables)"`` -> ("1.8.9", "nf_tables"); no suffix (< 1.8) means legacy."""
    match = _VERSION.match(text.strip())
    if not match:
        raise ValueError(f"not iptables -V output: {text.strip()[:80]!r}")
    backend = match[2] or "legacy"
    if backend not in {"nf_tables", "legacy"}:
        raise ValueError(f"unknown iptables backend {backend!r}")
    return match[1], backend


def check_iptables(run: Runner = run_command) -> Check:
    name = "iptables backend"
    out = run(["iptables", "-V"])
    if out.returncode is None:
        return Check(
            name, Status.WARN, out.stderr, "install iptables: the agent reads kube-proxy's rules with it"
        )
    try:
        version, backend = parse_iptables_version(out.stdout or out.stderr)
    except ValueError as exc:
        return Check(name, Status.WARN, str(exc), "")
    nft = shutil.which("nft")
    detail = f"iptables {version} ({backend}); nft: {nft or 'not installed'}"
    if backend == "nf_tables" and nft is None:
        return Check(name, Status.WARN, detail, "install nftables: nf_tables rule changes are read with nft")
    return Check(name, Status.OK, detail)


def _probe(run: Runner, argv: list[str]) -> bool | None:
    """True: the rules exist; False: they do not; None: cannot tell (not installed, no permission)."""
    out = run(argv)
    if out.returncode is None or any(word in out.stderr for word in _DENIED):
        return None
    return out.returncode == 0


def check_kube_proxy(
    run: Runner = run_command, legacy_tables: Path = Path("/proc/net/ip_tables_names")
) -> Check:
    """kube-proxy's mode from its rules: KUBE-SERVICES in iptables-nft / legacy, or the nft table."""
    name = "kube-proxy rules"
    probes: dict[str, bool | None] = {
        "iptables (nf_tables backend)": _probe(run, ["iptables-nft", "-t", "nat", "-S", "KUBE-SERVICES"]),
        "nftables": _probe(run, ["nft", "list", "table", "ip", "kube-proxy"]),
    }
    # Listing the legacy nat table loads iptable_nat when it is absent: look it up without touching it.
    try:
        legacy_nat = "nat" in legacy_tables.read_text().split()
    except OSError:
        legacy_nat = False
    probes["iptables (legacy backend)"] = (
        _probe(run, ["iptables-legacy", "-t", "nat", "-S", "KUBE-SERVICES"]) if legacy_nat else False
    )
    found = [mode for mode, present in probes.items() if present]
    unknown = [mode for mode, present in probes.items() if present is None]
    if len(found) == 1:
        return Check(name, Status.OK, f"kube-proxy mode: {found[0]}")
    if len(found) > 1:
        detail = f"rules of several modes: {', '.join(found)} (leftovers of a mode change?)"
        return Check(
            name, Status.WARN, detail, "remove the stale rules, or tell the agent which mode is live"
        )
    if unknown:
        return Check(name, Status.WARN, f"cannot read rules for: {', '.join(unknown)}", NEED_ADMIN)
    return Check(
        name,
        Status.WARN,
        "no kube-proxy rules in this network namespace (not a node, kube-proxy replaced, or no hostNetwork)",
        "run doctor on a node (hostNetwork) where kube-proxy runs in iptables or nftables mode",
    )
