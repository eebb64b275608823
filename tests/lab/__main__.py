"""Run the lab by hand (as root): ``python -m tests.lab run --prestop 0 --delay 1 --out /tmp/labrun``."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import exclusive_host
from tests.lab.rollout import LabConfig, remove_stale_namespaces, run_rollout


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.lab", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="one rolling update under load; writes pcap, watch stream, truth")
    d = LabConfig()
    run.add_argument("--out", type=Path, required=True, help="run directory (created)")
    run.add_argument("--replicas", type=int, default=d.replicas)
    run.add_argument("--prestop", type=int, default=d.prestop, help="preStop sleep, seconds")
    run.add_argument("--delay", type=float, default=d.delay, help="propagation delay, seconds")
    run.add_argument("--qps", type=int, default=d.qps, help="total requests per second")
    run.add_argument("--workers", type=int, default=d.workers, help="hey workers (-c)")
    run.add_argument("--keepalive", action="store_true", help="keep-alive load (default: new connections)")
    run.add_argument("--backend", choices=["nft", "legacy", "nftables"], default=d.backend)
    run.add_argument("--drain", type=float, default=None,
                     help="server drain timeout, seconds (default 0.3 with --keep-idle, else 5)")
    run.add_argument("--keep-idle", action=argparse.BooleanOptionalAction, default=None,
                     help="server leaves kept-alive connections open on SIGTERM until --drain aborts them "
                     "(RST); default: on with --keepalive")
    run.add_argument("--snaplen", type=int, default=d.snaplen)
    run.add_argument("--small-capture", action="store_true", help="capture SYN/RST/FIN only")
    run.add_argument("--ingress", choices=["nginx"], default=None,
                     help="put an nginx ingress pod between the client and the pods (tests/lab/ingress.py)")
    run.add_argument("--ingress-delay", type=float, default=d.ingress_delay,
                     help="seconds the ingress controller waits before applying an EndpointSlice change")
    run.add_argument("--service-client", action="store_true",
                     help="with --ingress: a second hey through the ClusterIP (hey-service.txt)")
    sub.add_parser("clean", help="remove namespaces left by crashed runs")
    args = parser.parse_args(argv)
    if args.command == "clean":
        if os.geteuid() != 0:
            parser.error("needs root")
        with exclusive_host():  # never while another session's lab runs
            print("removed:", " ".join(remove_stale_namespaces()) or "nothing")
        return 0
    if args.replicas < 1 or args.delay < 0 or args.prestop < 0 or args.qps < 1 or args.workers < 1:
        parser.error("replicas, qps, workers must be >= 1; prestop and delay >= 0")
    if args.ingress_delay < 0:
        parser.error("ingress-delay must be >= 0")
    if args.service_client and not args.ingress:
        parser.error("--service-client needs --ingress")
    if args.drain is not None and args.drain < 0:
        parser.error("drain must be >= 0")
    cfg = LabConfig(replicas=args.replicas, prestop=args.prestop, delay=args.delay, qps=args.qps,
                    workers=args.workers, keepalive=args.keepalive, backend=args.backend,
                    drain=args.drain, keep_idle=args.keep_idle, snaplen=args.snaplen, small_capture=args.small_capture,
                    ingress=args.ingress or "", ingress_delay=args.ingress_delay, service_client=args.service_client)
    if os.geteuid() != 0:
        print("tests.lab: needs root (network namespaces, iptables) — rerun with sudo", file=sys.stderr)
        return 2
    try:
        lab = run_rollout(cfg, args.out)
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        print(f"tests.lab: run failed, everything cleaned up: {exc}".replace("\n", " "), file=sys.stderr)
        return 1
    t = lab.truth
    extra = ("rst_refused_to_ingress", "rst_refused_to_client") if "ingress" in t else ()
    summary: dict[str, object] = {"client": t["client"], "old_pods": [
        {k: ep[k] for k in ("name", "ip", "rst_from_pod", *extra)}
        | {"gap_s": (ep["t_rule_removed_after"] - ep["t_listener_closed"]) / 1e9}
        | ({"ingress_delay_s": (ep["t_ingress_reconfigured"] - ep["t_delete"]) / 1e9} if extra else {})
        for ep in t["old_pods"]]}
    if extra:
        summary |= {"client_502": t["client_502"], "ingress": t["ingress"]["consumer"]}
    print(json.dumps(summary, indent=2))
    print(f"outputs in {args.out}: node.pcap kube.json hey.txt truth.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
