"""Synthetic Ethernet/IPv4/TCP capture for the capture-reader benchmark.

    python bench/gen_capture.py OUT.pcap --packets 2000000 --seed 1 [--truth OUT.truth.json]

Writes a classic little-endian pcap (microsecond timestamps, link type EN10MB) of client flows to pods,
as a node's bridge would see them: ~50 client IPs on ephemeral ports talking to ~20 pod IPs on port 8080.
A flow is SYN, SYN-ACK, ACK, one to three request/response exchanges of varied sizes, then FIN/ACK both
ways; about 0.5 % of established flows end with a RST instead, and about 0.2 % of SYNs are answered by a
RST/ACK (connection refused). Several dozen flows are open at once and their packets interleave.
Timestamps increase strictly (mean gap 150 µs, so 2,000,000 packets span about five minutes). Lengths
are correct (IP total length, captured = original length); checksums are zero.

Deterministic: the same ``--packets`` and ``--seed`` give the same bytes. The counts of what was written
are known by construction and printed as one JSON object (and written to ``--truth`` if given):
``packets``, ``tcp``, ``syn`` (SYN without ACK), ``synack``, ``rst``, ``fin``, ``refused`` (RST answering a
SYN), ``rst_flows`` (established flows ended by RST), ``flows``, ``bytes`` (file size), first/last time.

Packets are packed with precompiled ``struct`` layouts, not built with scapy: 2,000,000 packets take
a few seconds.
"""

from __future__ import annotations

import argparse
import json
import random
import struct
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

GENERATOR_VERSION = 1

SERVER_PORT = 8080
N_CLIENTS = 50
N_PODS = 20
CONCURRENT_FLOWS = 48
MEAN_GAP_US = 150
RST_FLOW_RATE = 0.005  # established flows that end with a RST instead of FINs
REFUSED_RATE = 0.002  # SYNs answered by RST/ACK
START_S = 1_700_000_000  # 2023-11-14T22:13:20Z

FIN, SYN, RST, PSH, ACK = 0x01, 0x02, 0x04, 0x08, 0x10
MSS = 1448
_ETH_IP_TCP = 14 + 20 + 20

_PCAP_HEADER = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, 1)
_RECORD = struct.Struct("<IIII")
# Ethernet (dst, src, type) + IPv4 (no options, DF) + TCP (no options); checksums zero
_FRAME = struct.Struct("!6s6sH" "BBHHHBBH4s4s" "HHIIBBHHH")

Step = tuple[bool, int, int]  # (from_client, tcp flags, payload length)


@dataclass(frozen=True)
class Truth:
    """What the generator wrote, counted packet by packet as it wrote them."""

    packets: int
    tcp: int
    syn: int
    synack: int
    rst: int
    fin: int
    refused: int
    rst_flows: int
    flows: int
    bytes: int
    first_time_us: int
    last_time_us: int
    seed: int
    generator_version: int = GENERATOR_VERSION

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


class _Flow:
    """One connection in progress: its script of packets and its sequence numbers."""

    __slots__ = ("client", "cport", "cseq", "ending", "eth_c2s", "eth_s2c", "pod", "pos", "sseq", "steps")

    def __init__(self, steps: list[Step], ending: str, client: bytes, cport: int, pod: bytes,
                 cseq: int, sseq: int) -> None:
        self.steps = steps
        self.ending = ending
        self.pos = 0
        self.client = client
        self.cport = cport
        self.pod = pod
        self.cseq = cseq
        self.sseq = sseq
        self.eth_c2s = (_mac(pod), _mac(client))  # (dst, src)
        self.eth_s2c = (_mac(client), _mac(pod))


def _mac(ip: bytes) -> bytes:
    return b"\x02\x42" + ip


def script_flow(rng: random.Random) -> tuple[list[Step], str]:
    """The packets of one flow in order, and how it ends: "fin", "rst" or "refused"."""
    if rng.random() < REFUSED_RATE:
        return [(True, SYN, 0), (False, RST | ACK, 0)], "refused"
    steps: list[Step] = [(True, SYN, 0), (False, SYN | ACK, 0), (True, ACK, 0)]
    for _ in range(rng.choice((1, 1, 1, 2, 2, 3))):
        steps.append((True, PSH | ACK, rng.randint(80, 700)))
        segments = 1 if rng.random() < 0.8 else rng.randint(2, 4)
        for k in range(segments):
            last = k == segments - 1
            steps.append((False, PSH | ACK if last else ACK, rng.randint(60, MSS) if last else MSS))
        steps.append((True, ACK, 0))
    if rng.random() < RST_FLOW_RATE:
        steps.append((rng.random() < 0.5, RST | ACK, 0))
        return steps, "rst"
    if rng.random() < 0.7:  # client closes first
        steps += [(True, FIN | ACK, 0), (False, FIN | ACK, 0), (True, ACK, 0)]
    else:  # server closes first, client's ACK separate from its FIN
        steps += [(False, FIN | ACK, 0), (True, ACK, 0), (True, FIN | ACK, 0), (False, ACK, 0)]
    return steps, "fin"


def _flow_factory(rng: random.Random) -> Callable[[], _Flow]:
    clients = [bytes((10, 0, 1 + i // 200, 10 + i % 200)) for i in range(N_CLIENTS)]
    pods = [bytes((10, 244, 1 + i // 100, 2 + i % 100)) for i in range(N_PODS)]
    next_port = [32768 + rng.randrange(20000) for _ in clients]

    def new_flow() -> _Flow:
        c = rng.randrange(N_CLIENTS)
        port = next_port[c]
        next_port[c] = port + 1 if port < 60999 else 32768
        steps, ending = script_flow(rng)
        return _Flow(steps, ending, clients[c], port, pods[rng.randrange(N_PODS)],
                     rng.getrandbits(32), rng.getrandbits(32))

    return new_flow


def generate_capture(path: Path, packets: int, seed: int = 1) -> Truth:
    """Write ``packets`` packets to ``path`` (a pcap file); return the counts by construction."""
    if packets < 1:
        raise ValueError("packets must be >= 1")
    rng = random.Random(seed)
    new_flow = _flow_factory(rng)
    active = [new_flow() for _ in range(CONCURRENT_FLOWS)]
    flows = len(active)
    endings: Counter[str] = Counter()
    flag_counts: Counter[int] = Counter()
    payloads: dict[int, bytes] = {}
    pack_record, pack_frame = _RECORD.pack, _FRAME.pack
    randrange = rng.randrange
    t_us = START_S * 1_000_000
    first_us = 0
    parts: list[bytes] = [_PCAP_HEADER]
    size = len(_PCAP_HEADER)
    with open(path, "wb") as out:
        for n in range(packets):
            t_us += 1 + randrange(2 * MEAN_GAP_US - 1)
            if not first_us:
                first_us = t_us
            i = randrange(CONCURRENT_FLOWS)
            flow = active[i]
            from_client, flags, plen = flow.steps[flow.pos]
            if from_client:
                seq, ack = flow.cseq, flow.sseq
                flow.cseq = (seq + plen + (1 if flags & (SYN | FIN) else 0)) & 0xFFFFFFFF
                src, dst, sport, dport = flow.client, flow.pod, flow.cport, SERVER_PORT
                dmac, smac = flow.eth_c2s
            else:
                seq, ack = flow.sseq, flow.cseq
                if flow.ending == "refused":
                    seq = 0  # a refusing kernel answers with seq 0, ack = ISN + 1
                flow.sseq = (seq + plen + (1 if flags & (SYN | FIN) else 0)) & 0xFFFFFFFF
                src, dst, sport, dport = flow.pod, flow.client, SERVER_PORT, flow.cport
                dmac, smac = flow.eth_s2c
            frame_len = _ETH_IP_TCP + plen
            parts.append(pack_record(t_us // 1_000_000, t_us % 1_000_000, frame_len, frame_len))
            parts.append(pack_frame(dmac, smac, 0x0800,
                                    0x45, 0, frame_len - 14, n & 0xFFFF, 0x4000, 64, 6, 0, src, dst,
                                    sport, dport, seq, ack if flags & ACK else 0, 0x50, flags, 64240, 0, 0))
            if plen:
                payload = payloads.get(plen)
                if payload is None:
                    payload = payloads[plen] = bytes(b"GET /api/items HTTP/1.1 "[k % 24] for k in range(plen))
                parts.append(payload)
            size += 16 + frame_len
            flag_counts[flags] += 1
            flow.pos += 1
            if flow.pos == len(flow.steps):
                endings[flow.ending] += 1
                active[i] = new_flow()
                flows += 1
            if len(parts) >= 60_000:
                out.write(b"".join(parts))
                parts.clear()
        out.write(b"".join(parts))
    return Truth(
        packets=packets,
        tcp=packets,
        syn=sum(c for f, c in flag_counts.items() if f & SYN and not f & ACK),
        synack=sum(c for f, c in flag_counts.items() if f & SYN and f & ACK),
        rst=sum(c for f, c in flag_counts.items() if f & RST),
        fin=sum(c for f, c in flag_counts.items() if f & FIN),
        refused=endings["refused"],
        rst_flows=endings["rst"],
        flows=flows - sum(1 for f in active if f.pos == 0),
        bytes=size,
        first_time_us=first_us,
        last_time_us=t_us,
        seed=seed,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("out", type=Path, help="pcap file to write")
    parser.add_argument("--packets", type=int, default=2_000_000, help="packets to write (default 2,000,000)")
    parser.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    parser.add_argument("--truth", type=Path, help="also write the counts to this JSON file")
    args = parser.parse_args(argv)
    if args.packets < 1:
        parser.error("--packets must be at least 1")
    started = time.perf_counter()
    try:
        truth = generate_capture(args.out, args.packets, args.seed)
        if args.truth:
            args.truth.write_text(truth.to_json() + "\n")
    except OSError as exc:
        print(f"gen_capture: {exc.filename or args.out}: {exc.strerror} — check the output path",
              file=sys.stderr)
        return 2
    print(truth.to_json())
    print(f"gen_capture: wrote {truth.packets:,} packets, {truth.bytes / 1e6:.1f} MB to {args.out} "
          f"in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
