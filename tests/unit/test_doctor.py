"""auditor doctor: the pure parsers on literals, each check on fake trees, the command end to end."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from auditor.doctor.capabilities import check_capabilities, decode_capabilities
from auditor.doctor.check import Output, Status
from auditor.doctor.dataplane import check_iptables, check_kube_proxy, parse_iptables_version
from auditor.doctor.kernel import (
    TRACEPOINTS,
    check_headers,
    check_kernel,
    check_tracepoints,
    parse_kernel_release,
)
from tests.conftest import REPO

EXPECTED_CHECKS = [
    "kernel",
    *(f"tracepoint {c}:{e}" for c, e in TRACEPOINTS),
    "btf",
    "bcc",
    "kernel headers",
    "capabilities",
    "iptables backend",
    "kube-proxy rules",
    "api access",
]

# --- parsers -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mask", "names"),
    [
        ("0000000000000000", set()),
        ("0000000000003000", {"NET_ADMIN", "NET_RAW"}),
        ("000000c000001000", {"NET_ADMIN", "PERFMON", "BPF"}),
        ("0000000000200000", {"SYS_ADMIN"}),
        ("0000200000000001", {"CHOWN", "CAP_45"}),
    ],
)
def test_decode_capabilities(mask: str, names: set[str]) -> None:
    assert decode_capabilities(mask) == names


def test_decode_capabilities_full_root_set_and_garbage() -> None:
    caps = decode_capabilities("000001ffffffffff\n")  # root on a 6.x kernel: bits 0..40
    assert len(caps) == 41 and {"BPF", "PERFMON", "CHECKPOINT_RESTORE", "CHOWN"} <= caps
    assert "SYS_RESOURCE" not in decode_capabilities("000001fffeffffff")
    with pytest.raises(ValueError, match="capability mask"):
        decode_capabilities("zz")


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("iptables v1.8.9 (nf_tables)\n", ("1.8.9", "nf_tables")),
        ("iptables v1.8.7 (legacy)", ("1.8.7", "legacy")),
        ("iptables v1.6.1", ("1.6.1", "legacy")),  # before 1.8 there was only legacy
        ("ip6tables-nft v1.8.9 (nf_tables)", ("1.8.9", "nf_tables")),
    ],
)
def test_parse_iptables_version(text: str, parsed: tuple[str, str]) -> None:
    assert parse_iptables_version(text) == parsed


@pytest.mark.parametrize("text", ["", "nft v1.0.6 (Lester Gooch #5)", "iptables v1.8.9 (bpfilter)"])
def test_parse_iptables_version_rejects_other_output(text: str) -> None:
    with pytest.raises(ValueError):
        parse_iptables_version(text)


@pytest.mark.parametrize(
    ("release", "version"),
    [
        ("6.18.44-fc-v595", (6, 18, 44)),
        ("6.1.0-56-amd64", (6, 1, 0)),
        ("5.15.0-1051-azure", (5, 15, 0)),
        ("4.19.0+", (4, 19, 0)),
        ("6.8", (6, 8, 0)),
        ("6.10.0-rc3", (6, 10, 0)),
    ],
)
def test_parse_kernel_release(release: str, version: tuple[int, int, int]) -> None:
    assert parse_kernel_release(release) == version


def test_parse_kernel_release_rejects_garbage() -> None:
    with pytest.raises(ValueError, match="kernel release"):
        parse_kernel_release("Linux")


# --- checks on fake inputs -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("release", "status", "words"),
    [
        ("4.14.0", Status.FAIL, "4.16"),
        ("5.4.0-150-generic", Status.WARN, "ring buffer"),
        ("5.15.0", Status.OK, "ring buffer"),
        ("6.12.1", Status.OK, "6.10+"),
        ("weird", Status.WARN, "cannot parse"),
    ],
)
def test_check_kernel(release: str, status: Status, words: str) -> None:
    check = check_kernel(release)
    assert (check.status, words in check.detail) == (status, True)


def write_status(tmp_path: Path, mask: str) -> Path:
    status = tmp_path / "status"
    status.write_text(f"Name:\tauditor\nCapInh:\t0000000000000000\nCapEff:\t{mask}\n")
    return status


@pytest.mark.parametrize(
    ("mask", "kernel", "status", "missing"),
    [
        ("000000c000003000", (6, 1, 0), Status.OK, ""),  # BPF PERFMON NET_ADMIN NET_RAW
        ("000000c000001000", (6, 1, 0), Status.WARN, "NET_RAW"),
        ("0000000000003000", (6, 1, 0), Status.FAIL, "BPF, PERFMON"),
        ("0000000000203000", (6, 1, 0), Status.OK, ""),  # SYS_ADMIN covers BPF and PERFMON
        ("000000c000002000", (6, 1, 0), Status.FAIL, "NET_ADMIN"),
        ("000000c000003000", (5, 4, 0), Status.FAIL, "SYS_ADMIN"),  # no CAP_BPF before 5.8
        ("0000000000203000", (5, 4, 0), Status.WARN, "SYS_RESOURCE"),
        ("0000000001203000", (5, 4, 0), Status.OK, ""),
    ],
)
def test_check_capabilities(
    tmp_path: Path, mask: str, kernel: tuple[int, int, int], status: Status, missing: str
) -> None:
    check = check_capabilities(kernel, write_status(tmp_path, mask))
    assert check.status == status, check
    assert missing in check.detail
    assert bool(check.fix) == (status != Status.OK)


def test_check_capabilities_without_cap_line(tmp_path: Path) -> None:
    (tmp_path / "status").write_text("Name:\tx\n")
    assert check_capabilities((6, 1, 0), tmp_path / "status").status == Status.WARN


def make_tracefs(root: Path, events: list[str]) -> Path:
    for event in events:
        category, name = event.split(":")
        (root / "events" / category / name).mkdir(parents=True)
        (root / "events" / category / name / "format").write_text("name: x\n")
    return root


def test_check_tracepoints_required_fail_optional_warn(tmp_path: Path) -> None:
    tracefs = make_tracefs(tmp_path / "tracing", ["tcp:tcp_send_reset", "sock:inet_sock_set_state"])
    checks = {c.name: c for c in check_tracepoints((tmp_path / "missing", tracefs))}
    assert [c for c in checks] == [n for n in EXPECTED_CHECKS if n.startswith("tracepoint")]
    assert checks["tracepoint tcp:tcp_send_reset"].status == Status.OK
    assert str(tracefs) in checks["tracepoint tcp:tcp_send_reset"].detail
    assert checks["tracepoint tcp:tcp_receive_reset"].status == Status.FAIL
    assert checks["tracepoint skb:kfree_skb"].status == Status.WARN


def test_check_tracepoints_without_tracefs(tmp_path: Path) -> None:
    checks = check_tracepoints((tmp_path / "nope",))
    assert len(checks) == len(TRACEPOINTS)
    assert {c.status for c in checks} == {Status.FAIL, Status.WARN}
    assert all("mount" in c.fix for c in checks)


def header_tree(path: Path, release: str) -> Path:
    (path / "include" / "generated").mkdir(parents=True)
    (path / "include" / "generated" / "utsrelease.h").write_text(f'#define UTS_RELEASE "{release}"\n')
    return path


def test_check_headers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    release = "6.18.0-1-amd64"
    modules, src, kheaders = tmp_path / "modules", tmp_path / "src", tmp_path / "kheaders.tar.xz"
    src.mkdir()
    monkeypatch.delenv("BCC_KERNEL_SOURCE", raising=False)

    def check() -> tuple[Status, str]:
        result = check_headers(release, modules, src, kheaders)
        return result.status, result.detail

    assert check()[0] == Status.FAIL
    header_tree(src / "linux-headers-6.1.0-56-amd64", "6.1.0-56-amd64")
    (src / "linux-headers-6.1.0-56-common").mkdir()
    status, detail = check()
    assert status == Status.WARN and "6.1.0-56-amd64" in detail and "mismatch" in detail
    kheaders.write_bytes(b"")
    assert check()[0] == Status.OK
    kheaders.unlink()
    header_tree(modules / release / "build", release)
    assert check() == (Status.OK, str(modules / release / "build"))
    monkeypatch.setenv("BCC_KERNEL_SOURCE", str(src / "linux-headers-6.1.0-56-amd64"))
    status, detail = check()
    assert status == Status.WARN and "holds headers for 6.1.0-56-amd64" in detail
    monkeypatch.setenv("BCC_KERNEL_SOURCE", str(modules / release / "build"))
    assert check()[0] == Status.OK
    monkeypatch.setenv("BCC_KERNEL_SOURCE", str(tmp_path / "absent"))
    assert check()[0] == Status.FAIL


class FakeRunner:
    """Answers commands from a table keyed by argv[0]; records what was run."""

    def __init__(self, answers: dict[str, Output]) -> None:
        self.answers = answers
        self.ran: list[list[str]] = []

    def __call__(self, argv: list[str]) -> Output:
        self.ran.append(argv)
        return self.answers.get(argv[0], Output(None, "", f"{argv[0]}: not installed"))


FOUND, ABSENT = Output(0, "-N KUBE-SERVICES\n", ""), Output(1, "", "No chain/target/match by that name.")
DENIED = Output(4, "", "Could not fetch rule set generation id: Permission denied (you must be root)")


def test_check_kube_proxy_modes(tmp_path: Path) -> None:
    legacy = tmp_path / "ip_tables_names"
    legacy.write_text("filter\n")
    run = FakeRunner({"iptables-nft": FOUND, "nft": ABSENT, "iptables-legacy": FOUND})
    check = check_kube_proxy(run, legacy)
    assert (check.status, check.detail) == (Status.OK, "kube-proxy mode: iptables (nf_tables backend)")
    assert all(argv[0] != "iptables-legacy" for argv in run.ran), "legacy nat not loaded: not touched"

    legacy.write_text("filter\nnat\n")
    check = check_kube_proxy(FakeRunner({"iptables-nft": FOUND, "iptables-legacy": FOUND}), legacy)
    assert check.status == Status.WARN and "several modes" in check.detail

    check = check_kube_proxy(FakeRunner({"nft": FOUND, "iptables-nft": ABSENT}), tmp_path / "absent")
    assert (check.status, check.detail) == (Status.OK, "kube-proxy mode: nftables")

    check = check_kube_proxy(FakeRunner({"iptables-nft": DENIED, "nft": ABSENT}), tmp_path / "absent")
    assert check.status == Status.WARN and "CAP_NET_ADMIN" in check.fix

    check = check_kube_proxy(FakeRunner({"iptables-nft": ABSENT, "nft": ABSENT}), tmp_path / "absent")
    assert check.status == Status.WARN and "no kube-proxy rules" in check.detail


def test_check_iptables() -> None:
    assert check_iptables(FakeRunner({})).status == Status.WARN
    check = check_iptables(FakeRunner({"iptables": Output(0, "iptables v1.8.7 (legacy)\n", "")}))
    assert check.status == Status.OK and "1.8.7 (legacy)" in check.detail
    check = check_iptables(FakeRunner({"iptables": Output(0, "what?\n", "")}))
    assert check.status == Status.WARN


# --- the command, end to end ---------------------------------------------------------------------


def run_doctor(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200", "KUBECONFIG": "", "HOME": "/nonexistent-home"}
    return subprocess.run(
        [sys.executable, "-m", "auditor", "doctor", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        env=env,
        check=False,
    )


def test_doctor_json_on_this_machine() -> None:
    proc = run_doctor("--json")
    report = json.loads(proc.stdout)
    checks = report["checks"]
    assert [c["name"] for c in checks] == EXPECTED_CHECKS
    for check in checks:
        assert set(check) == {"name", "status", "detail", "fix"}
        assert check["status"] in {"ok", "warn", "fail"} and check["detail"]
        assert bool(check["fix"]) == (check["status"] != "ok"), check
    statuses = [c["status"] for c in checks]
    assert report["summary"] == {s: statuses.count(s) for s in ("ok", "warn", "fail")}
    assert proc.returncode == (1 if "fail" in statuses else 0), proc.stderr
    by_name = {c["name"]: c for c in checks}
    assert by_name["kernel"]["detail"].startswith(os.uname().release)
    if importlib.util.find_spec("bcc") is not None:  # .ci/install exposes Debian's bcc to the venv
        assert by_name["bcc"]["status"] == "ok"
    assert by_name["api access"]["status"] == "warn"  # no kubeconfig, no token (HOME moved away)
    if os.geteuid() == 0 and Path("/sys/kernel/btf/vmlinux").is_file():
        assert by_name["btf"]["status"] == "ok"


def test_doctor_table_names_every_check() -> None:
    proc = run_doctor()
    for name in EXPECTED_CHECKS:
        assert name in proc.stdout
    assert proc.stdout.rstrip().splitlines()[-1].endswith(" fail")


class VersionHandler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = json.dumps(
            {
                "major": "1",
                "minor": "30",
                "gitVersion": "v1.30.2-doctor-test",
                "gitCommit": "0",
                "gitTreeState": "clean",
                "buildDate": "2024-06-01T00:00:00Z",
                "goVersion": "go1.22",
                "compiler": "gc",
                "platform": "linux/amd64",
            }
        ).encode()
        status = 200 if self.path.rstrip("/") == "/version" else 404  # the client asks /version/
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def api_server() -> Iterator[str]:
    server = HTTPServer(("127.0.0.1", 0), VersionHandler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def write_kubeconfig(path: Path, server: str) -> Path:
    path.write_text(
        f"""apiVersion: v1
kind: Config
clusters: [{{name: c, cluster: {{server: "{server}"}}}}]
users: [{{name: u, user: {{token: test-token}}}}]
contexts: [{{name: x, context: {{cluster: c, user: u}}}}]
current-context: x
"""
    )
    return path


def test_doctor_gets_version_with_kubeconfig(tmp_path: Path, api_server: str) -> None:
    proc = run_doctor("--json", "--kubeconfig", str(write_kubeconfig(tmp_path / "kc", api_server)))
    api = {c["name"]: c for c in json.loads(proc.stdout)["checks"]}["api access"]
    assert api["status"] == "ok", api
    assert "v1.30.2-doctor-test" in api["detail"] and api_server in api["detail"]


def test_doctor_fails_on_unreachable_api(tmp_path: Path, api_server: str) -> None:
    import socket

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{probe.getsockname()[1]}"
    proc = run_doctor(
        "--json", "--timeout", "1", "--kubeconfig", str(write_kubeconfig(tmp_path / "kc", closed))
    )
    api = {c["name"]: c for c in json.loads(proc.stdout)["checks"]}["api access"]
    assert api["status"] == "fail" and "GET /version failed" in api["detail"] and api["fix"]
    assert proc.returncode == 1


def test_doctor_bad_kubeconfig_path_is_one_line() -> None:
    proc = run_doctor("--kubeconfig", "/nonexistent/kubeconfig")
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and "/nonexistent/kubeconfig" in proc.stderr


def test_doctor_as_an_unprivileged_user_reports_instead_of_crashing() -> None:
    """As nobody, without capabilities: tracefs is unreadable and capabilities fail, in JSON, exit 1."""
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv (util-linux) to drop to an unprivileged user")
    drop = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all"]
    reachable = subprocess.run(
        [*drop, sys.executable, "-c", "import auditor"], capture_output=True, timeout=60, check=False
    )
    if reachable.returncode != 0:
        pytest.skip("this checkout is not readable by uid 65534")
    proc = subprocess.run(
        [*drop, sys.executable, "-m", "auditor", "doctor", "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd="/",
        env={**os.environ, "HOME": "/nonexistent-home", "KUBECONFIG": ""},
        check=False,
    )
    by_name = {c["name"]: c for c in json.loads(proc.stdout)["checks"]}
    assert list(by_name) == EXPECTED_CHECKS
    assert by_name["capabilities"]["status"] == "fail" and "BPF" in by_name["capabilities"]["detail"]
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
