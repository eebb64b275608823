"""The live agent under a refusal storm: the whole ``auditor agent --no-kube --dataplane off`` process.

Used by bench_probes.py; standalone (root): ``.venv/bin/python bench/bench_agent.py --seconds 8``.
The agent is started (pinned to a CPU with taskset), waited for until its probes are attached (its
"agent started" log line), then a storm (bench/storm.c) runs on another CPU. CPU time is read from
``/proc/<pid>/stat`` (utime + stime of all threads) at the storm's start and end; peak RSS is
``VmRSS`` sampled every 50 ms from ``/proc/<pid>/status`` during the storm, reported apart from ``VmHWM``
before the storm (start-up: bcc compiles the probes with clang inside the process) and at the end. After
SIGTERM the agent flushes and writes ``agent-<node>.json``: received, written, lost by stage, and the
kernel's per-kind counters, compared here.

``--compare REF`` (e.g. ``--compare 17b467d``) runs the agent of that commit too (``git archive`` into a
temporary directory, put first on ``PYTHONPATH``; both use this tree's ``probes/``, so only the user-space
path differs), alternating with this tree's for ``--rounds`` rounds, and prints both side by side.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from auditor.model.logfiles import summary_name

NODE = "bench"
TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of the process (all its threads), seconds."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def memory_bytes(pid: int, field: str) -> int:
    """``VmRSS`` (now) or ``VmHWM`` (peak so far) of the process, bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    return 0


def _wait_started(proc: subprocess.Popen[bytes], log: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"agent exited with {proc.returncode}: {log.read_text()[-400:]}")
        if "agent started" in log.read_text(errors="replace"):
            return
        time.sleep(0.1)
    raise RuntimeError(f"agent did not start within {timeout_s:.0f} s")


def measure_agent(storm_bin: Path, seconds: float, workers: int, storm_cpu: int | None,
                  agent_cpu: int | None, env: dict[str, str] | None = None) -> dict[str, Any]:  # fmt: skip
    """Figures of one agent run during a ``seconds`` storm (see the module docstring)."""
    from bench_probes import Storm

    exe = Path(sys.executable).with_name("auditor")
    with tempfile.TemporaryDirectory(prefix="auditor-bench-agent-") as tmp:
        argv = [str(exe), "agent", "--no-kube", "--dataplane", "off", "--metrics-addr", "off",
                "--log-dir", tmp, "--node-name", NODE]  # fmt: skip
        if agent_cpu is not None:
            argv = ["taskset", "-c", str(agent_cpu), *argv]
        log = Path(tmp) / "agent.log"
        with open(log, "wb") as err:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=err, stderr=err, env=env)
        try:
            _wait_started(proc, log, 180)
            time.sleep(1.0)  # settle after start-up
            startup_hwm, idle_rss = memory_bytes(proc.pid, "VmHWM"), memory_bytes(proc.pid, "VmRSS")
            cpu0, t0 = cpu_seconds(proc.pid), time.monotonic()
            storm = Storm.start(storm_bin, seconds, workers=workers, cpu=storm_cpu)
            peak = idle_rss
            while storm.running() and time.monotonic() - t0 < seconds + 30:
                peak = max(peak, memory_bytes(proc.pid, "VmRSS"))
                time.sleep(0.05)
            res = storm.result()
            cpu1, t1 = cpu_seconds(proc.pid), time.monotonic()
            for _ in range(40):  # let it catch up with what the ring buffer holds (bounded)
                peak = max(peak, memory_bytes(proc.pid, "VmRSS"))
                time.sleep(0.05)
            cpu_after = cpu_seconds(proc.pid)
            hwm = memory_bytes(proc.pid, "VmHWM")
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                proc.wait()
        summary_path = Path(tmp) / summary_name(NODE)
        if not summary_path.exists():
            raise RuntimeError(f"agent wrote no summary (exit {proc.returncode}): {log.read_text()[-400:]}")
        summary = json.loads(summary_path.read_text())
    kernel = summary["sources"]["ebpf"]["kernel"]
    lost = summary["lost"]
    kinds = set(kernel)
    memory = summary.get("memory") or {}
    return {
        "seconds": res["seconds"],
        "storm_cps": res["conn_per_s"],
        "storm_connections": res["connections"],
        "cpu_s": cpu1 - cpu0,
        "cpu_pct": 100 * (cpu1 - cpu0) / (t1 - t0),
        "cpu_s_catching_up": cpu_after - cpu1,
        "idle_rss_mb": idle_rss / 1e6,  # after start-up, before the storm
        "startup_peak_rss_mb": startup_hwm / 1e6,  # VmHWM before the storm: bcc/clang compiling the probes
        "peak_rss_mb": peak / 1e6,  # highest VmRSS sampled (every 50 ms) during and just after the storm
        "peak_rss_whole_run_mb": max(hwm, peak) / 1e6,  # VmHWM at the end: start-up and storm together
        "kernel_seen": sum(c["seen"] for c in kernel.values()),
        "kernel_lost": sum(c["lost"] for c in kernel.values()),
        "received": summary["received_total"],
        "received_rate": summary["received_total"] / res["seconds"],
        "queue_lost": lost.get("queue_full", 0),
        "other_lost": sum(v for k, v in lost.items() if k not in kinds and k != "queue_full"),
        "written": summary["written"],
        "window_evicted": (summary.get("episodes") or {}).get("window_evicted_packets", 0),
        "rss_shed_rows": memory.get("shed_rows", 0),
        "exit_code": proc.returncode,
        "clean_exit": summary.get("clean_exit"),
    }


def snapshot(ref: str, into: Path) -> dict[str, str]:
    """``git archive`` of ``ref`` in ``into``; the environment that makes ``auditor`` import from it."""
    repo = Path(__file__).resolve().parents[1]
    archive = subprocess.run(["git", "-C", str(repo), "archive", ref], capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return {**os.environ, "PYTHONPATH": str(into), "AUDITOR_PROBES_DIR": str(repo / "probes")}


ROWS: list[tuple[str, str]] = [
    ("storm connections/s", "{storm_cps:,.0f}"),
    ("kernel seen", "{kernel_seen:,}"),
    ("kernel lost", "{kernel_lost:,} ({lost_pct:.1f} %)"),
    ("received by the agent", "{received:,}"),
    ("received events/s", "{received_rate:,.0f}"),
    ("written to the event log", "{written:,}"),
    ("lost at the queue / other", "{queue_lost:,} / {other_lost:,}"),
    ("window rows evicted early", "{window_evicted:,}"),
    ("CPU s in storm (utilization)", "{cpu_s:.2f} ({cpu_pct:.0f} %)"),
    ("CPU s catching up after", "{cpu_s_catching_up:.2f}"),
    ("RSS idle / peak in storm, MB", "{idle_rss_mb:.0f} / {peak_rss_mb:.0f}"),
    ("peak RSS start-up / whole run, MB", "{startup_peak_rss_mb:.0f} / {peak_rss_whole_run_mb:.0f}"),
    ("written == received, seen == received + lost", "{checks}"),
    ("clean exit", "{clean_exit}"),
]


def _cell(res: dict[str, Any], fmt: str) -> str:
    checks = (
        f"{res['written'] == res['received']} / {res['kernel_seen'] == res['received'] + res['kernel_lost']}"
    )
    lost_pct = 100 * res["kernel_lost"] / max(1, res["kernel_seen"])
    return fmt.format(**res, checks=checks, lost_pct=lost_pct)


def side_by_side(columns: list[tuple[str, dict[str, Any]]]) -> str:
    """One row per figure, one column per run."""
    width = max(len(r[0]) for r in ROWS)
    cells = [[_cell(res, fmt) for _, fmt in ROWS] for _, res in columns]
    col_w = [max(len(name), *(len(c) for c in col)) for (name, _), col in zip(columns, cells, strict=True)]
    head = " " * width + "  " + "  ".join(n.rjust(w) for (n, _), w in zip(columns, col_w, strict=True))
    lines = [head, "-" * len(head)]
    for i, (label, _) in enumerate(ROWS):
        lines.append(
            label.ljust(width) + "  " + "  ".join(c[i].rjust(w) for c, w in zip(cells, col_w, strict=True))
        )
    return "\n".join(lines)


def main() -> int:
    from bench_probes import SetupError, build_storm

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--pin", action=argparse.BooleanOptionalAction, default=(os.cpu_count() or 1) > 1)
    ap.add_argument("--compare", metavar="REF", help="also run the agent of this git commit, side by side")
    ap.add_argument("--rounds", type=int, default=1, help="with --compare: alternating runs of each")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench_agent: needs root (the agent loads eBPF probes)", file=sys.stderr)
        return 2
    try:
        storm_bin = build_storm()
    except SetupError as exc:
        print(f"bench_agent: {exc}", file=sys.stderr)
        return 2
    cpus = (0, 1) if args.pin else (None, None)
    if not args.compare:
        res = measure_agent(storm_bin, args.seconds, args.workers, cpus[0], cpus[1])
        print(json.dumps(res, indent=2))
        return 0 if res["kernel_seen"] == res["received"] + res["kernel_lost"] else 1
    columns: list[tuple[str, dict[str, Any]]] = []
    with tempfile.TemporaryDirectory(prefix="auditor-bench-ref-") as ref_dir:
        ref_env = snapshot(args.compare, Path(ref_dir))
        for i in range(max(1, args.rounds)):
            for name, env in ((args.compare, ref_env), ("this tree", None)):
                res = measure_agent(storm_bin, args.seconds, args.workers, cpus[0], cpus[1], env=env)
                columns.append((f"{name} #{i + 1}", res))
                print(f"{name} #{i + 1}: {json.dumps(res)}", file=sys.stderr, flush=True)
    print(f"agent under a {args.seconds:.0f} s refusal storm, {args.workers} storm process(es), "
          f"storm on CPU {cpus[0]}, agent on CPU {cpus[1]}")  # fmt: skip
    print(side_by_side(columns))
    ok = all(r["kernel_seen"] == r["received"] + r["kernel_lost"] for _, r in columns)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
