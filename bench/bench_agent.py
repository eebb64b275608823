"""The live agent under refusal storms at full rate: exact counts, lost detail, memory, CPU (root).

    .venv/bin/python bench/bench_agent.py                      # connect() and raw-SYN storms x 400 and 640 MB
    .venv/bin/python bench/bench_agent.py --seconds 4 --storms connect --limits 400   # quick look
    .venv/bin/python bench/bench_agent.py --compare 17b467d    # the agent of a commit vs this tree

Side by side in one run, one column per storm and ``--memory-limit-mb``: the whole ``auditor agent``
process as the DaemonSet runs it (every probe family, ``--pod-cidr 127.0.0.0/8`` so that the drops of
loopback traffic are traced too, its Kubernetes watch in a child process), pinned with taskset to CPU 1,
watching a fake API server (``tests/kubeserver``) that holds ``--pods`` pods (with the env values,
args and annotations a real spec carries, which the watch must reduce) and changes ``--churn`` of them
per second during the storm. One of them, ``storm/target`` with the address 127.0.0.1 on this node, is
terminating while the storm hits it, and deleted when the storm ends: its episode is reported.

The storms (CPU 0): ``connect``, bench/storm.c (connect() to the closed 127.0.0.1:9, back to back:
refused, 4 events each with the drop probe), and ``syn``, bench/synstorm.c (raw SYNs to 127.0.0.1:9 by
sendmmsg(): each answered by a socketless RST, both dropped: 3 events). Both far exceed what one CPU of
the agent can take in detail (~200,000 events/s): the ring buffer overflows, detail is lost (counted),
and the counts come from the in-kernel aggregates.

What is checked, per column:
* refused, as the agent counts it (``counts.servers["127.0.0.1:9"]`` of ``agent-<node>.json``) and as the
  episode's line says (``counts=(refused N, ...)``) = the storm's own count (storm.c: connects refused;
  synstorm.c: SYNs sent);
* detail: events the kernel saw / the agent received / lost in the kernel (ring buffer full) / detail
  lost per the aggregates, and the summary's note;
* memory: peak RSS of the agent plus its watch child, ``VmRSS`` of both sampled every 50 ms from
  ``/proc`` by this process (and the agent's own sampling), <= the limit;
* CPU: seconds of both processes during the storm (utilization of the storm's wall time), and after it.

Exit status: 1 if a check fails, 2 for a setup error (not root, no gcc, port 9 open).

``--compare REF`` runs the agent of commit REF (``git archive`` on ``PYTHONPATH``, this tree's ``probes/``)
and this tree's under the connect storm without the Kubernetes watch, alternating, side by side.
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
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # tests/kubeserver: the fake API server

from auditor.model.logfiles import episodes_name, summary_name  # noqa: E402

NODE = "bench"
TARGET = "127.0.0.1:9"
TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of the process (all its threads), seconds; 0 if it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def memory_bytes(pid: int, field: str) -> int:
    """``VmRSS`` (now) or ``VmHWM`` (peak so far) of the process, bytes; 0 if it is gone."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return 0
    for line in lines:
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    return 0


def child_pids(pid: int) -> list[int]:
    """The direct children of ``pid`` (the agent's watch process)."""
    out = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            out += [int(x) for x in (task / "children").read_text().split()]
    return out


def llvm_sharers(exclude: int) -> list[int]:
    """Other processes that map libLLVM (another bcc tool, another agent): the agent pages out its
    compiler libraries after start, but pages another process maps stay resident and count in its RSS."""
    out = []
    for maps in Path("/proc").glob("[0-9]*/maps"):
        pid = int(maps.parent.name)
        if pid in (exclude, os.getpid()):
            continue
        with contextlib.suppress(OSError):
            if "libLLVM" in maps.read_text(errors="replace"):
                out.append(pid)
    return out


def _wait_started(proc: subprocess.Popen[bytes], log: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"agent exited with {proc.returncode}: {log.read_text()[-400:]}")
        if "agent started" in log.read_text(errors="replace"):
            return
        time.sleep(0.1)
    raise RuntimeError(f"agent did not start within {timeout_s:.0f} s")


# -- the cluster ------------------------------------------------------------------------------------
def _pod(i: int, ip: str, node: str = "other-node", name: str = "", namespace: str = "bench") -> dict[str, Any]:
    """A pod as the API serves it, with what a real spec carries and the watch must drop."""
    return {
        "kind": "Pod",
        "metadata": {
            "name": name or f"app-{i}", "namespace": namespace, "labels": {"app": "bench", "i": str(i % 50)},
            "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "x" * 2000},
            "ownerReferences": [{"kind": "ReplicaSet", "name": "app-rs", "uid": "rs-uid", "controller": True}],
        },
        "spec": {
            "nodeName": node, "terminationGracePeriodSeconds": 30,
            "containers": [{"name": "app", "image": "registry.example.com/app:1", "ports": [{"containerPort": 8080}],
                            "env": [{"name": f"VAR_{k}", "value": "v" * 100} for k in range(20)],
                            "args": ["--flag"] * 20}],
        },
        "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
                   "conditions": [{"type": "Ready", "status": "True"}]},
    }  # fmt: skip


class Cluster:
    """A fake API server with ``pods`` pods, churned during the storm; ``storm/target`` is 127.0.0.1."""

    def __init__(self, pods: int, churn_per_s: int, directory: Path) -> None:
        from tests.kubeserver.server import FakeApiServer

        self.server = FakeApiServer(history=20_000).start()
        self.kubeconfig = self.server.write_kubeconfig(directory / "kubeconfig")
        self.pods, self.churn_per_s = pods, churn_per_s
        for i in range(pods):
            self.server.create(_pod(i, f"10.{100 + i // 65536}.{i // 256 % 256}.{i % 256}"))
        self.server.create(_pod(0, "127.0.0.1", NODE, "target", "storm"))
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.changes = 0

    def terminate_target(self) -> None:
        obj = self.server.get("Pod", "storm", "target")
        assert obj is not None
        obj["metadata"]["deletionTimestamp"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 30))
        obj["metadata"]["deletionGracePeriodSeconds"] = 30
        self.server.update(obj)

    def delete_target(self) -> None:
        self.server.delete("Pod", "storm", "target")

    def churn(self, seconds: float) -> None:
        """Update ``churn_per_s`` pods a second (a rollout's worth of watch events), for ``seconds``."""

        def run() -> None:
            deadline, i = time.monotonic() + seconds, 0
            while not self._stop.is_set() and time.monotonic() < deadline and self.pods:
                for _ in range(max(1, self.churn_per_s // 10)):
                    obj = _pod(i % self.pods, f"10.{100 + i % self.pods // 65536}.{i % self.pods // 256 % 256}."
                               f"{i % self.pods % 256}")  # fmt: skip
                    obj["metadata"]["labels"]["rev"] = str(i)
                    self.server.update(obj)
                    self.changes += 1
                    i += 1
                self._stop.wait(0.1)

        if self.churn_per_s > 0:
            self._thread = threading.Thread(target=run, name="churn", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        self.server.stop()


# -- one run ----------------------------------------------------------------------------------------
def _start_storm(kind: str, seconds: float, workers: int, cpu: int | None) -> Any:
    from bench_probes import Storm, build_storm, syn_storm

    if kind == "syn":
        return syn_storm(build_storm("synstorm"), seconds, cpu)
    return Storm.start(build_storm(), seconds, workers=workers, cpu=cpu)


def _storm_result(kind: str, storm: Any) -> dict[str, Any]:
    from bench_probes import syn_result

    if kind == "syn":
        res = syn_result(storm)
        return {**res, "rate": res["syn_per_s"], "refused": res["syns"], "what": "SYNs sent"}
    res = storm.result()
    return {**res, "rate": res["conn_per_s"], "what": "connects refused"}


def _running(kind: str, storm: Any) -> bool:
    return storm.poll() is None if kind == "syn" else bool(storm.running())


def measure_agent(storm_bin: Path | None, seconds: float, workers: int, storm_cpu: int | None,
                  agent_cpu: int | None, env: dict[str, str] | None = None, *, storm: str = "connect",
                  limit_mb: int | None = None, pods: int = -1, churn: int = 0,
                  pod_cidrs: tuple[str, ...] = ()) -> dict[str, Any]:  # fmt: skip
    """Figures of one agent run during a ``seconds`` storm (see the module docstring). ``pods`` < 0: no
    Kubernetes watch (``--no-kube``); ``storm_bin`` is ignored (the storm is built by name)."""
    exe = Path(sys.executable).with_name("auditor")
    with tempfile.TemporaryDirectory(prefix="auditor-bench-agent-") as tmp:
        cluster = Cluster(pods, churn, Path(tmp)) if pods >= 0 else None
        argv = [str(exe), "agent", "--dataplane", "off", "--metrics-addr", "off", "--log-dir", tmp,
                "--node-name", NODE, "--settle-s", "2"]  # fmt: skip
        argv += ["--kubeconfig", str(cluster.kubeconfig)] if cluster is not None else ["--no-kube"]
        if limit_mb is not None:
            argv += ["--memory-limit-mb", str(limit_mb)]
        for cidr in pod_cidrs:
            argv += ["--pod-cidr", cidr]
        if agent_cpu is not None:
            argv = ["taskset", "-c", str(agent_cpu), *argv]
        log = Path(tmp) / "agent.log"
        samples: list[tuple[int, int]] = []
        series: list[tuple[float, int, int]] = []  # (s since the storm began, agent MB, child MB), every 0.25 s
        began = [0.0]
        episode: dict[str, Any] | None = None
        try:
            with open(log, "wb") as err:
                proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=err, stderr=err, env=env)
            try:
                _wait_started(proc, log, 180)
                time.sleep(2.0)  # settle after start-up (the watch child lists the cluster)

                def sample() -> tuple[int, int]:
                    rss = memory_bytes(proc.pid, "VmRSS")
                    child = sum(memory_bytes(c, "VmRSS") for c in child_pids(proc.pid))
                    samples.append((rss, child))
                    now = time.monotonic() - began[0] if began[0] else -1.0
                    if not series or now - series[-1][0] >= 0.25:
                        series.append((round(now, 2), rss // 10**6, child // 10**6))
                    return rss, child

                idle_rss, idle_child = sample()
                sharers = llvm_sharers(proc.pid)
                startup_hwm = memory_bytes(proc.pid, "VmHWM")
                kids = child_pids(proc.pid)
                cpu0, t0 = cpu_seconds(proc.pid) + sum(cpu_seconds(c) for c in kids), time.monotonic()
                began[0] = t0
                if cluster is not None:
                    cluster.terminate_target()
                    cluster.churn(seconds)
                running = _start_storm(storm, seconds, workers, storm_cpu)
                while _running(storm, running) and time.monotonic() - t0 < seconds + 30:
                    sample()
                    time.sleep(0.05)
                res = _storm_result(storm, running)
                kids = child_pids(proc.pid) or kids
                cpu1, t1 = cpu_seconds(proc.pid) + sum(cpu_seconds(c) for c in kids), time.monotonic()
                if cluster is not None:
                    cluster.delete_target()
                    deadline = time.monotonic() + 120  # settle (2 s), then the audit of the pod's window
                    path = Path(tmp) / episodes_name(NODE)
                    while episode is None and time.monotonic() < deadline and proc.poll() is None:
                        sample()
                        with contextlib.suppress(OSError, ValueError):
                            for line in path.read_text().splitlines():
                                doc = json.loads(line)
                                if doc.get("pod") == "target":
                                    episode = doc
                        time.sleep(0.05)
                else:
                    for _ in range(40):  # let it catch up with what the ring buffer holds (bounded)
                        sample()
                        time.sleep(0.05)
                cpu_after = cpu_seconds(proc.pid) + sum(cpu_seconds(c) for c in kids)
                hwm = memory_bytes(proc.pid, "VmHWM")
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=60)
            finally:
                if proc.poll() is None:
                    with contextlib.suppress(ProcessLookupError):
                        proc.kill()
                    proc.wait()
        finally:
            if cluster is not None:
                cluster.stop()
        summary_path = Path(tmp) / summary_name(NODE)
        if not summary_path.exists():
            raise RuntimeError(f"agent wrote no summary (exit {proc.returncode}): {log.read_text()[-400:]}")
        summary = json.loads(summary_path.read_text())
        agent_log = log.read_text(errors="replace")
    kernel = summary["sources"]["ebpf"]["kernel"]
    lost = summary["lost"]
    counts = summary.get("counts") or {}
    target = (counts.get("servers") or {}).get(TARGET, {})
    memory = summary.get("memory") or {}
    peak = max(samples, key=lambda s: s[0] + s[1])
    ep_counts = (episode or {}).get("counts") or {}
    episode_line = next((x.split("INFO auditor.agent: ", 1)[-1] for x in agent_log.splitlines()
                         if "episode storm/target" in x), "")  # fmt: skip
    return {
        "storm": storm,
        "limit_mb": limit_mb,
        "kube": pods >= 0,
        "pods": pods,
        "churn": churn,
        "seconds": res["seconds"],
        "storm_rate": res["rate"],
        "storm_refused": res["refused"],
        "storm_what": res["what"],
        "storm_cps": res["rate"],
        "storm_connections": res.get("connections", res.get("syns", 0)),
        "counted_refused": target.get("refused", 0),
        "counted_events": target.get("events", 0),
        "counted_detail_lost": target.get("detail_lost", 0),
        "counts_exact": counts.get("exact"),
        "counts_note": counts.get("note", ""),
        # the pod's 127.0.0.1 is every loopback connection's too: its entry for the storm's port
        "episode_refused": ((ep_counts.get("servers") or {}).get(TARGET) or {}).get("refused"),
        "episode_note": ep_counts.get("note", ""),
        "episode_line": episode_line,
        "cpu_s": cpu1 - cpu0,
        "cpu_pct": 100 * (cpu1 - cpu0) / (t1 - t0),
        "cpu_s_catching_up": cpu_after - cpu1,
        "idle_rss_mb": idle_rss / 1e6,
        "idle_child_mb": idle_child / 1e6,
        "startup_peak_rss_mb": startup_hwm / 1e6,  # VmHWM before the storm: bcc/clang compiling the probes
        "peak_rss_mb": peak[0] / 1e6,  # at the highest total sample
        "peak_child_mb": peak[1] / 1e6,
        "peak_total_mb": (peak[0] + peak[1]) / 1e6,  # agent + watch child, sampled every 50 ms
        "peak_total_mib": (peak[0] + peak[1]) / 2**20,  # the unit of --memory-limit-mb
        "agent_peak_total_mib": memory.get("peak_total_mb", 0.0),  # the agent's own sampling (MiB)
        "peak_rss_whole_run_mb": max(hwm, peak[0]) / 1e6,
        "kernel_seen": sum(c["seen"] for c in kernel.values()),
        "kernel_lost": sum(c["lost"] for c in kernel.values()),
        "kernel_counted": sum(c.get("counted", 0) for c in kernel.values()),
        "kernel_uncounted": sum(c.get("uncounted", 0) for c in kernel.values()),
        "received": summary["received_total"],
        "received_rate": summary["received_total"] / res["seconds"],
        "queue_lost": lost.get("queue_full", 0),
        "other_lost": sum(v for k, v in lost.items() if k not in set(kernel) and k != "queue_full"),
        "written": summary["written"],
        "window_evicted": (summary.get("episodes") or {}).get("window_evicted_packets", 0),
        "rss_shed_rows": memory.get("shed_rows", 0),
        "detail_paused_s": memory.get("detail_paused_s", 0.0),
        "budget": memory.get("budget", {}),
        "series": series,
        "heap": memory.get("heap", {}),
        "llvm_sharers": len(sharers),
        "exit_code": proc.returncode,
        "clean_exit": summary.get("clean_exit"),
    }


def checks(r: dict[str, Any]) -> dict[str, bool]:
    """The goals of one column."""
    out = {"counted refused == storm": r["counted_refused"] == r["storm_refused"],
           "seen == counted + uncounted": r["kernel_seen"] == r["kernel_counted"] + r["kernel_uncounted"],
           "clean exit": bool(r["clean_exit"])}  # fmt: skip
    if r["kube"]:
        out["episode refused == storm"] = r["episode_refused"] == r["storm_refused"]
    if r["limit_mb"]:
        out["peak RSS <= limit"] = r["peak_total_mib"] <= r["limit_mb"]
    return out


ROWS: list[tuple[str, str]] = [
    ("storm: rate /s (its own count)", "{storm_rate:,.0f} ({storm_refused:,} {storm_what})"),
    ("refused, counted by the agent (exact)", "{counted_refused:,}"),
    ("refused, in the episode's counts (:9)", "{episode_refused_text}"),
    ("kernel seen / counted (+ uncounted)", "{kernel_seen:,} / {kernel_counted:,} (+{kernel_uncounted:,})"),
    ("detail received / written", "{received:,} / {written:,}"),
    ("detail lost: kernel / queue / other", "{kernel_lost:,} ({lost_pct:.0f} %) / {queue_lost:,} / {other_lost:,}"),
    ("received events/s", "{received_rate:,.0f}"),
    ("summary note", "{counts_note}"),
    ("peak RSS agent + child, MiB (limit)", "{peak_total_mib:.0f} ({limit_text})"),
    ("  agent / child at that peak, MB", "{peak_rss_mb:.0f} / {peak_child_mb:.0f}"),
    ("  idle agent / child, MB", "{idle_rss_mb:.0f} / {idle_child_mb:.0f}"),
    ("  the agent's own peak sample, MiB", "{agent_peak_total_mib:.0f}"),
    ("budget: window rows / queue MB", "{budget_text}"),
    ("window shed / detail paused", "{rss_shed_rows:,} rows / {detail_paused_s:.1f} s"),
    ("CPU s in storm (utilization)", "{cpu_s:.2f} ({cpu_pct:.0f} %)"),
    ("CPU s after the storm (catch-up, episode)", "{cpu_s_catching_up:.2f}"),
    ("checks", "{checks_text}"),
]


def _cell(res: dict[str, Any], fmt: str) -> str:
    ok = checks(res)
    failed = [k for k, v in ok.items() if not v]
    b = res.get("budget") or {}
    return fmt.format(
        **res,
        lost_pct=100 * res["kernel_lost"] / max(1, res["kernel_seen"]),
        episode_refused_text=f"{res['episode_refused']:,}" if res["episode_refused"] is not None else "-",
        limit_text=str(res["limit_mb"]) if res["limit_mb"] else "none",
        budget_text=f"{b.get('window_rows', 0):,} / {b.get('queue_mb', 0):.0f}" if b else "-",
        checks_text="PASS" if not failed else "FAIL: " + ", ".join(failed),
    )


def side_by_side(columns: list[tuple[str, dict[str, Any]]], rows: list[tuple[str, str]] = ROWS) -> str:
    """One row per figure, one column per run."""
    width = max(len(r[0]) for r in rows)
    cells = [[_cell(res, fmt) for _, fmt in rows] for _, res in columns]
    col_w = [max(len(name), *(len(c) for c in col)) for (name, _), col in zip(columns, cells, strict=True)]
    head = " " * width + "  " + "  ".join(n.rjust(w) for (n, _), w in zip(columns, col_w, strict=True))
    lines = [head, "-" * len(head)]
    for i, (label, _) in enumerate(rows):
        lines.append(
            label.ljust(width) + "  " + "  ".join(c[i].rjust(w) for c, w in zip(cells, col_w, strict=True))
        )
    return "\n".join(lines)


def snapshot(ref: str, into: Path) -> dict[str, str]:
    """``git archive`` of ``ref`` in ``into``; the environment that makes ``auditor`` import from it."""
    archive = subprocess.run(["git", "-C", str(REPO), "archive", ref], capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return {**os.environ, "PYTHONPATH": str(into), "AUDITOR_PROBES_DIR": str(into / "probes")}


COMPARE_ROWS: list[tuple[str, str]] = [
    ("storm connections/s (refused)", "{storm_rate:,.0f} ({storm_refused:,})"),
    ("refused, counted by the agent (exact)", "{counted_refused:,}"),
    ("kernel seen", "{kernel_seen:,}"),
    ("kernel lost", "{kernel_lost:,} ({lost_pct:.1f} %)"),
    ("received by the agent / written", "{received:,} / {written:,}"),
    ("CPU s in storm (utilization)", "{cpu_s:.2f} ({cpu_pct:.0f} %)"),
    ("CPU s after the storm", "{cpu_s_catching_up:.2f}"),
    ("RSS idle / peak in storm, MB", "{idle_rss_mb:.0f} / {peak_rss_mb:.0f}"),
    ("window shed", "{rss_shed_rows:,} rows"),
]


def main() -> int:
    from bench_probes import SetupError, build_storm

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=8.0, help="length of each storm")
    ap.add_argument("--storms", default="connect,syn", help="connect, syn or both")
    ap.add_argument("--limits", default="400,640", help="--memory-limit-mb values, one column each")
    ap.add_argument("--pods", type=int, default=2000, help="pods the fake API server holds (-1: --no-kube)")
    ap.add_argument("--churn", type=int, default=100, help="pod changes per second during the storm")
    ap.add_argument("--workers", type=int, default=1, help="connect storm processes")
    ap.add_argument("--pin", action=argparse.BooleanOptionalAction, default=(os.cpu_count() or 1) > 1)
    ap.add_argument("--json", action="store_true", help="the figures as JSON")
    ap.add_argument("--compare", metavar="REF",
                    help="the agent of this git commit (its probes too) vs this tree's: connect storm, no watch, "
                         "the default memory limit of each")  # fmt: skip
    ap.add_argument("--rounds", type=int, default=1, help="with --compare: alternating runs of each")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench_agent: needs root (the agent loads eBPF probes)", file=sys.stderr)
        return 2
    storms = [s for s in args.storms.split(",") if s]
    limits = [int(x) for x in args.limits.split(",") if x]
    if not (0 < args.seconds <= 300) or set(storms) - {"connect", "syn"} or any(not 0 <= x <= 100_000 for x in limits):
        print("bench_agent: --seconds 0-300, --storms connect,syn, --limits MB,...", file=sys.stderr)
        return 2
    try:
        storm_bin = build_storm()
        if "syn" in storms:
            build_storm("synstorm")
    except SetupError as exc:
        print(f"bench_agent: {exc}", file=sys.stderr)
        return 2
    cpus = (0, 1) if args.pin else (None, None)
    if args.pin:
        os.sched_setaffinity(0, {1})  # this process (the fake API server, the sampling) beside the agent
    load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    columns: list[tuple[str, dict[str, Any]]] = []
    try:
        if args.compare:
            with tempfile.TemporaryDirectory(prefix="auditor-bench-ref-") as ref_dir:
                ref_env = snapshot(args.compare, Path(ref_dir))
                for i in range(max(1, args.rounds)):
                    for name, env in ((args.compare, ref_env), ("this tree", None)):
                        res = measure_agent(storm_bin, args.seconds, args.workers, cpus[0], cpus[1], env=env)
                        columns.append((f"{name} #{i + 1}", res))
                        print(f"{name} #{i + 1}: {json.dumps(res)}", file=sys.stderr, flush=True)
            print(side_by_side(columns, COMPARE_ROWS))
            return 0
        for storm in storms:
            for limit in limits:
                res = measure_agent(storm_bin, args.seconds, args.workers, cpus[0], cpus[1], storm=storm,
                                    limit_mb=limit, pods=args.pods, churn=args.churn,
                                    pod_cidrs=("127.0.0.0/8",))  # fmt: skip
                columns.append((f"{storm} {limit} MB" if limit else f"{storm} no limit", res))
                print(f"{columns[-1][0]}: {json.dumps(res)}", file=sys.stderr, flush=True)
    except SetupError as exc:
        print(f"bench_agent: {exc}", file=sys.stderr)
        return 2
    ok = all(all(checks(r).values()) for _, r in columns)
    if args.json:
        print(json.dumps({name: r for name, r in columns}, indent=2))
        return 0 if ok else 1
    load_after = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    print(f"machine: {os.cpu_count()} CPUs, Linux {os.uname().release}; load average {load} before, {load_after} "
          f"after; storm on CPU {cpus[0]}, agent on CPU {cpus[1]}; {args.seconds:g} s storms; "
          f"{args.pods} pods, {args.churn} changes/s")  # fmt: skip
    print(side_by_side(columns))
    for name, r in columns:
        if r["episode_line"]:
            print(f"{name}: {r['episode_line']}")
        if r["llvm_sharers"]:
            print(f"{name}: note: {r['llvm_sharers']} other process(es) mapped libLLVM (another agent or bcc tool): "
                  "the compiler pages they share stayed resident and counted in this agent's RSS")  # fmt: skip
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
