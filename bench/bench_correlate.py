"""Correlation speed: 1,000,000 packet events against 10,000 termination episodes.

Goal (issue 3): the correlation takes at most 0.5 s. Printed side by side with the reference the issue
names: a bare pandas ``merge_asof`` join of the same size (~0.16 s measured on a 2-core machine).

    .venv/bin/python bench/bench_correlate.py [--events 1000000] [--episodes 10000] [--repeat 3]
    .venv/bin/python bench/bench_correlate.py --against /tmp/base   # before/after, in one run

``--against DIR`` times the engine of another checkout of this repository (``git worktree add /tmp/base
<commit>``) on the same inputs, alternating runs in separate processes, and prints both side by side
(each process: the best of 3 runs after a warm-up; wall and CPU time: on a loaded machine the CPU time
is the steadier figure).

What is timed: ``auditor.correlate.audit.audit`` on in-memory inputs (a packet table and pod records), i.e.
building the IP -> pod index, finding failures (refusals matched to their SYNs, resets, unreachables), attaching every event to the
episode of the pod that owned its IP at that time, per-node timelines, causes, and recommendations.
Building the synthetic inputs is not timed.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from auditor.correlate.audit import audit
from auditor.model.kube import PodInfo
from auditor.model.packet import PACKET_COLUMNS
from tests.fakes import inputs, pod

NS = 1_000_000_000
T0 = 1_790_000_000 * NS


def make_inputs(n_events: int, n_episodes: int, seed: int = 1) -> tuple[pd.DataFrame, list[PodInfo]]:
    rng = np.random.default_rng(seed)
    ips = [f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}" for i in range(1, n_episodes + 1)]
    deleted = T0 + np.sort(rng.integers(0, 3600 * NS, n_episodes))
    pods = [
        pod(f"uid-{i}", "default", f"web-{i // 50}-{i}", (ips[i],), replicaset=f"web-{i // 50}-rs",
            deployment=f"web-{i // 50}", first_seen_ns=int(deleted[i] - 600 * NS), deletion_ns=int(deleted[i] // NS * NS),
            deletion_observed_ns=int(deleted[i]), deleted_observed_ns=int(deleted[i] + 3 * NS))
        for i in range(n_episodes)
    ]  # fmt: skip
    # events: SYNs and refusals to the pods around their deletion, plus unrelated traffic
    which = rng.integers(0, n_episodes, n_events)
    t = deleted[which] + rng.integers(-2 * NS, 2 * NS, n_events)
    order = np.argsort(t, kind="stable")
    which, t = which[order], t[order]
    kind = np.where(rng.random(n_events) < 0.9, "tcp_syn", "tcp_rst")
    client_port = rng.integers(1024, 65535, n_events)
    seq = rng.integers(0, 2**32, n_events, dtype=np.uint64)
    is_rst = kind == "tcp_rst"
    src = np.where(is_rst, np.array(ips, dtype=object)[which], "10.1.0.2")
    dst = np.where(is_rst, "10.1.0.2", np.array(ips, dtype=object)[which])
    df = pd.DataFrame(
        {
            "time": pd.to_datetime(t, unit="ns", utc=True),
            "kind": pd.Categorical(kind),
            "family": np.full(n_events, 4, dtype="uint8"),
            "src": pd.Categorical(src),
            "sport": np.where(is_rst, 8080, client_port).astype("uint16"),
            "dst": pd.Categorical(dst),
            "dport": np.where(is_rst, client_port, 8080).astype("uint16"),
            "tcp_flags": np.where(is_rst, 0x14, 0x02).astype("uint16"),
            "seq": np.where(is_rst, 0, seq).astype("uint32"),
            "ack": np.where(is_rst, (seq + 1) % 2**32, 0).astype("uint32"),
        }
    )
    for col in PACKET_COLUMNS:
        if col not in df:
            df[col] = pd.Categorical(
                np.full(n_events, "pcap" if col == "source" else "node-a" if col == "node" else "")
            )
    for col in ("payload_len", "icmp_type", "icmp_code", "reason_raw", "state_raw", "netns", "frame"):
        df[col] = 0
    return df[list(PACKET_COLUMNS)], pods


def reference_merge_asof(n_events: int, n_episodes: int) -> float:
    """The issue's reference: one pandas merge_asof of n_events against n_episodes, by IP text."""
    rng = np.random.default_rng(2)
    ips = np.array([f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}" for i in range(n_episodes)], dtype=object)
    left = pd.DataFrame(
        {"t": np.sort(rng.integers(0, 10**12, n_events)), "ip": ips[rng.integers(0, n_episodes, n_events)]}
    )
    right = pd.DataFrame(
        {
            "t": np.sort(rng.integers(0, 10**12, n_episodes)),
            "ip": ips[rng.integers(0, n_episodes, n_episodes)],
        }
    )
    start = time.perf_counter()
    pd.merge_asof(left, right, on="t", by="ip")
    return time.perf_counter() - start


# Runs in a child process with the tree to time first on sys.path; the engine's entry point changed in
# issue 9 (audit(packets, pods) -> audit(AuditInputs)), so both shapes are accepted.
_CHILD = """
import json, sys, time
sys.path.insert(0, sys.argv[1])
from bench.bench_correlate import make_inputs
from auditor.correlate.audit import audit
packets, pods = make_inputs(int(sys.argv[2]), int(sys.argv[3]))
try:
    from tests.fakes import inputs
    run = lambda: audit(inputs(packets, pods))
except ImportError:
    run = lambda: audit(packets, pods)
run()  # warm-up: imports, first-call caches
walls, cpus = [], []
for _ in range(3):
    w0, c0 = time.perf_counter(), time.process_time()
    res = run()
    walls.append(time.perf_counter() - w0)
    cpus.append(time.process_time() - c0)
print(json.dumps({"wall": min(walls), "cpu": min(cpus),
                  "failures": len(res.failures), "attributed": int((res.failures["episode"] >= 0).sum())}))
"""


def _child(tree: Path, n_events: int, n_episodes: int) -> dict[str, float]:
    import json
    import subprocess

    out = subprocess.run(
        [sys.executable, "-c", _CHILD, str(tree), str(n_events), str(n_episodes)],
        cwd=tree, capture_output=True, text=True, check=True, timeout=600,
    )  # fmt: skip
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def against(other: Path, n_events: int, n_episodes: int, repeat: int) -> int:
    """This tree and ``other``, alternating, each run in a fresh process on the same inputs."""
    here = Path(__file__).resolve().parent.parent
    runs: dict[str, list[dict[str, float]]] = {"this": [], "other": []}
    for _ in range(repeat):
        runs["other"].append(_child(other, n_events, n_episodes))
        runs["this"].append(_child(here, n_events, n_episodes))
    med = {k: {m: statistics.median(r[m] for r in v) for m in ("wall", "cpu")} for k, v in runs.items()}
    print(f"{'':34}{'this tree':>14}{'reference tree':>16}{'ratio':>8}")
    for m in ("wall", "cpu"):
        a, b = med["this"][m], med["other"][m]
        print(f"{m + ' time (median of ' + str(repeat) + ' bests)':34}{a:>13.3f}s{b:>15.3f}s{a / b:>8.2f}")
    same = runs["this"][0]["failures"] == runs["other"][0]["failures"] and (
        runs["this"][0]["attributed"] == runs["other"][0]["attributed"]
    )
    print(f"reference: {other}; same failures and attributions: {same}; "
          f"load average {os.getloadavg()[0]:.2f}")  # fmt: skip
    return 0 if same else 1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--episodes", type=int, default=10_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--against", type=Path, metavar="DIR", help="another checkout to compare with")
    args = ap.parse_args()
    if args.against is not None:
        return against(args.against, args.events, args.episodes, args.repeat)
    packets, pods = make_inputs(args.events, args.episodes)
    times, refs = [], []
    res = None
    for _ in range(args.repeat):
        start = time.perf_counter()
        res = audit(inputs(packets, pods))
        times.append(time.perf_counter() - start)
        refs.append(reference_merge_asof(args.events, args.episodes))
    assert res is not None
    t, r = statistics.median(times), statistics.median(refs)
    print(f"{'':34}{'auditor audit()':>18}{'merge_asof ref':>18}{'ratio':>8}")
    print(f"{'wall time (median of ' + str(args.repeat) + ')':34}{t:>17.3f}s{r:>17.3f}s{t / r:>8.2f}")
    print(f"events {args.events:,}  episodes {len(res.episodes):,}  failures {len(res.failures):,}  "
          f"attributed {int((res.failures['episode'] >= 0).sum()):,}  causes {res.causes}")  # fmt: skip
    goal = t <= 0.5
    load = os.getloadavg()[0]
    print(
        f"goal: audit() <= 0.5 s: {'PASS' if goal else 'FAIL'} ({t:.3f} s; best {min(times):.3f} s); load average {load:.2f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
