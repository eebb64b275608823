"""The result of one doctor check, and the list of checks run in order."""

from __future__ import annotations

import os
import subprocess
from dataclasses import asdict, dataclass
from enum import StrEnum
from pathlib import Path


class Status(StrEnum):
    OK = "ok"
    WARN = "warn"  # works, degraded or unverified
    FAIL = "fail"  # the agent cannot do its job until fixed


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    status: Status
    detail: str
    fix: str = ""  # what to do; empty when status is ok

    def to_dict(self) -> dict[str, str]:
        out = asdict(self)
        out["status"] = str(self.status)
        return out


@dataclass(frozen=True, slots=True)
class Output:
    """What a command printed; ``returncode`` is None when it could not run at all."""

    returncode: int | None
    stdout: str
    stderr: str


def run_command(argv: list[str], timeout: float = 5.0) -> Output:
    """Run a short command without a shell; a missing binary or a timeout is an Output, not an error."""
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except FileNotFoundError:
        return Output(None, "", f"{argv[0]}: not installed")
    except subprocess.TimeoutExpired:
        return Output(None, "", f"{argv[0]}: no answer within {timeout:g}s")
    except OSError as exc:
        return Output(None, "", f"{argv[0]}: {exc.strerror}")
    return Output(proc.returncode, proc.stdout, proc.stderr)


def run_checks(kubeconfig: Path | None = None, api_timeout: float = 3.0) -> list[Check]:
    """Every check, in the order a reader fixes things: kernel, bcc, privileges, dataplane, API."""
    from auditor.doctor.api import check_api
    from auditor.doctor.capabilities import check_capabilities
    from auditor.doctor.dataplane import check_iptables, check_kube_proxy
    from auditor.doctor.kernel import (
        check_bcc,
        check_btf,
        check_headers,
        check_kernel,
        check_tracepoints,
        parse_kernel_release,
    )

    release = os.uname().release
    try:
        version: tuple[int, int, int] | None = parse_kernel_release(release)
    except ValueError:
        version = None
    return [
        check_kernel(release),
        *check_tracepoints(),
        check_btf(),
        check_bcc(),
        check_headers(release),
        check_capabilities(kernel=version),
        check_iptables(),
        check_kube_proxy(),
        check_api(kubeconfig, timeout=api_timeout),
    ]
