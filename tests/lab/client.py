"""Client truth and capture truth, read independently of auditor: hey's report and tcpdump -r counts."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

_STATUS = re.compile(r"^\s*\[(\d{3})\]\s+(\d+) responses", re.M)
_ERROR = re.compile(r"^\s*\[(\d+)\]\s+(.+)$")


def parse_hey(text: str) -> dict[str, Any]:
    """Counts from hey's text report: total, ok (2xx), per status, errors by message, refused, reset."""
    statuses = {code: int(n) for code, n in _STATUS.findall(text)}
    errors: dict[str, int] = {}
    if "Error distribution:" in text:
        for line in text.split("Error distribution:", 1)[1].splitlines():
            m = _ERROR.match(line)
            if m:
                errors[m.group(2).strip()] = errors.get(m.group(2).strip(), 0) + int(m.group(1))
    n_err = sum(errors.values())
    rps = re.search(r"Requests/sec:\s+([\d.]+)", text)
    return {
        "total": sum(statuses.values()) + n_err,
        "ok": sum(n for code, n in statuses.items() if code.startswith("2")),
        "status": statuses,
        "errors": errors,
        "error_total": n_err,
        "refused": sum(n for msg, n in errors.items() if "connection refused" in msg),
        "reset": sum(n for msg, n in errors.items() if "connection reset" in msg),
        "timeout": sum(n for msg, n in errors.items() if "Timeout" in msg or "timeout" in msg),
        "requests_per_s": float(rps.group(1)) if rps else 0.0,
    }


def count_packets(pcap: Path, bpf: str, timeout: float = 60.0) -> int:
    """Number of packets of ``pcap`` matching the BPF filter, counted by tcpdump itself."""
    proc = subprocess.run(["tcpdump", "-r", str(pcap), "-n", "-q", bpf], capture_output=True,
                          text=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"tcpdump -r {pcap} {bpf!r}: {proc.stderr.strip()}")
    return sum(1 for line in proc.stdout.splitlines() if line.strip())


def count_rsts_from(pcap: Path, ip: str, port: int) -> dict[str, int]:
    """RST segments sent by ip:port (the pod side, after DNAT) in the capture.

    ``rst_refused``: answers to a SYN (sequence number 0: nothing listens, "connection refused");
    ``rst_established``: on a connection that had completed its handshake (accept queue dropped
    when the listener closed, or an abort) -- the client sees "connection reset by peer".
    """
    rst = f"src host {ip} and tcp src port {port} and tcp[tcpflags] & tcp-rst != 0"
    total = count_packets(pcap, rst)
    refused = count_packets(pcap, f"{rst} and tcp[4:4] == 0")
    return {"rst_from_pod": total, "rst_refused": refused, "rst_established": total - refused}
