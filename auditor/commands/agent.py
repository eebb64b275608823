"""``auditor agent`` (the live node agent) and ``auditor record`` (a bounded recording session; with
``--kube-only`` the Kubernetes API alone, without root or bcc: :mod:`auditor.commands.record`).

Both write the log directory (``--log-dir`` / ``--out``) described in :mod:`auditor.model.logfiles`:
event segments, the Kubernetes watch stream, dataplane rule changes, finished episodes and the agent's
counters, every name carrying the node name. ``auditor analyze --dir DIR`` reads it as is.
"""

from __future__ import annotations

import re
import socket
import sys
from pathlib import Path
from typing import Any

import click

from auditor.errors import AuditorError

DATAPLANE_CHOICES = ("auto", "off", "iptables-nft", "iptables-legacy", "nftables")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "": 1.0}


def parse_duration(text: str) -> float:
    """``500ms``, ``60s``, ``2m``, ``1h``, ``90`` (seconds) -> seconds."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|)\s*", text or "")
    if m is None or float(m.group(1)) <= 0:
        raise AuditorError(f"bad duration {text!r}", "--duration", "use e.g. 60s, 2m, 500ms")
    return float(m.group(1)) * _UNITS[m.group(2)]


def _sources_options(f: Any) -> Any:
    options = [
        click.option("--node-name", envvar="NODE_NAME", default=socket.gethostname, show_default="hostname",
                     help="this node's name (env NODE_NAME)."),
        click.option("--kubeconfig", metavar="PATH", help="kubeconfig (default: KUBECONFIG, in-cluster, ~/.kube)."),
        click.option("--no-kube", is_flag=True, help="do not watch the Kubernetes API (packets only)."),
        click.option("--pod-cidr", "pod_cidrs", multiple=True, metavar="CIDR",
                     help="pod network (repeatable); enables the skb drop probe for pod traffic."),
        click.option("--dataplane", type=click.Choice(DATAPLANE_CHOICES), default="auto", show_default=True,
                     help="record service rule changes; 'auto' degrades to off when unavailable."),
        click.option("--dataplane-netns", metavar="NAME|PATH",
                     help="watch the rules of this network namespace (an `ip netns` name or /proc/PID/ns/net): "
                          "for an agent outside the host network namespace, and for labs and tests."),
        click.option("--source", type=click.Choice(("auto", "ebpf", "capture")), default="auto", show_default=True,
                     help="packets from the eBPF probes, or a packet capture (libpcap, every interface of the node; "
                          "in --dataplane-netns when given) for nodes where eBPF cannot run: no kernel reasons; "
                          "'auto': the probes, the capture when they cannot load (said in the log and summary)."),
        click.option("--format", "log_format", type=click.Choice(["parquet", "jsonl"]), default="parquet",
                     show_default=True, help="format of finished event segments."),
        click.option("--rotate-mb", type=click.IntRange(min=1), default=64, show_default=True),
        click.option("--rotate-seconds", type=click.FloatRange(min=1), default=300, show_default=True),
        click.option("--flush-ms", type=click.IntRange(min=10), default=1000, show_default=True,
                     help="how often the live segment is flushed to disk."),
        click.option("--settle-s", type=click.FloatRange(min=0), default=10, show_default=True,
                     help="seconds after a pod's deletion before its episode is audited."),
        click.option("--stop-timeout", type=click.FloatRange(min=1), default=10, show_default=True,
                     help="bound on the flush-and-exit after SIGTERM (seconds)."),
        click.option("--logs-auth", type=click.Choice(["on", "off"]), default="on", show_default=True,
                     help="serve /logs only to bearer tokens the API server authenticates and allows 'get' on "
                          "nodes/proxy of this node (TokenReview + SubjectAccessReview); 'off' only for labs."),
        click.option("--memory-limit-mb", type=click.IntRange(min=0), default=512, show_default=True,
                     help="RSS (MiB) of the agent and its Kubernetes watch process together: buffers are sized "
                          "under it; near it the live correlation window sheds its oldest half, at it no more "
                          "event detail is taken (counted; the in-kernel counts stay exact); keep it ~128 MiB "
                          "under the container's memory limit; 0: off."),
    ]  # fmt: skip
    for option in reversed(options):
        f = option(f)
    return f


def _run(
    params: dict[str, Any], log_dir: str, metrics_addr: str | None, duration_s: float | None
) -> dict[str, Any]:
    from auditor.agent import AgentConfig, configure_logging, run_agent
    from auditor.agent.sources import open_packet_source

    configure_logging()
    node = str(params["node_name"] or "").strip()
    if not node or "/" in node:
        raise AuditorError(f"bad node name {node!r}", "--node-name", "give the Kubernetes node name")
    kube_client = None
    reviewer = None
    if not params["no_kube"]:
        from auditor.kubeapi import load_api_client
        from auditor.kubeapi.isolated import WatchProcess
        from auditor.kubeapi.reviews import ApiAccessReviewer

        api = load_api_client(params["kubeconfig"])  # a bad configuration: one line, before anything starts
        kube_client = WatchProcess(params["kubeconfig"])  # the watch runs in a process of its own
        if params["logs_auth"] == "on":
            reviewer = ApiAccessReviewer(api)  # /logs: TokenReview + SubjectAccessReview
    config = AgentConfig(
        node=node,
        log_dir=Path(log_dir),
        metrics_addr=metrics_addr,
        log_format=params["log_format"],
        rotate_bytes=params["rotate_mb"] << 20,
        rotate_seconds=params["rotate_seconds"],
        flush_ms=params["flush_ms"],
        settle_s=params["settle_s"],
        stop_timeout_s=params["stop_timeout"],
        rss_limit_mb=params["memory_limit_mb"],
        dataplane=params["dataplane"],
        dataplane_netns=params["dataplane_netns"] or None,
        logs_auth=params["logs_auth"] == "on",
    )
    netns = params["dataplane_netns"] or None
    netns = f"/run/netns/{netns}" if netns and "/" not in netns else netns
    source = open_packet_source(params["source"], node, tuple(params["pod_cidrs"]), netns)
    return run_agent(config, [source], kube_client=kube_client, duration_s=duration_s, log_reviewer=reviewer)


@click.command("agent")
@click.option("--log-dir", required=True, metavar="DIR", help="directory of the rotating event log.")
@click.option("--metrics-addr", default=":9808", show_default=True, metavar="HOST:PORT",
              help="serve /metrics, /healthz and /logs here ('off' to disable).")  # fmt: skip
@_sources_options
def agent(log_dir: str, metrics_addr: str, **params: Any) -> None:
    """Run the live node agent until SIGTERM: eBPF probes, Kubernetes watch and dataplane rules into one
    event log; one log line per finished pod termination; Prometheus metrics."""
    addr = None if metrics_addr.lower() in ("off", "none", "") else metrics_addr
    summary = _run(params, log_dir, addr, None)
    if not summary.get("clean_exit", True):
        sys.exit(1)


@click.command("record")
@click.option("--duration", default=None, show_default="60s; with --kube-only: until Ctrl-C",
              help="session length: 500ms, 60s, 2m, 1h.")  # fmt: skip
@click.option("--out", "out", required=True, metavar="DIR", help="directory to record into.")
@click.option("--kube-only", is_flag=True,
              help="only the Kubernetes API (pods, EndpointSlices, Events with receipt times): no root, no "
                   "bcc, from any machine with a kubeconfig; a progress line on a terminal; stops on Ctrl-C, "
                   "SIGTERM or --duration. Takes --out, --duration, --kubeconfig, --namespace, --selector, "
                   "--node-name (the file's name), --json.")  # fmt: skip
@click.option("-n", "--namespace", default=None, metavar="NS", help="with --kube-only: one namespace (default: all).")
@click.option("-l", "--selector", default="", metavar="LABELS",
              help="with --kube-only: only pods with these labels (e.g. app=web); EndpointSlices and Events "
                   "of the namespace all.")  # fmt: skip
@click.option("--metrics-addr", default="off", show_default=True, metavar="HOST:PORT",
              help="also serve /metrics and /healthz during the session.")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="print the final summary as JSON.")
@_sources_options
@click.pass_context
def record(ctx: click.Context, /, duration: str | None, out: str, kube_only: bool, namespace: str | None,
           selector: str, metrics_addr: str, as_json: bool, **params: Any) -> None:  # fmt: skip
    """Record a bounded session (the agent's sources) into a directory, then print the analysis; with
    --kube-only, the Kubernetes side only, from anywhere, without privileges."""
    if kube_only:
        from click.core import ParameterSource

        from auditor.commands.record import KUBE_ONLY_OPTIONS, record_kube_only

        given = [max(p.opts, key=len) for p in ctx.command.params if p.name and p.name not in KUBE_ONLY_OPTIONS
                 and ctx.get_parameter_source(p.name) == ParameterSource.COMMANDLINE]  # fmt: skip
        if given:
            raise AuditorError(f"not with --kube-only: {', '.join(given)}", "record",
                               "--kube-only records the Kubernetes API only; drop them or drop --kube-only")  # fmt: skip
        code = record_kube_only(out, str(params["node_name"] or "").strip(), params["kubeconfig"], namespace,
                                selector, parse_duration(duration) if duration else None, as_json)  # fmt: skip
        if code:
            sys.exit(code)
        return
    if namespace or selector:
        raise AuditorError("--namespace and --selector need --kube-only", "record",
                           "the agent's sources watch the whole cluster")  # fmt: skip
    seconds = parse_duration(duration or "60s")
    addr = None if metrics_addr.lower() in ("off", "none", "") else metrics_addr
    summary = _run(params, out, addr, seconds)
    print_session(Path(out), str(summary["node"]), summary, as_json)
    if not summary.get("clean_exit", True):
        sys.exit(1)


def print_session(directory: Path, node: str, summary: dict[str, Any], as_json: bool) -> None:
    """The counters, then the ``auditor analyze`` view of the directory when it holds a kube stream."""
    import json

    from auditor.model.logfiles import list_dataplane_records, list_kube_streams, list_segments

    segments = list_segments(directory)
    kube = [p for p in list_kube_streams(directory, node) if p.stat().st_size > 0]
    dataplane = list_dataplane_records(directory, node)
    lost = {k: v for k, v in summary["lost"].items() if v}
    doc: dict[str, Any] | None = None
    if kube and segments:
        from auditor.correlate.audit import audit
        from auditor.report.document import build_document
        from auditor.sources.inputs import load_inputs

        try:
            inputs = load_inputs([str(p) for p in segments], [str(p) for p in kube],
                                 [str(p) for p in dataplane], None, node)  # fmt: skip
            res = audit(inputs)
            doc = build_document(res)
        except AuditorError as exc:
            click.echo(f"auditor: analysis skipped: {exc.line()}", err=True)
    if as_json:
        click.echo(json.dumps({"session": summary, "analysis": doc}, indent=2, default=str))
        return
    click.echo(
        f"recorded {summary['written']} of {summary['received_total']} events into {directory} "
        f"({len(segments)} segment(s)); lost: {lost or 'none'}"
    )
    counts = summary.get("counts") or {}
    if counts.get("events"):
        failures = {k: v for k, v in (counts.get("failures") or {}).items() if v}
        click.echo(f"counted in the kernel: failures {failures or 'none'} ({counts.get('note', '')})")
    if doc is not None:
        from auditor.report.terminal import render_terminal

        render_terminal(doc)
    elif not kube:
        click.echo("no Kubernetes stream recorded: run with the API reachable for an analysis")
