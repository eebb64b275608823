"""Probe overhead and delivery, side by side in one run (root; run: .venv/bin/python bench/bench_probes.py).

A refusal storm on loopback from a separate process (bench/storm.c, compiled with gcc into bench/out/):
connect() to a closed port, back to back. Modes, interleaved round by round so load from elsewhere
hits them alike:

* untraced: the storm alone, connections/s;
* traced, live reader: probes loaded, this process reads the ring buffer while the storm runs:
  connections/s, and records/s delivered to Python *sustained* (limited by how fast the storm makes them);
* traced, kernel only: probes loaded, nobody reads during a count-bounded storm (kernel cost alone);
  then the full ring buffer is drained: records/s delivered to Python *draining a backlog* (the reader's
  own ceiling);
* the agent (``auditor agent --no-kube --dataplane off``, whole process) during a storm: CPU, peak RSS,
  received vs kernel seen (bench_agent.py).

With ``--pin`` (default when there are 2+ CPUs) the storm runs on CPU 0 (taskset), the reader and the
agent on CPU 1. "Delivered" = raw records handed to Python by the ring buffer (``ProbeSet.poll_raw``);
decoding is measured apart. Goals (issue 4): <= 10 % slowdown, >= 400,000 events/s delivered with 0
lost, in-kernel seen == user-space received. Exit 1 if counts disagree, 2 on a usage/setup error.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import struct
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from auditor.sources.live import ProbeConfig, ProbeSet, decode_event

HERE = Path(__file__).resolve().parent
CLOSED_PORT = 9
FAMILIES = ("tcp_reset", "sock_state")
RING_PAGES = 16384  # 64 MiB: holds the kernel-only storm's whole backlog (~80 bytes per record)


class SetupError(Exception):
    """The benchmark cannot run here (no gcc, not root...)."""


def build_storm(name: str = "storm") -> Path:
    """bench/out/<name>-<hash of <name>.c>, compiled once with gcc -O2."""
    src = HERE / f"{name}.c"
    binary = HERE / "out" / f"{name}-{hashlib.sha256(src.read_bytes()).hexdigest()[:12]}"
    if binary.exists():
        return binary
    gcc = shutil.which("gcc") or shutil.which("cc")
    if gcc is None:
        raise SetupError("gcc not found: apt-get install gcc")
    binary.parent.mkdir(parents=True, exist_ok=True)
    tmp = binary.with_suffix(f".tmp{os.getpid()}")
    built = subprocess.run([gcc, "-O2", "-Wall", "-o", str(tmp), str(src)], capture_output=True, text=True,
                           timeout=120, check=False)  # fmt: skip
    if built.returncode != 0:
        raise SetupError(f"cannot compile {src}: {built.stderr.strip()[:300]}")
    os.replace(tmp, binary)
    return binary


@dataclass
class Storm:
    """A running storm process; :meth:`result` waits for its JSON line."""

    proc: subprocess.Popen[str]

    @classmethod
    def start(
        cls, binary: Path, seconds: float, count: int = 0, workers: int = 1, cpu: int | None = None
    ) -> Storm:
        argv = [str(binary), "-p", str(CLOSED_PORT), "-s", str(seconds), "-n", str(count), "-w", str(workers)]
        if cpu is not None:
            argv = ["taskset", "-c", str(cpu), *argv]
        return cls(subprocess.Popen(argv, stdout=subprocess.PIPE, text=True))

    def running(self) -> bool:
        return self.proc.poll() is None

    def result(self, timeout_s: float = 60) -> dict[str, Any]:
        try:
            out, _ = self.proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.communicate()
            raise
        res: dict[str, Any] = json.loads(out)
        if self.proc.returncode != 0 or res["other_errors"]:
            raise SetupError(
                f"storm: {res['other_errors']} connects were not refused (is port {CLOSED_PORT} open?)"
            )
        return res


def settle(probes: ProbeSet) -> dict[str, int]:
    """Drain the ring buffer until the kernel counters and Python's agree (bounded); totals."""
    totals: dict[str, int] = {}
    for _ in range(50):
        while probes.poll_raw(0):
            pass
        c = probes.counters().values()
        totals = {k: sum(x[k] for x in c) for k in ("seen", "lost", "received")}
        if totals["seen"] == totals["received"] + totals["lost"]:
            break
        time.sleep(0.02)
    return totals


def delta(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {k: after[k] - before[k] for k in after}


def traced_live(
    probes: ProbeSet, storm_bin: Path, seconds: float, workers: int, cpu: int | None
) -> dict[str, Any]:
    """Storm while this process reads: connections/s, records delivered during the storm."""
    before = settle(probes)
    storm = Storm.start(storm_bin, seconds, workers=workers, cpu=cpu)
    delivered, t0 = 0, time.perf_counter()
    while storm.running() and time.perf_counter() - t0 < seconds + 30:
        delivered += len(probes.poll_raw(10))
    res = storm.result()
    wall = res["seconds"]
    counts = delta(settle(probes), before)
    return {"cps": res["conn_per_s"], "cpu_cps": res["conn_per_cpu_s"], "conns": res["connections"],
            "rate": delivered / wall, **counts}  # fmt: skip


def traced_backlog(
    probes: ProbeSet, storm_bin: Path, count: int, workers: int, cpu: int | None
) -> dict[str, Any]:
    """A count-bounded storm nobody reads during (kernel cost alone), then the timed drain of the backlog."""
    before = settle(probes)
    res = Storm.start(storm_bin, 120, count=count, workers=workers, cpu=cpu).result(timeout_s=150)
    time.sleep(0.05)  # the last records land
    backlog, t0 = 0, time.perf_counter()
    for _ in range(1000):  # one poll usually takes everything; bounded anyway
        got = len(probes.poll_raw(0))
        backlog += got
        if not got:
            break
    drain_s = time.perf_counter() - t0
    counts = delta(settle(probes), before)
    return {"cps": res["conn_per_s"], "cpu_cps": res["conn_per_cpu_s"], "backlog": backlog, "drain_rate": backlog / drain_s if drain_s else 0.0,
            **counts}  # fmt: skip


def syn_storm(binary: Path, seconds: float, cpu: int | None) -> subprocess.Popen[str]:
    argv = [str(binary), "-p", str(CLOSED_PORT), "-s", str(seconds)]
    if cpu is not None:
        argv = ["taskset", "-c", str(cpu), *argv]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)


def syn_result(proc: subprocess.Popen[str], timeout_s: float = 60) -> dict[str, Any]:
    try:
        out, _ = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise
    if proc.returncode != 0 or not out.strip():
        raise SetupError(f"synstorm failed with status {proc.returncode} (raw sockets need root)")
    res: dict[str, Any] = json.loads(out)
    return res


def syn_untraced(binary: Path, seconds: float, cpu: int | None) -> dict[str, Any]:
    return syn_result(syn_storm(binary, seconds, cpu))


def syn_traced(probes: ProbeSet, binary: Path, seconds: float, cpu: int | None) -> dict[str, Any]:
    """The packet-rate storm while this process reads: SYNs/s, events/s delivered, per-kind counts."""
    before = settle(probes)
    before_kinds = {k: v["seen"] for k, v in probes.counters().items()}
    proc = syn_storm(binary, seconds, cpu)
    delivered, t0 = 0, time.perf_counter()
    while proc.poll() is None and time.perf_counter() - t0 < seconds + 30:
        delivered += len(probes.poll_raw(10))
    res = syn_result(proc)
    after = settle(probes)
    kinds = {k: v["seen"] - before_kinds[k] for k, v in probes.counters().items()}
    return {"sps": res["syn_per_s"], "cpu_sps": res["syn_per_cpu_s"], "syns": res["syns"],
            "rate": delivered / res["seconds"], "kinds": {k: n for k, n in kinds.items() if n},
            **delta(after, before)}  # fmt: skip


def program_stats(probes: ProbeSet) -> dict[str, tuple[int, int]]:
    """Per loaded BPF program: (run count, run time ns) from /proc/self/fdinfo (kernel.bpf_stats_enabled)."""
    out = {}
    for name, fn in getattr(probes._bpf, "funcs", {}).items():  # bcc's loaded programs (bench-only peek)
        info = dict(
            line.split(":", 1)
            for line in Path(f"/proc/self/fdinfo/{fn.fd}").read_text().splitlines()
            if ":" in line
        )
        out[name.decode() if isinstance(name, bytes) else str(name)] = (
            int(info.get("run_cnt", "0")),
            int(info.get("run_time_ns", "0")),
        )
    return out


def traced_stats(
    storm_bin: Path, config: ProbeConfig, seconds: float, workers: int, cpu: int | None
) -> dict[str, Any]:
    """A storm with kernel.bpf_stats_enabled=1 (restored after): BPF run time per program and per connection."""
    knob = Path("/proc/sys/kernel/bpf_stats_enabled")
    previous = knob.read_text().strip()
    probes = ProbeSet(config).start()
    try:
        knob.write_text("1")
        before = program_stats(probes)
        storm = Storm.start(storm_bin, seconds, workers=workers, cpu=cpu)
        t0 = time.perf_counter()
        while storm.running() and time.perf_counter() - t0 < seconds + 30:
            probes.poll_raw(10)
        res = storm.result()
        after = program_stats(probes)
    finally:
        knob.write_text(previous)
        probes.close()
    per_prog = {k: (after[k][0] - before[k][0], after[k][1] - before[k][1]) for k in after}
    total_ns = sum(ns for _, ns in per_prog.values())
    return {
        "cps": res["conn_per_s"],
        "ns_per_call": {k: ns / cnt for k, (cnt, ns) in per_prog.items() if cnt},
        "calls_per_conn": {k: cnt / max(1, res["connections"]) for k, (cnt, _) in per_prog.items()},
        "ns_per_conn": total_ns / max(1, res["connections"]),
    }


def decode_rate(n: int = 200_000) -> float:
    raw = struct.pack(
        "<QIIIHH16s16sHHII4x", 1, 1, 4026531833, 1, 2, 0, b"\x7f\0\0\x01", b"\x7f\0\0\x01", 9, 40000, 7, 1
    )
    t0 = time.perf_counter()
    for _ in range(n):
        decode_event(raw, 0)
    return n / (time.perf_counter() - t0)


def batch_decode_rate(n: int = 400_000) -> float:
    from auditor.sources.live.decode_batch import decode_records

    decode_records([], 0)  # imports pandas outside the timing
    records = [
        struct.pack(
            "<QIIIHH16s16sHHII4x", i, 1 + i % 3, 4026531833, 1, 2, 0, b"\x7f\0\0\x01", b"\x7f\0\0\x01",
            9, 40000 + i % 20000, 7, 1,
        )
        for i in range(n)
    ]  # fmt: skip
    t0 = time.perf_counter()
    df, bad = decode_records(records, 0)
    assert len(df) == n and bad == 0
    return n / (time.perf_counter() - t0)


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=4.0, help="length of each timed storm")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--workers", type=int, default=1, help="storm processes")
    ap.add_argument("--backlog", type=int, default=200_000, help="connections of the kernel-only storm")
    ap.add_argument("--wakeup-batch", type=int, default=64)
    ap.add_argument("--syn-seconds", type=float, default=4.0,
                    help="length of each packet-rate (raw SYN) storm, in every round (0: skip)")  # fmt: skip
    ap.add_argument("--pin", action=argparse.BooleanOptionalAction, default=(os.cpu_count() or 1) > 1,
                    help="storm on CPU 0, reader and agent on CPU 1 (default with 2+ CPUs)")  # fmt: skip
    ap.add_argument("--agent-seconds", type=float, default=8.0, help="storm length with the agent (0: skip)")
    ap.add_argument("--bpf-stats", action=argparse.BooleanOptionalAction, default=True,
                    help="one more storm with kernel.bpf_stats_enabled=1 (restored): BPF ns per connection")  # fmt: skip
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--compare-probes", metavar="DIR",
                    help="only the BPF run time, per program and connection: the probes of DIR (e.g. a `git "
                         "archive` of an older commit's probes/) vs this tree's, interleaved, --rounds each")  # fmt: skip
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench_probes: needs root (loads eBPF probes)", file=sys.stderr)
        return 2
    if not (0 < args.seconds <= 600 and 1 <= args.rounds <= 20 and 1 <= args.backlog <= 600_000):
        print("bench_probes: --seconds 0-600, --rounds 1-20, --backlog 1-600000", file=sys.stderr)
        return 2
    try:
        storm_bin = build_storm()
        syn_bin = build_storm("synstorm") if args.syn_seconds > 0 else None
    except SetupError as exc:
        print(f"bench_probes: {exc}", file=sys.stderr)
        return 2
    storm_cpu = 0 if args.pin else None
    reader_cpus = {1} if args.pin else set(range(os.cpu_count() or 1))
    os.sched_setaffinity(0, reader_cpus)
    if args.compare_probes:
        return compare_probes(Path(args.compare_probes), storm_bin, args, storm_cpu)
    load_before = loadavg()
    base: list[dict[str, Any]] = []
    live: list[dict[str, Any]] = []
    backlog: list[dict[str, Any]] = []
    config = ProbeConfig(families=FAMILIES, ringbuf_pages=RING_PAGES, wakeup_batch=args.wakeup_batch)
    # the packet-rate storm with every family, as the agent loads them; loopback counts as a pod CIDR
    # so that the SYN and RST drops (NO_SOCKET) are traced too
    syn_config = ProbeConfig(pod_cidrs=("127.0.0.0/8",), ringbuf_pages=RING_PAGES, wakeup_batch=args.wakeup_batch)
    syn_base: list[dict[str, Any]] = []
    syn_live: list[dict[str, Any]] = []
    try:
        for _ in range(args.rounds):
            if syn_bin is not None:
                syn_base.append(syn_untraced(syn_bin, args.syn_seconds, storm_cpu))
                probes = ProbeSet(syn_config).start()
                try:
                    syn_live.append(syn_traced(probes, syn_bin, args.syn_seconds, storm_cpu))
                finally:
                    probes.close()
            storm = Storm.start(storm_bin, args.seconds, workers=args.workers, cpu=storm_cpu)
            base.append(storm.result())
            probes = ProbeSet(config).start()
            try:
                live.append(traced_live(probes, storm_bin, args.seconds, args.workers, storm_cpu))
                backlog.append(traced_backlog(probes, storm_bin, args.backlog, args.workers, storm_cpu))
            finally:
                probes.close()
        stats = None
        if args.bpf_stats:
            stats = traced_stats(storm_bin, config, min(args.seconds, 3.0), args.workers, storm_cpu)
        agent: dict[str, Any] | None = None
        if args.agent_seconds > 0:
            from bench_agent import measure_agent

            agent = measure_agent(storm_bin, args.agent_seconds, args.workers, storm_cpu,
                                  sorted(reader_cpus)[0] if args.pin else None)  # fmt: skip
    except SetupError as exc:
        print(f"bench_probes: {exc}", file=sys.stderr)
        return 2
    runs = live + backlog + syn_live
    syn: dict[str, Any] | None = None
    if syn_live:
        syn = {
            "untraced_sps": statistics.median(r["syn_per_s"] for r in syn_base),
            "untraced_cpu_sps": statistics.median(r["syn_per_cpu_s"] for r in syn_base),
            "live_sps": statistics.median(r["sps"] for r in syn_live),
            "live_cpu_sps": statistics.median(r["cpu_sps"] for r in syn_live),
            "rate": statistics.median(r["rate"] for r in syn_live),
            "min_rate": min(r["rate"] for r in syn_live),
            "events_per_syn": sum(r["seen"] for r in syn_live) / max(1, sum(r["syns"] for r in syn_live)),
            "kinds": {k: sum(r["kinds"].get(k, 0) for r in syn_live) for k in {k for r in syn_live for k in r["kinds"]}},
            "seen": sum(r["seen"] for r in syn_live),
            "received": sum(r["received"] for r in syn_live),
            "lost": sum(r["lost"] for r in syn_live),
            "seconds": args.syn_seconds,
        }
    result = {
        "untraced_cps": statistics.median(r["conn_per_s"] for r in base),
        "untraced_cpu_cps": statistics.median(r["conn_per_cpu_s"] for r in base),
        "live_cpu_cps": statistics.median(r["cpu_cps"] for r in live),
        "kernel_only_cpu_cps": statistics.median(r["cpu_cps"] for r in backlog),
        "live_cps": statistics.median(r["cps"] for r in live),
        "kernel_only_cps": statistics.median(r["cps"] for r in backlog),
        "sustained_rate": statistics.median(r["rate"] for r in live),
        "drain_rate": statistics.median(r["drain_rate"] for r in backlog),
        "backlog_records": statistics.median(r["backlog"] for r in backlog),
        "events_per_conn": sum(r["seen"] for r in live) / max(1, sum(r["conns"] for r in live)),
        "seen": sum(r["seen"] for r in runs),
        "received": sum(r["received"] for r in runs),
        "lost": sum(r["lost"] for r in runs),
        "decode_per_s": decode_rate(),
        "batch_decode_per_s": batch_decode_rate(),
        "bpf_stats": stats,
        "syn": syn,
        "agent": agent,
        "rounds": args.rounds, "seconds": args.seconds, "workers": args.workers, "pinned": args.pin,
        "wakeup_batch": args.wakeup_batch, "cpus": os.cpu_count(),
        "load_before": load_before, "load_after": loadavg(), "kernel": os.uname().release,
    }  # fmt: skip
    counts_ok = result["seen"] == result["received"] + result["lost"]
    if agent is not None:
        counts_ok = counts_ok and agent["kernel_seen"] == agent["received"] + agent["kernel_lost"]
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print_table(result)
    return 0 if counts_ok else 1


def compare_probes(other: Path, storm_bin: Path, args: argparse.Namespace, cpu: int | None) -> int:
    """BPF ns per call and per connection of the probes in ``other`` and in this tree, interleaved."""
    runs: dict[str, list[dict[str, Any]]] = {"other": [], "this tree": []}
    for _ in range(args.rounds):
        for name, directory in (("other", other), ("this tree", None)):
            extra = {"probes_dir": directory} if directory is not None else {}
            config = ProbeConfig(families=FAMILIES, ringbuf_pages=RING_PAGES, wakeup_batch=args.wakeup_batch, **extra)
            runs[name].append(traced_stats(storm_bin, config, args.seconds, args.workers, cpu))
    print(f"BPF run time (kernel.bpf_stats_enabled), median of {args.rounds} interleaved {args.seconds:g} s storms; "
          f"load average {loadavg()}")  # fmt: skip
    print(f"{'':32} {str(other)[-24:]:>24} {'this tree':>12}")
    names = sorted({k for r in runs["this tree"] for k in r["ns_per_call"]})
    for name in names:
        cells = [statistics.median(r["ns_per_call"].get(name, 0.0) for r in runs[k]) for k in runs]
        print(f"{name + ' ns/call':32} {cells[0]:>24,.0f} {cells[1]:>12,.0f}")
    cells = [statistics.median(r["ns_per_conn"] for r in runs[k]) for k in runs]
    print(f"{'per refused connection, ns':32} {cells[0]:>24,.0f} {cells[1]:>12,.0f}")
    cells = [statistics.median(r["cps"] for r in runs[k]) for k in runs]
    print(f"{'connections/s':32} {cells[0]:>24,.0f} {cells[1]:>12,.0f}")
    return 0


def print_table(r: dict[str, Any]) -> None:
    def slow(cps: float, key: str = "untraced_cps") -> float:
        return 100 * (1 - cps / r[key]) if r[key] else 0.0

    def slow_row(label: str, key: str, base: str) -> tuple[str, str, str, str]:
        pct = slow(r[key], base)
        return (label, f"{pct:.1f} %", "<= 10 %", verdict(pct <= 10))

    rows: list[tuple[str, str, str, str]] = [
        ("connections/s untraced", f"{r['untraced_cps']:,.0f}", "", ""),
        ("connections/s traced, live reader", f"{r['live_cps']:,.0f}", "", ""),
        ("  slowdown", f"{slow(r['live_cps']):.1f} %", "<= 10 %", verdict(slow(r["live_cps"]) <= 10)),
        ("connections/s traced, kernel only", f"{r['kernel_only_cps']:,.0f}", "", ""),
        ("  slowdown", f"{slow(r['kernel_only_cps']):.1f} %", "<= 10 %", verdict(slow(r["kernel_only_cps"]) <= 10)),
        ("connections per storm CPU-second untraced", f"{r['untraced_cpu_cps']:,.0f}", "", ""),
        ("  traced, live reader", f"{r['live_cpu_cps']:,.0f}", "", ""),
        slow_row("  slowdown (CPU-time based, less load-sensitive)", "live_cpu_cps", "untraced_cpu_cps"),
        ("  traced, kernel only", f"{r['kernel_only_cpu_cps']:,.0f}", "", ""),
        slow_row("  slowdown (CPU-time based, less load-sensitive)", "kernel_only_cpu_cps", "untraced_cpu_cps"),
        ("events per refused connection", f"{r['events_per_conn']:.2f}", "(info)", ""),
        ("events/s to Python, sustained in connect storm", f"{r['sustained_rate']:,.0f}", "(info)", ""),
        (f"events/s to Python, draining {r['backlog_records']:,.0f}", f"{r['drain_rate']:,.0f}", ">= 400,000",
         verdict(r["drain_rate"] >= 400_000)),
    ]  # fmt: skip
    y = r["syn"]
    if y is not None:
        rows += [
            ("packet-rate storm (raw SYNs, bench/synstorm.c):", "", "", ""),
            ("  SYNs/s untraced", f"{y['untraced_sps']:,.0f}", "", ""),
            ("  SYNs/s traced, live reader", f"{y['live_sps']:,.0f}", "", ""),
            ("  slowdown per SYN (~5 us of kernel work each)", f"{100 * (1 - y['live_sps'] / y['untraced_sps']):.1f} %", "(info)", ""),
            ("  events per SYN", f"{y['events_per_syn']:.2f}", "(info)", ""),
            *((f"    {kind}", f"{n:,}", "(info)", "") for kind, n in sorted(y["kinds"].items())),
            ("  events/s to Python, sustained in storm", f"{y['rate']:,.0f}", ">= 400,000", verdict(y["rate"] >= 400_000)),
            ("    lowest of the rounds", f"{y['min_rate']:,.0f}", ">= 400,000", verdict(y["min_rate"] >= 400_000)),
            ("  lost (in-kernel counter)", f"{y['lost']:,}", "0", verdict(y["lost"] == 0)),
            ("  in-kernel seen / Python received", f"{y['seen']:,} / {y['received']:,}", "equal",
             verdict(y["seen"] == y["received"])),
        ]
    rows += [
        ("events lost (in-kernel counter), all phases", f"{r['lost']:,}", "0", verdict(r["lost"] == 0)),
        ("in-kernel seen / Python received, all phases", f"{r['seen']:,} / {r['received']:,}", "equal",
         verdict(r["seen"] == r["received"])),
        ("decode to PacketEvent, per s", f"{r['decode_per_s']:,.0f}", "(info)", ""),
        ("batch decode to table, per s", f"{r['batch_decode_per_s']:,.0f}", "(info)", ""),
    ]  # fmt: skip
    b = r["bpf_stats"]
    if b is not None:
        base_ns = 1e9 / r["untraced_cpu_cps"] if r["untraced_cpu_cps"] else 0.0  # CPU time per connection
        rows += [
            (
                f"{name}: BPF ns/call x calls/conn",
                f"{ns:,.0f} x {b['calls_per_conn'][name]:.2f}",
                "(info)",
                "",
            )
            for name, ns in sorted(b["ns_per_call"].items())
        ]
        rows += [
            ("BPF run time per connection", f"{b['ns_per_conn']:,.0f} ns", "(info)", ""),
            ("  share of an untraced connection's CPU time", f"{100 * b['ns_per_conn'] / base_ns:.1f} %" if base_ns else "-",
             "(info)", ""),
        ]  # fmt: skip
    a = r["agent"]
    if a is not None:
        rows += [
            (f"agent: storm {a['seconds']:.1f} s at conn/s", f"{a['storm_cps']:,.0f}", "", ""),
            ("agent: CPU s (utilization) in storm", f"{a['cpu_s']:.2f} s ({a['cpu_pct']:.0f} %)", "(info)", ""),
            ("agent: RSS idle / peak in storm", f"{a['idle_rss_mb']:.0f} / {a['peak_rss_mb']:.0f} MB", "(info)", ""),
            ("agent: peak RSS start-up / whole run", f"{a['startup_peak_rss_mb']:.0f} / {a['peak_rss_whole_run_mb']:.0f} MB",
             "(info)", ""),
            ("agent: kernel seen / received + lost", f"{a['kernel_seen']:,} / {a['received'] + a['kernel_lost']:,}",
             "equal", verdict(a["kernel_seen"] == a["received"] + a["kernel_lost"])),
            ("agent: events/s received", f"{a['received_rate']:,.0f}", "(info)", ""),
            ("agent: lost (kernel / queue / other)", f"{a['kernel_lost']:,} / {a['queue_lost']:,} / {a['other_lost']:,}",
             "0", verdict(a["kernel_lost"] + a["queue_lost"] + a["other_lost"] == 0)),
            ("agent: written to the event log", f"{a['written']:,}", "(info)", ""),
        ]  # fmt: skip
    print(
        f"machine: {r['cpus']} CPUs, Linux {r['kernel']}; load average {r['load_before']} before, "
        f"{r['load_after']} after; storm {'on CPU 0, reader/agent on CPU 1' if r['pinned'] else 'unpinned'}"
    )
    print(f"median of {r['rounds']} interleaved rounds, {r['seconds']:g} s storms, {r['workers']} storm "
          f"process(es), wakeup every {r['wakeup_batch']} events per CPU")  # fmt: skip
    print(f"{'':50}  {'figure':>22}  {'goal':>10}  result")
    print(f"{'-' * 50}  {'-' * 22}  {'-' * 10}  ------")
    for name, value, goal, res in rows:
        print(f"{name:50}  {value:>22}  {goal:>10}  {res}")


if __name__ == "__main__":
    sys.exit(main())
