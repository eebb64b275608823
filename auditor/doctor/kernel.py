"""Kernel-side checks: version, tracepoints, BTF, bcc and the kernel headers it compiles against."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

from auditor.doctor.check import Check, Status, run_command

TRACEFS_ROOTS = (Path("/sys/kernel/tracing"), Path("/sys/kernel/debug/tracing"))
# (category, event) -> required? Optional ones only disable one signal.
TRACEPOINTS: dict[tuple[str, str], bool] = {
    ("tcp", "tcp_send_reset"): True,
    ("tcp", "tcp_receive_reset"): True,
    ("sock", "inet_sock_set_state"): True,
    ("icmp", "icmp_send"): False,
    ("skb", "kfree_skb"): False,
    # dataplane: kernel times of rule commits (nf_tables batches; legacy table replaces)
    ("syscalls", "sys_enter_sendmsg"): False,
    ("syscalls", "sys_exit_sendmsg"): False,
    ("syscalls", "sys_enter_setsockopt"): False,
    ("syscalls", "sys_exit_setsockopt"): False,
}
BTF_PATH = Path("/sys/kernel/btf/vmlinux")
KHEADERS = Path("/sys/kernel/kheaders.tar.xz")
_RELEASE = re.compile(r"^(\d+)\.(\d+)(?:\.(\d+))?")
_UTS_RELEASE = re.compile(r'UTS_RELEASE\s+"([^"]+)"')


def parse_kernel_release(release: str) -> tuple[int, int, int]:
    """``"6.1.0-56-amd64"`` -> (6, 1, 0); ``"5.4"`` -> (5, 4, 0). ValueError when not a release."""
    match = _RELEASE.match(release.strip())
    if not match:
        raise ValueError(f"not a kernel release: {release!r}")
    return int(match[1]), int(match[2]), int(match[3] or 0)


def check_kernel(release: str) -> Check:
    name = "kernel"
    try:
        version = parse_kernel_release(release)
    except ValueError:
        return Check(name, Status.WARN, f"cannot parse kernel release {release!r}", "")
    upgrade = "use a kernel >= 5.8 (every supported distribution has one)"
    if version < (4, 16, 0):
        return Check(name, Status.FAIL, f"{release}: no tcp/sock tracepoints before 4.16", upgrade)
    if version < (5, 8, 0):
        return Check(
            name, Status.WARN, f"{release}: no BPF ring buffer and no CAP_BPF/CAP_PERFMON before 5.8", upgrade
        )
    detail = f"{release}: ring buffer, CAP_BPF and CAP_PERFMON available"
    if version >= (6, 10, 0):
        detail += "; 6.10+ tracepoint layouts (tcp_send_reset carries a reset reason)"
    return Check(name, Status.OK, detail)


def _is(path: Path, kind: str) -> bool:
    """``path.is_dir()`` / ``is_file()`` that answers False instead of raising when access is denied."""
    try:
        return path.is_dir() if kind == "dir" else path.is_file()
    except OSError:
        return False


def find_tracefs(roots: tuple[Path, ...] = TRACEFS_ROOTS) -> Path | None:
    """The first tracefs whose events directory this process can read."""
    for root in roots:
        events = root / "events"
        if _is(events, "dir") and os.access(events, os.R_OK | os.X_OK):
            return root
    return None


def check_tracepoints(roots: tuple[Path, ...] = TRACEFS_ROOTS) -> list[Check]:
    """One check per tracepoint the agent attaches to."""
    tracefs = find_tracefs(roots)
    checks = []
    for (category, event), required in TRACEPOINTS.items():
        name = f"tracepoint {category}:{event}"
        missing = Status.FAIL if required else Status.WARN
        if tracefs is None:
            where = " or ".join(str(r) for r in roots)
            fix = (
                "run as root and mount tracefs (mount -t tracefs nodev /sys/kernel/tracing); "
                "in a pod, mount the host's /sys/kernel/tracing read-only"
            )
            checks.append(Check(name, missing, f"no readable tracefs at {where}", fix))
        elif _is(tracefs / "events" / category / event / "format", "file"):
            checks.append(Check(name, Status.OK, f"{tracefs}/events/{category}/{event}"))
        else:
            lost = "the agent cannot run" if required else "the agent runs without this signal"
            fix = "use a newer kernel" + ("" if required else " to get this signal")
            checks.append(Check(name, missing, f"not in {tracefs}/events: {lost}", fix))
    return checks


def check_btf(path: Path = BTF_PATH) -> Check:
    if _is(path, "file"):
        return Check("btf", Status.OK, f"{path}")
    return Check(
        "btf",
        Status.WARN,
        f"{path} missing: no CO-RE, drop reasons are not named from BTF",
        "use a kernel built with CONFIG_DEBUG_INFO_BTF=y; in a pod, mount the host's file read-only",
    )


def check_bcc(timeout: float = 30.0) -> Check:
    """Import bcc in a child interpreter (it loads libbcc), so a broken install cannot hurt us."""
    probe = "import bcc, bcc.version; print(bcc.version.__version__, bcc.__file__)"
    out = run_command([sys.executable, "-c", probe], timeout=timeout)
    if out.returncode == 0:
        return Check("bcc", Status.OK, out.stdout.strip())
    lines = (out.stderr.strip() or "no output").splitlines()
    return Check(
        "bcc",
        Status.FAIL,
        f"cannot import bcc with {sys.executable}: {lines[-1]}",
        "apt-get install python3-bpfcc; in a venv expose Debian's dist-packages/bcc "
        "(bash .ci/install does) or create it with --system-site-packages",
    )


def headers_release(directory: Path) -> str | None:
    """The kernel release a header tree was built for (include/generated/utsrelease.h), if it says."""
    try:
        text = (directory / "include" / "generated" / "utsrelease.h").read_text()
    except OSError:
        return None
    match = _UTS_RELEASE.search(text)
    return match[1] if match else None


def check_headers(
    release: str,
    modules: Path = Path("/lib/modules"),
    src: Path = Path("/usr/src"),
    kheaders: Path = KHEADERS,
) -> Check:
    """Headers bcc would use: BCC_KERNEL_SOURCE, /lib/modules/<release>/build, kheaders, /usr/src."""
    name = "kernel headers"
    mismatch_fix = f"install headers for {release} (Debian: linux-headers-{release}), or point "
    mismatch_fix += "BCC_KERNEL_SOURCE at the closest tree and test the probes"
    chosen = os.environ.get("BCC_KERNEL_SOURCE")
    if chosen:
        tree = Path(chosen)
        if not _is(tree, "dir"):
            return Check(name, Status.FAIL, f"BCC_KERNEL_SOURCE={chosen} is not a directory", mismatch_fix)
        built_for = headers_release(tree)
        if built_for is not None and built_for != release:
            detail = f"BCC_KERNEL_SOURCE={chosen} holds headers for {built_for}, running {release}"
            return Check(name, Status.WARN, detail, mismatch_fix)
        return Check(name, Status.OK, f"BCC_KERNEL_SOURCE={chosen}")
    build = modules / release / "build"
    if _is(build, "dir"):
        return Check(name, Status.OK, f"{build}")
    if _is(kheaders, "file"):
        return Check(name, Status.OK, f"{kheaders} (bcc extracts it)")
    others = sorted(
        p for p in src.glob("linux-headers-*") if _is(p, "dir") and not p.name.endswith("-common")
    )
    if others:
        found = ", ".join(headers_release(p) or p.name for p in others)
        detail = f"no headers for the running kernel {release}; found {found} (version mismatch)"
        return Check(name, Status.WARN, detail, mismatch_fix)
    return Check(name, Status.FAIL, f"no kernel headers for {release}", mismatch_fix)
