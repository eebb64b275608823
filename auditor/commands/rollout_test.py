"""``auditor rollout-test deployment/NAME``: load, rollout restart, count what failed, explain it, and the fix
as a strategic-merge patch; ``--apply`` applies it and runs the test again (before / after).

Exit codes: 0 SAFE, 1 GAP, 3 INCONCLUSIVE (the verdict of the last test, ``auditor.model.audit.EXIT_CODES``),
2 a usage error or a failure (no such workload, a permission missing, a rollout that stalled or timed out,
a load that could not start), 130 / 143 interrupted by SIGINT / SIGTERM. The load Job is deleted in every
case.
"""

from __future__ import annotations

import json
import signal
import sys
import tempfile
from pathlib import Path
from types import FrameType
from typing import Any

import click

from auditor.errors import AuditorError

_EPILOG = """\b
Exit codes: 0 SAFE, 1 GAP, 3 INCONCLUSIVE (the last test's verdict); 2 usage or failure (unknown
workload, missing permission, stalled rollout, load that cannot start); 130/143 interrupted
(SIGINT/SIGTERM). The load Job is deleted in every case.
\b
Permissions: daemonset/rollout-test-rbac.yaml (get/list/watch/patch the workload, list services,
create/get/delete the load Job, list pods and get pods/log; for the agents' logs: list pods and get
pods/proxy in their namespace, get nodes/proxy).
"""


@click.command("rollout-test", epilog=_EPILOG)
@click.argument("workload", metavar="KIND/NAME")
@click.option("-n", "--namespace", metavar="NS", help="the workload's namespace (default: the context's).")
@click.option("--kubeconfig", metavar="PATH", help="kubeconfig (default: KUBECONFIG, in-cluster, ~/.kube).")
@click.option("--context", metavar="NAME", help="kubeconfig context (default: the current one).")
@click.option("--url", metavar="URL", help="what the load targets (default: the Service's ClusterIP and port).")
@click.option("--service", metavar="NAME[:PORT]", help="the Service to target (default: the one selecting the pods).")
@click.option("--path", default="/", show_default=True, help="request path on the Service.")
@click.option("--from-here", is_flag=True, help="run the load on this machine (`python -m auditor load`); needs --url.")
@click.option("--qps", type=click.IntRange(min=1), default=500, show_default=True, help="requests per second.")
@click.option("--connections", type=click.IntRange(min=1), default=50, show_default=True, help="connections.")
@click.option("--keepalive/--no-keepalive", default=True, show_default=True,
              help="keep connections alive, or a new connection per request.")  # fmt: skip
@click.option("--duration", type=click.FloatRange(min=1), metavar="SECONDS",
              help="total load time (default: until the rollout completes + --tail).")  # fmt: skip
@click.option("--warmup", type=click.FloatRange(min=0), default=5, show_default=True,
              help="seconds of load before the restart.")  # fmt: skip
@click.option("--tail", type=click.FloatRange(min=0), default=10, show_default=True,
              help="seconds of load after the rollout completes.")  # fmt: skip
@click.option("--timeout", type=click.FloatRange(min=1), default=300, show_default=True,
              help="seconds a rollout may take before it counts as stalled.")  # fmt: skip
@click.option("--image", default=None, metavar="IMAGE",
              help="the auditor image the load Job runs (default: $AUDITOR_IMAGE or auditor-agent:0.1.0).")  # fmt: skip
@click.option("--evidence", type=click.Choice(["auto", "agents", "client"]), default="auto", show_default=True,
              help="node agents' logs (auto: when agents run) or the client's records alone.")  # fmt: skip
@click.option("--agent-namespace", default="auditor", show_default=True, help="namespace of the agents.")
@click.option("--agent-selector", default="app.kubernetes.io/name=auditor", show_default=True,
              help="label selector of the agent pods.")  # fmt: skip
@click.option("--agent-port", type=click.IntRange(1, 65535), default=9808, show_default=True,
              help="the agents' port serving /logs.")  # fmt: skip
@click.option("--token-file", type=click.Path(dir_okay=False), metavar="PATH",
              help="bearer token the agents check (default: the kubeconfig's).")  # fmt: skip
@click.option("--container", "containers", multiple=True, metavar="NAME",
              help="container(s) the fix is for (default: those with ports, else all).")  # fmt: skip
@click.option("--prestop-action", type=click.Choice(["auto", "sleep", "exec"]), default="auto", show_default=True,
              help="native sleep action or exec sleep (auto: from the server's version).")  # fmt: skip
@click.option("--prestop", "default_prestop", type=click.IntRange(min=1), default=5, show_default=True,
              metavar="SECONDS", help="preStop of the fix when no agent measured the delay.")  # fmt: skip
@click.option("--drain", type=click.FloatRange(min=0), default=5, show_default=True, metavar="SECONDS",
              help="drain after SIGTERM assumed when not measured.")  # fmt: skip
@click.option("--margin", type=click.FloatRange(min=0), default=0.5, show_default=True,
              help="seconds added to the worst delay.")  # fmt: skip
@click.option("--patch-out", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE",
              help="write the fix (strategic-merge patch, YAML) here instead of printing it.")  # fmt: skip
@click.option("--apply", "apply_fix", is_flag=True, help="apply the fix, wait for its rollout, test again.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), metavar="DIR",
              help="keep the records, agents' logs and analyses here (default: a temporary directory).")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="print one JSON document (progress stays on stderr).")
@click.option("--quiet", is_flag=True, help="no progress on stderr.")
def rollout_test(
    workload: str, namespace: str | None, kubeconfig: str | None, context: str | None, url: str | None,
    service: str | None, path: str, from_here: bool, qps: int, connections: int, keepalive: bool,
    duration: float | None, warmup: float, tail: float, timeout: float, image: str | None, evidence: str,
    agent_namespace: str, agent_selector: str, agent_port: int, token_file: str | None,
    containers: tuple[str, ...], prestop_action: str, default_prestop: int, drain: float, margin: float,
    patch_out: Path | None, apply_fix: bool, out_dir: Path | None, as_json: bool, quiet: bool,
) -> None:  # fmt: skip
    """Test a workload's rolling update under load and write the fix.

    KIND/NAME is deployment/NAME, statefulset/NAME or daemonset/NAME. The static audit comes first; then
    a load Job (`auditor load` with the auditor image) targets the Service's ClusterIP, the workload is
    restarted (the kubectl.kubernetes.io/restartedAt annotation) and watched to completion, the load's
    records and the node agents' logs (or the client's records alone) are analyzed, and the fix is
    printed as a strategic-merge patch (native preStop sleep when the server has it). --apply patches
    the workload, waits for that rollout and runs the test again: before / after.
    """
    from auditor.commands.collect import _token
    from auditor.kubeapi import load_api_client
    from auditor.kubeapi.workloads import context_namespace
    from auditor.rollout.load import DEFAULT_IMAGE
    from auditor.rollout.progress import make_progress
    from auditor.rollout.report import closing_lines, document
    from auditor.rollout.runner import Interrupted, RolloutTester, RunOptions
    from auditor.rollout.workload import parse_ref

    if from_here and not url:
        raise click.UsageError("--from-here needs --url (the address this machine reaches the service by)")
    if url and not url.startswith(("http://", "https://")):
        raise click.UsageError(f"--url must be an http:// or https:// URL, not {url!r}")
    if not path.startswith("/"):
        raise click.UsageError("--path must start with /")
    ns = namespace or context_namespace(kubeconfig, context)
    ref = parse_ref(workload, ns)
    api_client = load_api_client(kubeconfig, context)
    token = _token(token_file, api_client) if evidence != "client" else None
    with tempfile.TemporaryDirectory(prefix="auditor-rollout-test-") as tmp:
        work = out_dir or Path(tmp)
        try:
            work.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise AuditorError(f"cannot create the directory ({exc.strerror})", str(work), "check --out") from None
        options = RunOptions(
            ref=ref, work_dir=work, url=url, service=service, path=path, from_here=from_here, qps=qps,
            connections=connections, keepalive=keepalive, duration_s=duration, warmup_s=warmup, tail_s=tail,
            image=image or DEFAULT_IMAGE, timeout_s=timeout, evidence=evidence, agent_namespace=agent_namespace,
            agent_selector=agent_selector, agent_port=agent_port, token=token, margin_s=margin, drain_s=drain,
            default_prestop_s=default_prestop, containers=containers, prestop_action=prestop_action,
            apply=apply_fix, patch_out=patch_out,
        )  # fmt: skip
        progress = make_progress(quiet)
        emit = (lambda line: None) if as_json else _echo
        tester = RolloutTester(api_client, options, progress, emit)
        previous = _install_handlers(tester)
        try:
            outcome = tester.run()
        except Interrupted as exc:
            progress.close()
            done = "; ".join(tester.cleanup_log) or "no load Job was running"
            raise _interrupted(exc, tester.phase_name, done) from None
        except AuditorError as exc:
            progress.close()
            for line in tester.cleanup_log:
                click.echo(f"auditor rollout-test: {line}", err=True)
            raise exc from None
        finally:
            _restore_handlers(previous)
            api_client.close()
        progress.close()
        for line in tester.cleanup_log:
            if line.startswith("could not"):
                click.echo(f"auditor rollout-test: {line}", err=True)
        if as_json:
            doc = document(outcome, patch_out, tester.cleanup_log)
            if out_dir is not None:
                doc["out"] = str(out_dir)
            json.dump(doc, sys.stdout, indent=2, default=str)
            sys.stdout.write("\n")
        else:
            for line in closing_lines(outcome):
                click.echo(line)
            if out_dir is not None:
                click.echo(f"records, agents' logs and analyses kept in {out_dir}")
    if outcome.exit_code:
        sys.exit(outcome.exit_code)


def _echo(line: str) -> None:
    click.echo(line)


def _interrupted(exc: Any, phase: str, done: str) -> AuditorError:
    err = AuditorError(f"{exc.what} during {phase}; {done}", "rollout-test",
                       "a rollout already started goes on by itself")  # fmt: skip
    err.exit_code = exc.exit_code
    return err


def _install_handlers(tester: Any) -> dict[int, Any]:
    """SIGINT and SIGTERM raise Interrupted in the main thread, so that the run's ``finally`` deletes the
    load Job; while it cleans up, further signals are ignored (the cleanup finishes)."""
    from auditor.rollout.runner import Interrupted

    def handler(signum: int, frame: FrameType | None) -> None:
        if not tester.cleaning:
            raise Interrupted(signum)

    previous: dict[int, Any] = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            previous[sig] = signal.signal(sig, handler)
        except ValueError:  # not the main thread (an embedding caller): no handlers
            break
    return previous


def _restore_handlers(previous: dict[int, Any]) -> None:
    for sig, old in previous.items():
        signal.signal(sig, old)
