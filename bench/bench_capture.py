"""`auditor capture` vs tcpdump on the same SYN storm, side by side (root; run:
.venv/bin/python bench/bench_capture.py).

Two network namespaces joined by a veth pair (IPv6 off, a static neighbour entry): the sender runs
bench/synstorm.c (raw SYNs with sendmmsg, compiled with gcc into bench/out/) to the receiver's address;
every SYN matches the capture filter (auditor's built-in one, given to tcpdump too). The receiver's
interface rx counter is the truth. Each tool captures the receiver's interface in its own run of the
same storm (same duration, same pinning), interleaved round by round, through bench/_measure.py (wall,
user + sys CPU, peak RSS of the whole process) under ``timeout -s INT`` so both stop the same way:

* ``auditor capture -i IF --buffer-mb 32`` (libpcap engine, C writer): its JSON line (written, dropped);
* ``tcpdump -i IF -s 192 -B 32768 -w FILE FILTER``: its "captured" / "dropped by kernel" lines;
* ``auditor capture --engine scapy`` (the fallback without libpcap): its ceiling;
* ``auditor record --no-kube --source capture`` (the agent's capture source: decoded, logged, correlated;
  CPU 1 only): received, and the kernel's drops (``lost.capture_kernel_drop``).

Modes: ``--pin split`` (default with 2+ CPUs): storm on CPU 0, the tool on CPU 1; ``--pin shared``: both
on CPU 0 (the tool gets what the storm leaves). Figures: storm SYN/s, captured/s, dropped (and % of what
the interface received), the tool's CPU seconds and CPU per 100k packets. Exit 1 if a tool's written +
dropped differs from the interface's count (libpcap engines), 2 on a setup error.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

from _measure import run_measured  # noqa: E402
from bench_probes import SetupError, build_storm  # noqa: E402

from auditor.sources.pcaplive import BASE_FILTER  # noqa: E402

AUDITOR = [sys.executable, "-m", "auditor"]


def _ip(*args: str) -> str:
    return subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=20).stdout


class Veth:
    """Sender namespace A (10.99.0.1) -> receiver namespace B (10.99.0.2, interface bb0)."""

    def __init__(self) -> None:
        tag = uuid.uuid4().hex[:6]
        self.a, self.b, self.dev = f"bcapa{tag}", f"bcapb{tag}", "bb0"

    def __enter__(self) -> Veth:
        try:
            for ns in (self.a, self.b):
                _ip("netns", "add", ns)
                subprocess.run(["ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"],
                               check=True, timeout=20)  # fmt: skip
            _ip(
                "link",
                "add",
                "ba0",
                "netns",
                self.a,
                "type",
                "veth",
                "peer",
                "name",
                self.dev,
                "netns",
                self.b,
            )
            _ip("-n", self.a, "addr", "add", "10.99.0.1/24", "dev", "ba0")
            _ip("-n", self.b, "addr", "add", "10.99.0.2/24", "dev", self.dev)
            _ip("-n", self.a, "link", "set", "ba0", "up")
            _ip("-n", self.b, "link", "set", self.dev, "up")
            mac = json.loads(_ip("-n", self.b, "-j", "link", "show", self.dev))[0]["address"]
            _ip("-n", self.a, "neigh", "add", "10.99.0.2", "lladdr", mac, "dev", "ba0", "nud", "permanent")
        except (subprocess.CalledProcessError, OSError) as exc:
            self.__exit__()
            raise SetupError(f"cannot build the namespaces (root? iproute2?): {exc}") from None
        return self

    def __exit__(self, *_: Any) -> None:
        for ns in (self.a, self.b):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=20)

    def rx(self) -> int:
        return int(
            json.loads(_ip("-n", self.b, "-j", "-s", "link", "show", self.dev))[0]["stats64"]["rx"]["packets"]
        )


def _tool_argv(tool: str, dev: str, out: Path) -> list[str]:
    if tool == "tcpdump":
        return [
            "tcpdump",
            "-i",
            dev,
            "-n",
            "-Z",
            "root",
            "-s",
            "192",
            "-B",
            "32768",
            "-w",
            str(out),
            BASE_FILTER,
        ]
    engine = "scapy" if tool == "scapy" else "libpcap"
    return [*AUDITOR, "capture", "-i", dev, "--node", "bench", "-w", str(out), "--buffer-mb", "32", "--engine",
            engine, "--json", "-q"]  # fmt: skip


def _parse(tool: str, stdout: str, stderr: str) -> tuple[int, int]:
    """(written, dropped) as the tool reports them."""
    if tool == "tcpdump":
        got = re.search(r"(\d+) packets? captured", stderr)
        dropped = re.search(r"(\d+) packets? dropped by kernel", stderr)
        if not got or not dropped:
            raise RuntimeError(f"tcpdump said: {stderr.strip()[-300:]}")
        return int(got.group(1)), int(dropped.group(1))
    doc = json.loads(stdout)
    if tool == "agent":
        session = doc["session"]
        return int(session["received_total"]), int(session["lost"].get("capture_kernel_drop", 0))
    return int(doc["packets"]), int(doc["dropped"])


def one_run(veth: Veth, storm: Path, tool: str, seconds: float, pin: str, tmp: Path) -> dict[str, Any]:
    tool_cpu, storm_cpu = ("0", "0") if pin == "shared" else ("1", "0")
    out, so, se = tmp / f"{tool}.pcap", tmp / f"{tool}.out", tmp / f"{tool}.err"
    argv = ["taskset", "-c", tool_cpu, "timeout", "-s", "INT", f"{seconds + 3:.1f}",
            "ip", "netns", "exec", veth.b, *_tool_argv(tool, veth.dev, out)]  # fmt: skip
    if tool == "agent":  # the whole agent with its capture source (no eBPF), bounded by its own --duration
        shutil.rmtree(tmp / "agent-log", ignore_errors=True)
        argv = ["taskset", "-c", tool_cpu, *AUDITOR, "record", "--no-kube", "--source", "capture", "--dataplane",
                "off", "--dataplane-netns", veth.b, "--node-name", "bench", "--duration", f"{seconds + 6:g}s",
                "--out", str(tmp / "agent-log"), "--format", "jsonl", "--json"]  # fmt: skip
    rx0 = veth.rx()
    box: dict[str, Any] = {}
    with so.open("w") as fo, se.open("w") as fe:
        t = threading.Thread(target=lambda: box.update(m=run_measured(argv, stdout=fo, stderr=fe, cwd=REPO,
                                                                        timeout_s=seconds + 60)))  # fmt: skip
        t.start()
        deadline = time.monotonic() + 20
        # auditor writes its header at once; tcpdump's sits in stdio's buffer: wait for "listening on"
        while time.monotonic() < deadline and not (
            (out.exists() and out.stat().st_size > 0)
            or any(w in se.read_text(errors="replace") for w in ("listening on", "agent started"))
        ):
            time.sleep(0.02)
        time.sleep(0.5)
        if pin == "idle":  # no storm: the tool's own cost of starting, waiting and stopping
            time.sleep(seconds)
            storm_out = subprocess.CompletedProcess(
                [], 0, json.dumps({"syn_per_s": 0, "seconds": seconds}), ""
            )
        else:
            storm_out = subprocess.run(["taskset", "-c", storm_cpu, "ip", "netns", "exec", veth.a, str(storm), "-a",
                                        "10.99.0.2", "-p", "9", "-s", str(seconds)],
                                       capture_output=True, text=True, timeout=seconds + 30)  # fmt: skip
        t.join(seconds + 90)
    m = box["m"]
    rx = veth.rx() - rx0
    sent = json.loads(storm_out.stdout)
    written, dropped = _parse(tool, so.read_text(), se.read_text())
    out.unlink(missing_ok=True)
    return {"tool": tool, "pin": pin, "storm_syn_per_s": sent["syn_per_s"], "rx": rx, "written": written,
            "dropped": dropped, "captured_per_s": written / sent["seconds"], "cpu_s": m.user_s + m.sys_s,
            "peak_rss_mb": m.peak_rss_bytes / 1e6, "returncode": m.returncode,
            "accounted": written + dropped == rx}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=3.0, help="storm length per run")
    ap.add_argument("--rounds", type=int, default=3, help="runs per tool and mode (median reported)")
    ap.add_argument("--pin", choices=["split", "shared", "both"], default="both")
    ap.add_argument(
        "--no-idle", action="store_true", help="skip the runs without a storm (the tools' own cost)"
    )
    ap.add_argument("--no-scapy", action="store_true", help="skip the scapy fallback")
    ap.add_argument(
        "--no-agent", action="store_true", help="skip `auditor record --source capture` (the agent)"
    )
    args = ap.parse_args(argv)
    try:
        if os.geteuid() != 0:
            raise SetupError("needs root (namespaces, raw sockets, capture)")
        for tool in ("ip", "taskset", "timeout", "tcpdump"):
            if shutil.which(tool) is None:
                raise SetupError(f"needs {tool}")
        storm = build_storm("synstorm")
    except SetupError as exc:
        print(f"bench_capture: {exc}", file=sys.stderr)
        return 2
    pins = ["split", "shared"] if args.pin == "both" else [args.pin]
    if (os.cpu_count() or 1) < 2:
        pins = ["shared"]
    if not args.no_idle:
        pins.append("idle")
    tools = (
        ["auditor", "tcpdump"] + ([] if args.no_scapy else ["scapy"]) + ([] if args.no_agent else ["agent"])
    )
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-capture-") as d, Veth() as veth:
        for pin in pins:
            for _ in range(args.rounds):
                for tool in tools:
                    if tool in ("scapy", "agent") and pin != "split":
                        continue
                    r = one_run(veth, storm, tool, args.seconds, pin, Path(d))
                    results.append(r)
                    print(json.dumps(r), file=sys.stderr)
    ok = True
    print(f"{'tool':<22} {'pin':<7} {'storm SYN/s':>12} {'captured/s':>12} {'dropped':>10} {'drop %':>7} "
          f"{'CPU s':>6} {'CPU s/100k':>10} {'RSS MB':>7}  written+dropped=rx")  # fmt: skip
    for pin in pins:
        for tool in tools:
            rows = [r for r in results if r["tool"] == tool and r["pin"] == pin]
            if not rows:
                continue
            med = sorted(rows, key=lambda r: r["captured_per_s"])[len(rows) // 2]
            name = {"auditor": "auditor capture", "scapy": "auditor capture (scapy)",
                    "agent": "agent --source capture"}.get(tool, tool)  # fmt: skip
            drop_pct = 100 * med["dropped"] / max(1, med["rx"])
            per100k = med["cpu_s"] / med["written"] * 100_000 if med["written"] else float("nan")
            acc = all(r["accounted"] for r in rows)
            if tool != "scapy":
                ok &= acc
            print(f"{name:<22} {pin:<7} {med['storm_syn_per_s']:>12,.0f} {med['captured_per_s']:>12,.0f} "
                  f"{med['dropped']:>10,} {drop_pct:>6.1f}% {med['cpu_s']:>6.2f} {per100k:>10.3f} "
                  f"{med['peak_rss_mb']:>7.1f}  {'yes' if acc else 'NO'} ({len(rows)} runs, "
                  f"max dropped {max(r['dropped'] for r in rows):,})")  # fmt: skip
    print(f"median of {args.rounds} run(s) of a {args.seconds:g} s storm each (by captured/s)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
