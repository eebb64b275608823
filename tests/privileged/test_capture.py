"""``auditor capture`` as root, in network namespaces these tests make (nothing touches the host's
interfaces): on a machine directly (refusals on loopback, read back by tcpdump and by auditor's
reader, stopped by SIGTERM and flushed), the ``kubectl debug node/...`` command line (the options the
README uses, the file where ``kubectl cp`` reads it while the process lingers), and under a SYN storm
over a veth pair: the packets it wrote plus the drops it counted (pcap_stats, written into the file's
statistics block) equal what the interface received (the kernel's own rx counter) and what the storm
sent.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO, require_root, require_tool

pytestmark = [pytest.mark.privileged]

AUDITOR = [sys.executable, "-m", "auditor"]
CONNECTS = """
import socket, sys
refused = 0
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    try:
        s.connect(("127.0.0.1", 9))
    except ConnectionRefusedError:
        refused += 1
    s.close()
print(refused)
"""


def _engine() -> None:
    require_root()
    require_tool("ip", "tcpdump")
    from auditor.sources.pcaplive import engine_available

    ok, why = engine_available()
    if not ok:
        pytest.skip(f"auditor capture needs libpcap: {why}")


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=20)


@pytest.fixture
def netns() -> Iterator[str]:
    _engine()
    name = f"capt{uuid.uuid4().hex[:8]}"
    _ip("netns", "add", name)
    try:
        _ip("-n", name, "link", "set", "lo", "up")
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=20)


def _wait_file(path: Path, proc: subprocess.Popen[str], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not (path.exists() and path.stat().st_size > 0):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "auditor capture did not start"
        time.sleep(0.02)


def _count(pcap: Path, bpf: str) -> int:
    out = subprocess.run(
        ["tcpdump", "-r", str(pcap), "-n", "-q", bpf], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    return len(out.stdout.splitlines())


def _connect(ns: str, n: int) -> int:
    out = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", CONNECTS, str(n)],
                         capture_output=True, text=True, timeout=60, check=True)  # fmt: skip
    return int(out.stdout)


def test_on_a_machine_sigterm_flushes(netns: str, tmp_path: Path) -> None:
    path = tmp_path / "lo.pcapng"
    argv = [
        *AUDITOR,
        "capture",
        "-i",
        "lo",
        "--netns",
        netns,
        "--node",
        "node-a",
        "-w",
        str(path),
        "--json",
        "-q",
    ]
    proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_file(path, proc)
    refused = _connect(netns, 200)
    assert refused == 200
    proc.send_signal(signal.SIGTERM)  # no --duration: the signal ends it, what the ring holds is written
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    stats = json.loads(out)
    assert stats["stopped_by"] == "signal" and stats["dropped"] == 0
    assert _count(path, "tcp[tcpflags] & (tcp-syn|tcp-ack) == tcp-syn and dst port 9") == 200
    assert _count(path, "tcp[tcpflags] & tcp-rst != 0 and src port 9") == 200
    assert stats["packets"] == 400 == _count(path, "")  # the filter in the kernel: nothing else
    doc = subprocess.run([*AUDITOR, "pcap", "summary", str(path), "--json"], cwd=REPO, capture_output=True,
                         text=True, timeout=60, check=True)  # fmt: skip
    summary = json.loads(doc.stdout)
    assert (summary["node"], summary["dropped"], summary["tcp_rst"], summary["tcp_syn"]) == (
        "node-a",
        0,
        200,
        200,
    )
    assert summary["errors"] == []


def test_kubectl_debug_command_line(netns: str, tmp_path: Path) -> None:
    """The README's `kubectl debug node/NAME ... -- auditor capture --node NAME -w /tmp/NAME.pcapng
    --duration D --linger L`: the file is complete (statistics block written) while the process still
    lingers, so `kubectl cp <pod>:/tmp/NAME.pcapng` finds it whole; then it exits 0 by itself."""
    path = tmp_path / "worker-1.pcapng"
    argv = [*AUDITOR, "capture", "--netns", netns, "--node", "worker-1", "-w", str(path), "--duration", "2s",
            "--linger", "3s"]  # fmt: skip
    started = time.monotonic()
    proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_file(path, proc)
    assert _connect(netns, 20) == 20
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:  # finished writing: the last block is the statistics block
        data = path.read_bytes()
        if len(data) >= 12 and int.from_bytes(data[-4:], "little") <= len(data):
            last = len(data) - int.from_bytes(data[-4:], "little")
            if int.from_bytes(data[last : last + 4], "little") == 5:
                break
        time.sleep(0.1)
    assert proc.poll() is None, "it must linger after writing, for kubectl cp"
    copied = tmp_path / "copied.pcapng"
    shutil.copyfile(path, copied)  # what kubectl cp (tar of the file) takes while it lingers
    _out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert time.monotonic() - started >= 4.5  # 2 s of capture + 3 s of linger (less the start-up)
    assert "staying up 3s for kubectl cp" in err
    doc = subprocess.run([*AUDITOR, "pcap", "summary", str(copied), "--json"], cwd=REPO, capture_output=True,
                         text=True, timeout=60, check=True)  # fmt: skip
    summary = json.loads(doc.stdout)
    assert summary["node"] == "worker-1" and summary["dropped"] == 0 and summary["errors"] == []
    assert summary["tcp_syn"] == summary["tcp_rst"] == 20


def test_max_mb_bounds_the_file(netns: str, tmp_path: Path) -> None:
    """--max-mb 1: it stops by itself once the file reaches 1 MiB (at most one ring block more), the file
    whole, its statistics block at the end."""
    path = tmp_path / "bounded.pcapng"
    argv = [*AUDITOR, "capture", "-i", "lo", "--netns", netns, "--node", "n", "-w", str(path), "--max-mb", "1",
            "--json", "-q", "--duration", "60s"]  # fmt: skip
    proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_file(path, proc)
    for _ in range(10):  # ~140 bytes a packet on loopback: 1 MiB is ~7,500 packets
        if proc.poll() is not None:
            break
        _connect(netns, 2000)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    stats = json.loads(out)
    assert stats["stopped_by"] == "max-mb", stats
    size = path.stat().st_size
    assert stats["bytes"] == size and 1 << 20 <= size <= 2 << 20, stats
    doc = subprocess.run([*AUDITOR, "pcap", "summary", str(path), "--json"], cwd=REPO, capture_output=True,
                         text=True, timeout=60, check=True)  # fmt: skip
    summary = json.loads(doc.stdout)
    assert summary["frames"] == stats["packets"] and summary["dropped"] == 0 and summary["errors"] == []


def test_scapy_fallback_engine(netns: str, tmp_path: Path) -> None:
    """Where libpcap is missing the command falls back to scapy (forced here): the same file format."""
    pytest.importorskip("scapy", reason="the fallback engine needs scapy")
    path = tmp_path / "scapy.pcapng"
    argv = ["ip", "netns", "exec", netns, *AUDITOR, "capture", "--engine", "scapy", "-i", "lo", "--node", "node-s",
            "-w", str(path), "--json", "-q"]  # fmt: skip
    proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_file(path, proc)
    assert _connect(netns, 50) == 50
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    stats = json.loads(out)
    assert stats["engine"] == "scapy" and stats["packets"] == 100 and stats["dropped"] == 0, stats
    assert _count(path, "tcp[tcpflags] & tcp-rst != 0 and src port 9") == 50
    doc = subprocess.run([*AUDITOR, "pcap", "summary", str(path), "--json"], cwd=REPO, capture_output=True,
                         text=True, timeout=60, check=True)  # fmt: skip
    summary = json.loads(doc.stdout)
    assert (summary["node"], summary["tcp_syn"], summary["tcp_rst"], summary["errors"]) == (
        "node-s",
        50,
        50,
        [],
    )


# -- the storm -----------------------------------------------------------------------------------------


def _synstorm() -> Path:
    gcc = shutil.which("gcc") or shutil.which("cc")
    if gcc is None:
        pytest.skip("needs gcc to build bench/synstorm.c (installed by .ci/install)")
    binary = Path("/tmp") / f"auditor-synstorm-{os.getpid()}"
    subprocess.run(
        [gcc, "-O2", "-o", str(binary), str(REPO / "bench" / "synstorm.c")], check=True, timeout=120
    )
    return binary


def _rx_packets(ns: str, dev: str) -> int:
    out = subprocess.run(["ip", "-n", ns, "-j", "-s", "link", "show", dev], capture_output=True, text=True,
                         check=True, timeout=20)  # fmt: skip
    return int(json.loads(out.stdout)[0]["stats64"]["rx"]["packets"])


@pytest.fixture
def veth() -> Iterator[tuple[str, str]]:
    """Namespaces A (sender, 10.99.0.1) and B (10.99.0.2) joined by a veth pair, IPv6 off and the
    neighbour entry static, so B's interface receives the storm's packets and nothing else."""
    _engine()
    tag = uuid.uuid4().hex[:6]
    a, b = f"capa{tag}", f"capb{tag}"
    try:
        for ns in (a, b):
            _ip("netns", "add", ns)
            subprocess.run(["ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"],
                           check=True, timeout=20)  # fmt: skip
        _ip("link", "add", "sa0", "netns", a, "type", "veth", "peer", "name", "sb0", "netns", b)
        _ip("-n", a, "addr", "add", "10.99.0.1/24", "dev", "sa0")
        _ip("-n", b, "addr", "add", "10.99.0.2/24", "dev", "sb0")
        _ip("-n", a, "link", "set", "sa0", "up")
        _ip("-n", b, "link", "set", "sb0", "up")
        out = subprocess.run(["ip", "-n", b, "-j", "link", "show", "sb0"], capture_output=True, text=True,
                             check=True, timeout=20)  # fmt: skip
        mac = json.loads(out.stdout)[0]["address"]
        _ip("-n", a, "neigh", "add", "10.99.0.2", "lladdr", mac, "dev", "sa0", "nud", "permanent")
        yield a, b
    finally:
        for ns in (a, b):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=20)


def test_storm_drops_counted_equal_the_kernels(veth: tuple[str, str], tmp_path: Path) -> None:
    """A 1 MiB ring, the capture and a raw SYN storm (~350k SYN/s here) sharing one CPU: whatever it
    could not keep, the kernel dropped and counted; written + dropped = received on the interface =
    sent by the storm, and the file's statistics block carries the same drop count."""
    a, b = veth
    storm = _synstorm()
    try:
        path = tmp_path / "storm.pcapng"
        rx0 = _rx_packets(b, "sb0")
        # B answers nothing: the storm's source is B's own address (a martian on arrival), so only SYNs
        argv = ["taskset", "-c", "0", *AUDITOR, "capture", "-i", "sb0", "--netns", b, "--node", "storm", "-w",
                str(path), "--buffer-mb", "1", "--json", "-q"]  # fmt: skip
        proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        _wait_file(path, proc)
        # the storm at full speed next to a capture process slowed down to a crawl (SIGSTOP for 0.3 s
        # of the storm) : its 1 MiB ring must overflow, and the drops must all be counted
        sent = subprocess.Popen(["taskset", "-c", "0", "ip", "netns", "exec", a, str(storm), "-a", "10.99.0.2",
                                 "-p", "9", "-s", "1.0"], stdout=subprocess.PIPE, text=True)  # fmt: skip
        time.sleep(0.2)
        proc.send_signal(signal.SIGSTOP)
        time.sleep(0.3)
        proc.send_signal(signal.SIGCONT)
        result = json.loads(sent.communicate(timeout=30)[0])
        time.sleep(0.3)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        stats = json.loads(out)
        rx = _rx_packets(b, "sb0") - rx0
        assert result["send_errors"] == 0 and rx == result["syns"] > 0
        assert stats["dropped"] > 0, stats  # the ring overflowed while the capture was stopped
        assert stats["packets"] + stats["dropped"] == rx, (stats, rx)
        assert stats["received"] == rx, (stats, rx)
        summary = json.loads(subprocess.run([*AUDITOR, "pcap", "summary", str(path), "--json"], cwd=REPO,
                                            capture_output=True, text=True, timeout=120, check=True).stdout)  # fmt: skip
        assert summary["frames"] == summary["tcp_syn"] == stats["packets"]
        assert summary["dropped"] == stats["dropped"]
        assert any(f"capture dropped {stats['dropped']} packet(s)" in e for e in summary["errors"])
    finally:
        storm.unlink(missing_ok=True)
