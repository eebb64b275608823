"""Client truth and capture truth, read independently of auditor: hey's report (or csv) and tcpdump -r counts."""

from __future__ import annotations

import csv
import io
import re
import subprocess
from pathlib import Path
from typing import Any

_STATUS = re.compile(r"^\s*\[(\d{3})\]\s+(\d+) responses", re.M)
_ERROR = re.compile(r"^\s*\[(\d+)\]\s+(.+)$")


def parse_hey(text: str) -> dict[str, Any]:
    """Counts from hey's text report: total, ok (2xx), per status, errors by message, refused, reset,
    unreachable."""
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
        # a SYN a stale conntrack entry sent to a deleted pod (see count_stale_unreachables)
        "unreachable": sum(n for msg, n in errors.items() if "network is unreachable" in msg
                           or "no route to host" in msg),
        "timeout": sum(n for msg, n in errors.items() if "Timeout" in msg or "timeout" in msg),
        "requests_per_s": float(rps.group(1)) if rps else 0.0,
    }


def parse_hey_csv(text: str) -> dict[str, Any]:
    """Counts from ``hey -o csv``: a row per response (hey leaves out the requests that failed without one:
    refused, reset, timeout), so ``total`` counts responses and the error counts are unknown (None).
    ``failed_offsets``: per non-2xx/3xx status, the rows' offsets (seconds from hey's start), in file order."""
    rows = [r for r in csv.reader(io.StringIO(text)) if r]
    if not rows or rows[0][:1] != ["response-time"] or "status-code" not in rows[0] or "offset" not in rows[0]:
        raise ValueError("not hey -o csv output (no response-time,...,status-code,offset header)")
    i_status, i_offset = rows[0].index("status-code"), rows[0].index("offset")
    statuses: dict[str, int] = {}
    failed: dict[str, list[float]] = {}
    for row in rows[1:]:
        code = row[i_status]
        statuses[code] = statuses.get(code, 0) + 1
        if not code.startswith(("2", "3")):
            failed.setdefault(code, []).append(float(row[i_offset]))
    return {
        "total": len(rows) - 1,
        "ok": sum(n for code, n in statuses.items() if code.startswith("2")),
        "status": statuses,
        "failed_offsets": failed,
        "errors": None, "error_total": None, "refused": None, "reset": None, "unreachable": None, "timeout": None,
    }  # fmt: skip


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


_RECORD = re.compile(r"^(?=\d+\.\d+ )", re.M)  # where a packet's first line starts (tcpdump -tt)
_QUOTED = re.compile(r"(\d+\.\d+\.\d+\.\d+)\.(\d+) > (\d+\.\d+\.\d+\.\d+)\.(\d+): Flags")
_SEGMENT = re.compile(r"^(\d+)\.(\d+) .*IP (\S+)\.\d+ > (\S+)\.\d+: Flags \[([^\]]*)\]")


def _us(sec: str, frac: str) -> int:
    return int(sec) * 1_000_000 + int(frac.ljust(6, "0")[:6])


def count_stale_unreachables(icmp_pcap: Path, pcap: Path, client_ip: str) -> dict[str, list[int]]:
    """Times (ns) of the node's ICMP unreachables that answered a client SYN sent to a deleted pod by a
    stale conntrack entry, by that pod's address (others under the address the ICMP quotes).

    An established connection the pod reset leaves its conntrack entry in CLOSE state for
    ``nf_conntrack_tcp_timeout_close`` (10 s), DNAT included (a refused one does not: its entry goes, and a
    SYN reusing the port is balanced anew; both checked in network namespaces). A SYN from the same client
    port within those 10 s follows the entry to the pod, even after the pod's rule is gone; once its
    sandbox is gone too, the node answers "net unreachable" and the client sees ``connect: network is
    unreachable`` (3 of ~40 agent lab runs: a port of one of the few in-flight resets reused 0.7-5.4 s
    after the rule removal). The agent's probes count it as ``after_removal`` for the pod. The ICMP quotes the SYN after
    un-DNAT (to the ClusterIP): the pod is the one that reset the last connection DNATed from that port.
    """
    if not icmp_pcap.exists():
        return {}
    proc = subprocess.run(["tcpdump", "-r", str(icmp_pcap), "-n", "-tt", "-v", "icmp[17] == 6"],
                          capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    if proc.returncode != 0:
        raise RuntimeError(f"tcpdump -r {icmp_pcap}: {proc.stderr.strip()}")
    out: dict[str, list[int]] = {}
    for record in _RECORD.split(proc.stdout):
        quoted = _QUOTED.search(record)
        if quoted is None or quoted.group(1) != client_ip:
            continue
        sec, frac = record.split(" ", 1)[0].split(".")
        t_us, port, server = _us(sec, frac), quoted.group(2), quoted.group(3)
        if not server.startswith("10.244."):  # un-DNATed: the last connection from this port, and its pod
            lines = subprocess.run(
                ["tcpdump", "-r", str(pcap), "-n", "-tt", f"host {client_ip} and tcp port {port} and net 10.244.0.0/16"
                 " and tcp[tcpflags] & (tcp-syn|tcp-rst) != 0"],
                capture_output=True, text=True, timeout=60, check=False).stdout.splitlines()  # fmt: skip
            segs = [(_us(m[1], m[2]), m[3], m[4], m[5]) for m in map(_SEGMENT.match, lines) if m]
            syns = [(t, dst) for t, src, dst, flags in segs if t < t_us and src == client_ip and flags == "S"]
            if syns:  # accepted (SYN-ACK), then reset by the pod
                t_syn, pod = syns[-1]
                mine = [flags for t, src, _, flags in segs if t_syn < t < t_us and src == pod]
                if "S." in mine and any("R" in flags for flags in mine[mine.index("S.") :]):
                    server = pod
        out.setdefault(server, []).append(t_us * 1000)
    return out
