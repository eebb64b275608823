"""The dataplane watchers against real rule changes, in a network namespace of their own.

Each test writes kube-proxy-style rules (tests/lab/rules.py for iptables mode, an nftables-mode
table written here), starts the watcher, removes one endpoint the way kube-proxy does, and checks
that exactly that endpoint is reported ``removed``, close to when the change was applied.
"""

from __future__ import annotations

import queue
import subprocess
import time
import uuid
from collections.abc import Iterator

import pytest

from auditor.model.dataplane import DataplaneRecord
from auditor.sources.dataplane import DataplaneWatcher, detect_backend, watch_dataplane
from tests.conftest import require_root, require_tool
from tests.lab.rules import Dataplane, Service

pytestmark = pytest.mark.privileged

BOUND_NS = 200_000_000  # generous for noisy CI; the measured figure is in the report / bench
POD_A, POD_B, PORT = "10.244.0.5", "10.244.0.6", 8080


def _sh(*argv: str, ns: str | None = None, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    full = [*(("ip", "netns", "exec", ns) if ns else ()), *argv]
    proc = subprocess.run(full, input=stdin, capture_output=True, text=True, timeout=20)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(full)}: {proc.stderr.strip()}")
    return proc


@pytest.fixture
def netns() -> Iterator[str]:
    require_root()
    require_tool("ip", "nsenter", "stdbuf")
    name = "ad" + uuid.uuid4().hex[:8]
    _sh("ip", "netns", "add", name)
    try:
        _sh("ip", "link", "set", "lo", "up", ns=name)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=20)


class Collector:
    """on_record target: a queue read with a bounded wait."""

    def __init__(self) -> None:
        self.queue: queue.Queue[DataplaneRecord] = queue.Queue()

    def __call__(self, record: DataplaneRecord) -> None:
        self.queue.put(record)

    def wait(self, count: int, timeout: float = 5.0) -> list[DataplaneRecord]:
        """At least ``count`` records (or what came within ``timeout``), then whatever follows in 0.3 s."""
        out: list[DataplaneRecord] = []
        deadline = time.monotonic() + timeout
        while len(out) < count and time.monotonic() < deadline:
            try:
                out.append(self.queue.get(timeout=max(0.01, deadline - time.monotonic())))
            except queue.Empty:
                break
        settle = time.monotonic() + 0.3
        while time.monotonic() < settle:
            try:
                out.append(self.queue.get(timeout=0.05))
            except queue.Empty:
                continue
        return out


def _started(watcher: DataplaneWatcher, collector: Collector) -> DataplaneWatcher:
    return watcher.start(collector)


def _bcc_ready() -> bool:
    from auditor.sources.live.environment import prepare_bcc_environment

    return prepare_bcc_environment().ready


def _check_kernel_time(watcher: DataplaneWatcher, record: DataplaneRecord, before_ns: int, after_ns: int) -> None:
    """With bcc, the nf_tables watchers time a change by its commit in the kernel: inside the command's run."""
    if not _bcc_ready():
        assert record.source is not None and not record.source.endswith("+kernel-commit")
        return
    assert record.source is not None and record.source.endswith("+kernel-commit"), (record, getattr(watcher, "clock_error", None))
    assert before_ns <= record.time_ns <= after_ns, f"commit at {record.time_ns}, command ran {before_ns}..{after_ns}"
    assert watcher.counters.kernel_stamped == watcher.counters.transactions
    assert watcher.counters.receipt_stamped == 0


def _check_iptables_mode(netns: str, backend: str, tool: str) -> None:
    svc = Service()
    plane = Dataplane(netns, svc, backend=tool)
    plane.install()
    plane.sync([POD_A])  # before the watcher: its initial read must know POD_A
    collector = Collector()
    assert detect_backend(netns) == backend
    watcher = watch_dataplane("node-a", netns=netns)
    assert watcher.backend == backend
    watcher.start(collector)
    try:
        plane.sync([POD_A, POD_B])
        added = collector.wait(1)
        assert [(r.op, r.ip, r.port) for r in added] == [("added", POD_B, PORT)]
        times = plane.sync([POD_B])
        records = collector.wait(1)
    finally:
        watcher.stop()
    assert [(r.op, r.ip, r.port, r.protocol) for r in records] == [("removed", POD_A, PORT, "TCP")]
    record = records[0]
    assert record.backend == backend and record.node == "node-a"
    assert record.service == "default/web"
    assert record.chain == svc.sep_chain(POD_A)
    assert times.before_ns - 1_000_000 <= record.time_ns <= times.after_ns + BOUND_NS, (
        f"record at {record.time_ns}, restore ran {times.before_ns}..{times.after_ns}"
    )
    assert watcher.counters.parse_failures == 0 and watcher.counters.lost == 0
    assert watcher.counters.records == 2
    assert DataplaneRecord.from_json(record.to_json_line()) == record
    if backend == "iptables-nft":
        _check_kernel_time(watcher, record, times.before_ns, times.after_ns)


def test_iptables_nft_removed_endpoint(netns: str) -> None:
    require_tool("xtables-monitor", "iptables-nft-restore")
    _check_iptables_mode(netns, "iptables-nft", "nft")


def test_iptables_legacy_removed_endpoint(netns: str) -> None:
    require_tool("iptables-legacy-restore", "iptables-legacy-save")
    from auditor.sources.live.environment import prepare_bcc_environment

    env = prepare_bcc_environment()
    if not env.ready:
        pytest.skip("bcc cannot compile probes here: " + "; ".join(env.notes))
    _check_iptables_mode(netns, "iptables-legacy", "legacy")


def test_iptables_legacy_ignores_other_namespaces(netns: str) -> None:
    """The probe filters on the caller's network namespace in the kernel: a replace elsewhere is unseen."""
    require_tool("iptables-legacy-restore", "iptables-legacy-save")
    from auditor.sources.live.environment import prepare_bcc_environment

    if not prepare_bcc_environment().ready:
        pytest.skip("bcc cannot compile probes here")
    other = "ad" + uuid.uuid4().hex[:8]
    _sh("ip", "netns", "add", other)
    try:
        collector = Collector()
        watcher = watch_dataplane("node-a", backend="iptables-legacy", netns=netns).start(collector)
        try:
            plane = Dataplane(other, Service(), backend="legacy")
            plane.install()
            plane.sync([POD_A])
            mine = Dataplane(netns, Service(), backend="legacy")
            mine.install()
            mine.sync([POD_B])
            records = collector.wait(1)
        finally:
            watcher.stop()
    finally:
        subprocess.run(["ip", "netns", "del", other], capture_output=True, timeout=20)
    assert [(r.op, r.ip) for r in records] == [("added", POD_B)]
    assert watcher.counters.events == 2  # the two replaces in the watched namespace only


NFT_BASE = """
table ip kube-proxy {
    chain mark-for-masquerade {
        mark set mark or 0x4000
    }
    chain nat-output {
        type nat hook output priority -100; policy accept;
        jump services
    }
    map service-ips {
        type ipv4_addr . inet_proto . inet_service : verdict
    }
    chain services {
        ip daddr . meta l4proto . th dport vmap @service-ips
    }
    chain SVC {
        ip daddr 10.96.0.10 tcp dport 80 ip saddr != 10.244.0.0/16 jump mark-for-masquerade
        numgen random mod 1 vmap { 0 : goto EPA }
    }
    chain EPA {
        ip saddr 10.244.0.5 jump mark-for-masquerade
        meta l4proto tcp dnat to 10.244.0.5:8080
    }
}
add element ip kube-proxy service-ips { 10.96.0.10 . tcp . 80 : goto SVC }
"""
NFT_SVC = "service-ULMVA6XW-default/web/tcp/http"
NFT_EPA = "endpoint-5OJB2KTY-default/web/tcp/http__10.244.0.5/8080"
NFT_EPB = "endpoint-3JOIVZTE-default/web/tcp/http__10.244.0.6/8080"


def _nft_sync(endpoints: list[tuple[str, str]], stale: list[str]) -> str:
    """One kube-proxy sync of the service chain: flush + rewrite the vmap, then drop stale chains."""
    lines = [f"add chain ip kube-proxy {name}" for name, _ in endpoints]
    for name, ip in endpoints:
        lines += [f"flush chain ip kube-proxy {name}",
                  f"add rule ip kube-proxy {name} ip saddr {ip} jump mark-for-masquerade",
                  f"add rule ip kube-proxy {name} meta l4proto tcp dnat to {ip}:{PORT}"]
    vmap = ", ".join(f"{i} : goto {name}" for i, (name, _) in enumerate(endpoints))
    lines += [f"flush chain ip kube-proxy {NFT_SVC}",
              f"add rule ip kube-proxy {NFT_SVC} ip daddr 10.96.0.10 tcp dport 80 "
              "ip saddr != 10.244.0.0/16 jump mark-for-masquerade",
              f"add rule ip kube-proxy {NFT_SVC} numgen random mod {len(endpoints)} vmap {{ {vmap} }}"]
    for name in stale:
        lines += [f"flush chain ip kube-proxy {name}", f"delete chain ip kube-proxy {name}"]
    return "\n".join(lines) + "\n"


def test_nftables_removed_endpoint(netns: str) -> None:
    require_tool("nft")
    base = NFT_BASE.replace("SVC", NFT_SVC).replace("EPA", NFT_EPA)
    _sh("nft", "-f", "-", ns=netns, stdin=base)
    assert detect_backend(netns) == "nftables"
    collector = Collector()
    watcher = watch_dataplane("node-a", netns=netns)
    assert watcher.backend == "nftables"
    watcher.start(collector)
    try:
        _sh("nft", "-f", "-", ns=netns, stdin=_nft_sync([(NFT_EPA, POD_A), (NFT_EPB, POD_B)], []))
        added = collector.wait(1)
        assert [(r.op, r.ip, r.port) for r in added] == [("added", POD_B, PORT)]
        before = time.time_ns()
        _sh("nft", "-f", "-", ns=netns, stdin=_nft_sync([(NFT_EPB, POD_B)], [NFT_EPA]))
        after = time.time_ns()
        records = collector.wait(1)
    finally:
        watcher.stop()
    assert [(r.op, r.ip, r.port, r.protocol) for r in records] == [("removed", POD_A, PORT, "TCP")]
    record = records[0]
    assert record.service == "default/web" and record.chain == NFT_EPA and record.backend == "nftables"
    assert before - 1_000_000 <= record.time_ns <= after + BOUND_NS
    assert watcher.counters.parse_failures == 0 and watcher.counters.lost == 0
    _check_kernel_time(watcher, record, before, after)


def test_nft_commit_clock_sees_only_its_namespace(netns: str) -> None:
    """The commit probe filters on the caller's network namespace in the kernel, and on nf_tables batches."""
    require_tool("nft")
    if not _bcc_ready():
        pytest.skip("bcc cannot compile probes here")
    from auditor.sources.dataplane.kernel_clock import NftCommitClock
    from auditor.sources.dataplane.watcher import netns_inode

    other = "ad" + uuid.uuid4().hex[:8]
    _sh("ip", "netns", "add", other)
    clock = NftCommitClock(netns_inode(netns))
    try:
        # re-measured a few ms after the first measurement: measurement noise (tens of ns) and at
        # most a few us of NTP slew (500 ppm), far below 1 ms
        assert abs(clock.resync()) < 1_000_000
        _sh("nft", "add", "table", "ip", "elsewhere", ns=other)  # another namespace: unseen
        _sh("nft", "list", "ruleset", ns=netns)  # no batch: unseen
        _sh("ip", "link", "set", "lo", "mtu", "65000", ns=netns)  # rtnetlink sendmsg: unseen
        before = time.monotonic_ns()
        proc = subprocess.Popen(["ip", "netns", "exec", netns, "nft", "add", "table", "ip", "here"])
        assert proc.wait(timeout=20) == 0
        after = time.monotonic_ns()
        deadline = time.monotonic() + 5
        while clock.records < 1 and time.monotonic() < deadline:
            clock.poll(50)
        for _ in range(5):
            clock.poll(20)
        assert clock.records == 1 and clock.lost == 0 and clock.bad == 0
        (commit,) = clock.matcher._commits
        assert before <= commit.enter_ns_raw <= commit.exit_ns_raw <= after
        assert commit.ret > 0
        assert clock.matcher.match(commit.tid, after) == commit
    finally:
        clock.close()
        subprocess.run(["ip", "netns", "del", other], capture_output=True, timeout=20)


def test_watcher_stops_in_bounded_time(netns: str) -> None:
    require_tool("xtables-monitor")
    watcher = watch_dataplane("node-a", backend="iptables-nft", netns=netns).start(Collector())
    t0 = time.monotonic()
    watcher.stop()
    assert time.monotonic() - t0 < 3.0
    assert watcher._thread is not None and not watcher._thread.is_alive()


def test_monitor_exit_is_reported(netns: str) -> None:
    require_tool("nft")
    watcher = watch_dataplane("node-a", backend="nftables", netns=netns).start(Collector())
    try:
        proc = watcher._proc  # type: ignore[attr-defined]
        proc.kill()
        thread = watcher._thread
        assert thread is not None
        thread.join(5)
        assert not thread.is_alive()
        assert watcher.error is not None and "nft exited" in watcher.error
    finally:
        watcher.stop()
