"""Capture-reader benchmark: ``auditor pcap events`` against tcpdump, side by side, in one run.

    .venv/bin/python bench/bench_pcap.py [--packets 2000000] [--seed 1] [--repeat 3] [--keep DIR]

1. Generates a synthetic capture with bench/gen_capture.py (cached in bench/out/, reused if present)
   and a second one twice as large (``--scale-packets``, default 2 x ``--packets``; ``--no-scale`` skips it).
2. Reads the file once to warm the page cache, so both tools read from memory.
3. Counts tcpdump's matches of the reference filter (RSTs, and SYNs without ACK) in an untimed run.
4. Times, ``--repeat`` times interleaved, as whole processes:
   ``tcpdump -r FILE -nn FILTER > /dev/null`` and ``auditor pcap events FILE -o OUT.parquet``
   (wall time and the child's peak RSS from wait4), then ``auditor pcap summary FILE --json``.
5. Reads the Parquet table back and counts ``tcp_rst`` and ``tcp_syn`` rows.
6. Prints one table: medians, ratio (goal <= 1.5), counts from tcpdump, auditor and the generator's
   truth (must all agree), peak RSS (goal <= 150 MB) at 1x and 2x the file size.

Exit status: 1 if a command failed or the counts disagree; 0 otherwise, also when a speed or memory goal
is missed (the figures are the result; PASS/FAIL is printed per goal); 2 for a usage problem.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from _measure import Measured, median_of, run_measured
from gen_capture import GENERATOR_VERSION, Truth, generate_capture

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
TCPDUMP_FILTER = "tcp[tcpflags] & tcp-rst != 0 or tcp[tcpflags] & (tcp-syn|tcp-ack) == tcp-syn"
RATIO_GOAL = 1.5
RSS_GOAL_BYTES = 150 * 1000 * 1000
RUN_TIMEOUT_S = 900.0


@dataclass(frozen=True)
class Counts:
    rst: int
    syn: int


@dataclass(frozen=True)
class ReaderRun:
    """The median of the timed runs of one command, and what it reported."""

    measured: Measured
    counts: Counts | None


def cached_capture(out_dir: Path, packets: int, seed: int) -> tuple[Path, Truth]:
    """The generated capture for (packets, seed), made once and reused while its truth file matches."""
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = out_dir / f"capture-{packets}-s{seed}-v{GENERATOR_VERSION}"
    pcap, truth_file = stem.with_suffix(".pcap"), stem.with_suffix(".truth.json")
    if pcap.exists() and truth_file.exists():
        data = json.loads(truth_file.read_text())
        if data.get("generator_version") == GENERATOR_VERSION and data.get("bytes") == pcap.stat().st_size:
            print(f"reusing {pcap.relative_to(REPO) if pcap.is_relative_to(REPO) else pcap}", flush=True)
            return pcap, Truth(**data)
    print(f"generating {packets:,} packets (seed {seed}) into {pcap} ...", flush=True)
    truth = generate_capture(pcap, packets, seed)
    truth_file.write_text(truth.to_json() + "\n")
    return pcap, truth


def warm_cache(path: Path) -> None:
    """Read the whole file once so the timed runs do not depend on who read it first."""
    with open(path, "rb", buffering=0) as f:
        while f.read(8 << 20):
            pass


def count_tcpdump(path: Path) -> Counts:
    """Count tcpdump's matches of the filter: lines whose flags hold R, and lines with S and no ACK."""
    rst = syn = 0
    proc = subprocess.Popen(["tcpdump", "-r", str(path), "-nn", TCPDUMP_FILTER],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert proc.stdout is not None
    with proc.stdout:
        for line in proc.stdout:
            at = line.find(b"Flags [")
            if at < 0:
                continue
            flags = line[at + 7 : line.find(b"]", at)]
            if b"R" in flags:
                rst += 1
            elif b"S" in flags and b"." not in flags:
                syn += 1
    if proc.wait(timeout=RUN_TIMEOUT_S) != 0:
        raise SystemExit(f"bench_pcap: tcpdump -r {path} failed (exit {proc.returncode})")
    return Counts(rst, syn)


def count_parquet(path: Path) -> Counts:
    """Count tcp_rst and tcp_syn rows of the event table auditor wrote."""
    import pyarrow.parquet as pq

    kinds = pq.read_table(path, columns=["kind"]).column("kind").to_pandas().astype(str)
    return Counts(rst=int((kinds == "tcp_rst").sum()), syn=int((kinds == "tcp_syn").sum()))


def run_checked(argv: list[str], log: Path, stdout: Path | None = None) -> Measured:
    """One measured run; stderr goes to ``log`` and is shown if the command fails."""
    with open(log, "wb") as err, open(stdout or "/dev/null", "wb") as out:
        m = run_measured(argv, stdout=out, stderr=err, timeout_s=RUN_TIMEOUT_S)
    if m.returncode != 0:
        tail = log.read_text(errors="replace").strip().splitlines()[-5:]
        print(f"FAILED (exit {m.returncode}{', timed out' if m.timed_out else ''}): {' '.join(argv)}",
              *tail, sep="\n  ", file=sys.stderr)
    return m


def find_auditor(given: str | None) -> str:
    for candidate in (given, Path(sys.executable).parent / "auditor", REPO / ".venv/bin/auditor"):
        if candidate and Path(candidate).exists():
            return str(candidate)
    found = shutil.which("auditor")
    if not found:
        raise SystemExit("bench_pcap: no auditor command found — run `bash .ci/install` or pass --auditor")
    return found


def tcpdump_version() -> str:
    done = subprocess.run(["tcpdump", "--version"], capture_output=True, text=True, timeout=30, check=False)
    return (done.stdout or done.stderr).splitlines()[0] if (done.stdout or done.stderr) else "tcpdump"


def fmt_mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def print_table(rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for k, row in enumerate(rows):
        print("  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in
                        enumerate(zip(row, widths, strict=True))).rstrip())
        if k == 0:
            print("  ".join("-" * w for w in widths))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="auditor pcap events vs tcpdump, side by side")
    parser.add_argument("--packets", type=int, default=2_000_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per command (median reported)")
    parser.add_argument("--scale-packets", type=int, help="packets in the memory-scaling file (2x)")
    parser.add_argument("--no-scale", action="store_true", help="skip the memory-scaling file")
    parser.add_argument("--keep", type=Path, help="keep the Parquet/JSON outputs and logs in this directory")
    parser.add_argument("--cache", type=Path, default=BENCH / "out", help="where captures are cached")
    parser.add_argument("--auditor", help="auditor executable (default: the venv's)")
    args = parser.parse_args(argv)
    if args.packets < 1 or args.repeat < 1:
        parser.error("--packets and --repeat must be at least 1")
    if shutil.which("tcpdump") is None:
        parser.error("tcpdump is not installed (apt-get install tcpdump)")
    auditor = find_auditor(args.auditor)

    pcap, truth = cached_capture(args.cache, args.packets, args.seed)
    big: tuple[Path, Truth] | None = None
    if not args.no_scale:
        big = cached_capture(args.cache, args.scale_packets or 2 * args.packets, args.seed)

    work = args.keep or Path(tempfile.mkdtemp(prefix="bench-pcap-", dir=args.cache))
    work.mkdir(parents=True, exist_ok=True)
    try:
        return run_bench(pcap, truth, big, auditor, work, args.repeat)
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)


def run_bench(pcap: Path, truth: Truth, big: tuple[Path, Truth] | None, auditor: str, work: Path,
              repeat: int) -> int:
    failed = False
    load_before = os.getloadavg()[0]  # other work on the machine skews wall times: say how much
    warm_cache(pcap)
    print("counting tcpdump matches ...", flush=True)
    td_counts = count_tcpdump(pcap)
    parquet, summary_json = work / "events.parquet", work / "summary.json"
    tcpdump_argv = ["tcpdump", "-r", str(pcap), "-nn", TCPDUMP_FILTER]
    events_argv = [auditor, "pcap", "events", str(pcap), "-o", str(parquet)]
    td_runs: list[Measured] = []
    ev_runs: list[Measured] = []
    for k in range(repeat):
        print(f"timed run {k + 1}/{repeat} ...", flush=True)
        td_runs.append(run_checked(tcpdump_argv, work / "tcpdump.log"))
        parquet.unlink(missing_ok=True)
        ev_runs.append(run_checked(events_argv, work / "events.log"))
    td, ev = median_of(td_runs), median_of(ev_runs)
    failed |= td.returncode != 0 or ev.returncode != 0
    ev_counts = count_parquet(parquet) if ev.returncode == 0 and parquet.exists() else None

    sm_runs = [run_checked([auditor, "pcap", "summary", str(pcap), "--json"], work / "summary.log",
                           stdout=summary_json) for _ in range(repeat)]
    sm = median_of(sm_runs)
    failed |= sm.returncode != 0
    sm_counts: Counts | None = None
    if sm.returncode == 0:
        try:
            summary = json.loads(summary_json.read_text())
            sm_counts = Counts(rst=int(summary["tcp_rst"]), syn=int(summary["tcp_syn"]))
        except (ValueError, KeyError, TypeError) as exc:
            print(f"FAILED: auditor pcap summary --json printed no tcp_rst/tcp_syn counts: {exc!r}",
                  file=sys.stderr)
            failed = True

    big_run: Measured | None = None
    big_counts: Counts | None = None
    if big is not None:
        print(f"scaling run on {big[1].packets:,} packets ...", flush=True)
        warm_cache(big[0])
        big_parquet = work / "events-scale.parquet"
        big_run = run_checked([auditor, "pcap", "events", str(big[0]), "-o", str(big_parquet)],
                              work / "events-scale.log")
        failed |= big_run.returncode != 0
        if big_run.returncode == 0 and big_parquet.exists():
            big_counts = count_parquet(big_parquet)
            big_parquet.unlink()

    ratio = ev.wall_s / td.wall_s if td.wall_s > 0 else float("inf")
    td_cpu = td.user_s + td.sys_s
    cpu_ratio = (ev.user_s + ev.sys_s) / td_cpu if td_cpu > 0 else float("inf")
    counts_ok = ev_counts is not None and td_counts == ev_counts == Counts(truth.rst, truth.syn)
    counts_ok = counts_ok and sm_counts == td_counts

    def goal(ok: bool, run: Measured) -> str:  # a failed run meets no goal
        return verdict(ok and run.returncode == 0)
    rows: list[tuple[str, ...]] = [
        ("", "tcpdump", "auditor events", "truth", "goal", "result"),
        (f"wall time, median of {repeat}", f"{td.wall_s:.3f} s", f"{ev.wall_s:.3f} s", "", "", ""),
        ("ratio auditor / tcpdump", "", f"{ratio:.2f}", "", f"<= {RATIO_GOAL}",
         goal(ratio <= RATIO_GOAL, ev)),
        ("RST packets", f"{td_counts.rst:,}", f"{ev_counts.rst:,}" if ev_counts else "-", f"{truth.rst:,}",
         "equal", verdict(ev_counts is not None and td_counts.rst == ev_counts.rst == truth.rst)),
        ("SYN packets (no ACK)", f"{td_counts.syn:,}", f"{ev_counts.syn:,}" if ev_counts else "-",
         f"{truth.syn:,}", "equal",
         verdict(ev_counts is not None and td_counts.syn == ev_counts.syn == truth.syn)),
        ("peak RSS", fmt_mb(td.peak_rss_bytes), fmt_mb(ev.peak_rss_bytes), "", "<= 150 MB",
         goal(ev.peak_rss_bytes <= RSS_GOAL_BYTES, ev)),
        ("CPU user + sys, median", f"{td.user_s + td.sys_s:.3f} s", f"{ev.user_s + ev.sys_s:.3f} s",
         "", "", ""),
        ("CPU ratio (less load-sensitive)", "", f"{cpu_ratio:.2f}", "", "(info)", ""),
    ]
    if big is not None and big_run is not None:
        big_ok = big_counts == Counts(big[1].rst, big[1].syn)
        counts_ok = counts_ok and big_ok
        rows += [
            (f"peak RSS at {big[1].packets:,} packets", "", fmt_mb(big_run.peak_rss_bytes), "", "<= 150 MB",
             goal(big_run.peak_rss_bytes <= RSS_GOAL_BYTES, big_run)),
            (f"wall time at {big[1].packets:,} packets", "", f"{big_run.wall_s:.3f} s", "", "", ""),
            (f"RST/SYN at {big[1].packets:,} packets", "",
             f"{big_counts.rst:,}/{big_counts.syn:,}" if big_counts else "-",
             f"{big[1].rst:,}/{big[1].syn:,}", "equal", verdict(big_ok)),
        ]
    rows += [
        (f"auditor pcap summary --json, median of {repeat}", "", f"{sm.wall_s:.3f} s", "", "", ""),
        ("RST/SYN from summary", f"{td_counts.rst:,}/{td_counts.syn:,}",
         f"{sm_counts.rst:,}/{sm_counts.syn:,}" if sm_counts else "-", f"{truth.rst:,}/{truth.syn:,}",
         "equal", verdict(sm_counts == td_counts == Counts(truth.rst, truth.syn))),
        ("peak RSS of summary", "", fmt_mb(sm.peak_rss_bytes), "", "<= 150 MB",
         goal(sm.peak_rss_bytes <= RSS_GOAL_BYTES, sm)),
    ]
    print()
    print(f"capture {pcap}: {truth.packets:,} packets, {fmt_mb(truth.bytes)}, "
          f"{(truth.last_time_us - truth.first_time_us) / 1e6:.0f} s of traffic")
    print(f"tcpdump filter: {TCPDUMP_FILTER}")
    print(f"machine: {os.cpu_count()} CPUs, Linux {platform.release()}, {tcpdump_version()}; "
          f"load average {load_before:.2f} before, {os.getloadavg()[0]:.2f} after")
    print_table(rows)
    if not counts_ok:
        print("FAIL: RST/SYN counts differ between tcpdump, auditor and the generator", file=sys.stderr)
    return 1 if failed or not counts_ok else 0


if __name__ == "__main__":
    sys.exit(main())
