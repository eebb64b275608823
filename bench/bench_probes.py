"""Probe overhead and delivery, side by side in one run (root; run: .venv/bin/python bench/bench_probes.py).

A refusal storm on loopback from separate processes (connect() to a closed port in a loop):
connections/s untraced vs traced, events/s delivered to Python, events lost, and the in-kernel
counters against what Python received. Also the pure decode rate, for reference.
"Delivered" = raw records handed to Python by the ring buffer (``ProbeSet.poll_raw``); decoding
(one PacketEvent per record, or a whole batch to the table with decode_batch) is measured apart. Goals (issue 4): <= 10% slowdown, >= 400,000 events/s delivered with 0 lost, counters equal.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import socket
import statistics
import struct
import sys
import time

from auditor.sources.live import ProbeConfig, ProbeSet, decode_event

CLOSED_PORT = 9
DRAIN_RATES: list[float] = []  # records/s when Python drains a full ring buffer (no producer running)


def _storm(seconds: float, port: int, out: mp.Queue, cpu: int | None) -> None:  # type: ignore[type-arg]
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    n, deadline = 0, time.monotonic() + seconds
    while time.monotonic() < deadline:
        for _ in range(200):
            s = socket.socket()
            try:
                s.connect(("127.0.0.1", port))
            except ConnectionRefusedError:
                n += 1
            finally:
                s.close()
    out.put(n)


def run_storm(
    seconds: float, workers: int, probes: ProbeSet | None, live_reader: bool = True, pin: bool = False
) -> tuple[float, int, float]:
    """(connections/s, records delivered, seconds) for one storm; reads the probes meanwhile
    (``live_reader``) or only once it is over (kernel-side cost alone; needs a big ring buffer)."""
    q: mp.Queue = mp.Queue()  # type: ignore[type-arg]
    cpu = 0 if pin else None  # --pin: storm on CPU 0, this process (the reader) on the others
    procs = [mp.Process(target=_storm, args=(seconds, CLOSED_PORT, q, cpu)) for _ in range(workers)]
    delivered = 0
    t0 = time.monotonic()
    for p in procs:
        p.start()
    while any(p.is_alive() for p in procs) and time.monotonic() - t0 < seconds + 30:
        if probes is not None and live_reader:
            delivered += len(probes.poll_raw(10))
        else:
            time.sleep(0.05)
    elapsed = time.monotonic() - t0
    if probes is not None:
        backlog, d0 = 0, time.perf_counter()
        for _ in range(20):  # drain what is left (bounded)
            got = len(probes.poll_raw(0))
            backlog += got
            if not got:
                break
        drain_s = time.perf_counter() - d0
        delivered += backlog
        if not live_reader and drain_s > 0:
            DRAIN_RATES.append(backlog / drain_s)
    conns = sum(q.get(timeout=10) for _ in procs)
    for p in procs:
        p.join(timeout=10)
    return conns / seconds, delivered, elapsed


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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--wakeup-batch", type=int, default=64)
    ap.add_argument("--pin", action="store_true", help="storm on CPU 0, reader on the other CPUs")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench_probes: needs root (loads eBPF probes)", file=sys.stderr)
        return 2
    families = ("tcp_reset", "sock_state")
    if args.pin and (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, set(range(1, os.cpu_count() or 2)))
    base, kernel_only, live, rates = [], [], [], []
    quiet_lost = 0
    counters: dict[str, dict[str, int]] = {}
    for _ in range(max(1, args.rounds)):  # interleaved, so load from elsewhere hits all modes alike
        base.append(run_storm(args.seconds, args.workers, None, pin=args.pin)[0])
        probes = ProbeSet(
            ProbeConfig(families=families, ringbuf_pages=16384, wakeup_batch=args.wakeup_batch)
        ).start()
        try:
            kernel_only.append(
                run_storm(args.seconds, args.workers, probes, live_reader=False, pin=args.pin)[0]
            )
            quiet_lost += sum(c["lost"] for c in probes.counters().values())
            cps, delivered, elapsed = run_storm(args.seconds, args.workers, probes, pin=args.pin)
            live.append(cps)
            rates.append(delivered / elapsed)
            counters = probes.counters()
        finally:
            probes.close()
    seen = sum(c["seen"] for c in counters.values())
    lost = sum(c["lost"] for c in counters.values())
    received = sum(c["received"] for c in counters.values())
    base_cps = statistics.median(base)

    def slowdown(cps: float) -> float | None:
        return round(100 * (1 - cps / base_cps), 1) if base_cps else None

    result = {
        "connections_per_s_untraced": round(base_cps),
        "connections_per_s_traced_kernel_only": round(statistics.median(kernel_only)),
        "slowdown_pct_kernel_only": slowdown(statistics.median(kernel_only)),
        "connections_per_s_traced_live_reader": round(statistics.median(live)),
        "slowdown_pct_live_reader": slowdown(statistics.median(live)),
        "records_per_s_delivered_during_storm": round(statistics.median(rates)),
        "records_per_s_delivered_draining_backlog": round(statistics.median(DRAIN_RATES)),
        "kernel_seen_all_runs": seen,
        "kernel_lost_all_runs": lost + quiet_lost,
        "python_received_all_runs": received,
        "pure_decode_to_PacketEvent_per_s": round(decode_rate()),
        "batch_decode_to_table_per_s": round(batch_decode_rate()),
        "per_kind_last_round": counters,
        "rounds": args.rounds,
        "wakeup_batch": args.wakeup_batch,
        "pinned": args.pin,
        "workers": args.workers,
        "cpus": os.cpu_count(),
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for key, value in result.items():
            if key != "per_kind_last_round":
                print(f"{key:30} {value}")
        print("goals: slowdown <= 10%, >= 400000 events/s delivered, lost 0, kernel_seen == python_received")
    return 0


if __name__ == "__main__":
    sys.exit(main())
