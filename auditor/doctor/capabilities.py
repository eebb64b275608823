"""Effective capabilities of this process (``CapEff`` in /proc/self/status), by name."""

from __future__ import annotations

from pathlib import Path

from auditor.doctor.check import Check, Status

# bit number -> name, from linux/capability.h
CAPABILITY_NAMES: tuple[str, ...] = (
    "CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID",
    "SETPCAP", "LINUX_IMMUTABLE", "NET_BIND_SERVICE", "NET_BROADCAST", "NET_ADMIN", "NET_RAW",
    "IPC_LOCK", "IPC_OWNER", "SYS_MODULE", "SYS_RAWIO", "SYS_CHROOT", "SYS_PTRACE", "SYS_PACCT",
    "SYS_ADMIN", "SYS_BOOT", "SYS_NICE", "SYS_RESOURCE", "SYS_TIME", "SYS_TTY_CONFIG", "MKNOD",
    "LEASE", "AUDIT_WRITE", "AUDIT_CONTROL", "SETFCAP", "MAC_OVERRIDE", "MAC_ADMIN", "SYSLOG",
    "WAKE_ALARM", "BLOCK_SUSPEND", "AUDIT_READ", "PERFMON", "BPF", "CHECKPOINT_RESTORE",
)  # fmt: skip
FIX = "run as root, or add the capabilities BPF, PERFMON, NET_ADMIN (and NET_RAW) as daemonset/ does"


def decode_capabilities(mask_hex: str) -> frozenset[str]:
    """``"000001fffeffffff"`` -> the set of capability names whose bit is set (unknown bits: CAP_<n>)."""
    try:
        mask = int(mask_hex.strip(), 16)
    except ValueError:
        raise ValueError(f"not a capability mask: {mask_hex!r}") from None
    names = set()
    for bit in range(mask.bit_length()):
        if mask >> bit & 1:
            names.add(CAPABILITY_NAMES[bit] if bit < len(CAPABILITY_NAMES) else f"CAP_{bit}")
    return frozenset(names)


def read_effective_capabilities(status_path: Path = Path("/proc/self/status")) -> frozenset[str]:
    for line in status_path.read_text().splitlines():
        if line.startswith("CapEff:"):
            return decode_capabilities(line.split(":", 1)[1])
    raise ValueError(f"{status_path}: no CapEff line")


def check_capabilities(
    kernel: tuple[int, int, int] | None, status_path: Path = Path("/proc/self/status")
) -> Check:
    """BPF + PERFMON (or SYS_ADMIN, the only way before 5.8) and NET_ADMIN are needed; NET_RAW helps."""
    name = "capabilities"
    try:
        caps = read_effective_capabilities(status_path)
    except (OSError, ValueError) as exc:
        return Check(name, Status.WARN, f"cannot read effective capabilities: {exc}", FIX)
    old_kernel = kernel is not None and kernel < (5, 8, 0)
    bpf_needs = ("SYS_ADMIN",) if old_kernel else ("BPF", "PERFMON")
    missing = [c for c in bpf_needs if c not in caps and "SYS_ADMIN" not in caps]
    missing += [c for c in ("NET_ADMIN",) if c not in caps]
    shown = sorted(caps & {"BPF", "PERFMON", "NET_ADMIN", "NET_RAW", "SYS_ADMIN", "SYS_RESOURCE"})
    detail = "effective: " + (", ".join(shown) or "none of BPF, PERFMON, NET_ADMIN, NET_RAW, SYS_ADMIN")
    if missing:
        why = " (kernel < 5.8 has no CAP_BPF/CAP_PERFMON)" if old_kernel else ""
        return Check(name, Status.FAIL, f"{detail}; missing {', '.join(missing)}{why}", FIX)
    optional = []
    if "NET_RAW" not in caps:
        optional.append("NET_RAW (iptables-legacy reads its tables through a raw socket)")
    if kernel is not None and kernel < (5, 11, 0) and "SYS_RESOURCE" not in caps:
        optional.append("SYS_RESOURCE (kernel < 5.11 charges BPF maps to RLIMIT_MEMLOCK)")
    if optional:
        return Check(name, Status.WARN, f"{detail}; missing {'; '.join(optional)}", FIX)
    return Check(name, Status.OK, detail)
