"""``auditor collect``: gather every node agent's event log into one directory for ``analyze --dir``."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import click

from auditor.errors import AuditorError


@click.command("collect")
@click.option(
    "--out", "out", required=True, metavar="DIR", help="directory to collect into (DIR/<node>/...)."
)
@click.option("--namespace", default="auditor", show_default=True, help="namespace of the agent DaemonSet.")
@click.option(
    "--selector",
    default="app.kubernetes.io/name=auditor",
    show_default=True,
    help="label selector of the agent pods.",
)
@click.option(
    "--port",
    type=click.IntRange(1, 65535),
    default=9808,
    show_default=True,
    help="the agents' metrics port, which serves /logs.",
)
@click.option("--kubeconfig", metavar="PATH", help="kubeconfig (default: KUBECONFIG, in-cluster, ~/.kube).")
@click.option("--since", metavar="DURATION", help="only files changed in the last DURATION (e.g. 30m, 2h).")
@click.option(
    "--timeout",
    type=click.FloatRange(min=1),
    default=30,
    show_default=True,
    help="seconds to wait for an agent before giving up on it.",
)
@click.option(
    "--token-file",
    metavar="PATH",
    type=click.Path(dir_okay=False),
    help="bearer token the agents check (default: the kubeconfig's; needed with client certificates).",
)
@click.option("--json", "as_json", is_flag=True, help="print the per-node results as JSON.")
@click.option("--strict", is_flag=True, help="exit 1 when any agent could not be collected.")
def collect(
    out: str, namespace: str, selector: str, port: int, kubeconfig: str | None, since: str | None,
    timeout: float, token_file: str | None, as_json: bool, strict: bool,
) -> None:  # fmt: skip
    """Download every node agent's log directory through the API server's pod proxy into DIR/<node>/.

    Needs 'list' on pods and 'get' on pods/proxy in the agent namespace, and 'get' on nodes/proxy: each
    agent checks the user's bearer token (sent in X-Auditor-Authorization, the header the pod proxy
    forwards) with the API server before serving its logs. Files already complete in DIR are skipped,
    so running it again fetches only what is new. An agent that cannot be reached or refuses is
    reported and the others are still collected.
    """
    import json

    from auditor.collect.fetch import collect_agent, list_agent_pods, write_manifest
    from auditor.commands.agent import parse_duration
    from auditor.kubeapi import load_api_client

    since_s = None
    if since:
        try:
            since_s = parse_duration(since)
        except AuditorError as exc:
            raise AuditorError(exc.what, "--since", exc.hint) from None
    target = Path(out)
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise AuditorError(f"cannot create the directory ({exc.strerror})", out, "check --out") from None
    api_client = load_api_client(kubeconfig)
    token = _token(token_file, api_client)
    pods = list_agent_pods(api_client, namespace, selector)
    if not pods:
        raise AuditorError(
            f"no agent pods match {selector!r}", f"namespace {namespace}",
            "is the DaemonSet deployed (kubectl apply -k daemonset/)? check --namespace/--selector",
        )  # fmt: skip
    if token is None:
        click.echo("auditor collect: no bearer token (the kubeconfig authenticates otherwise): agents with "
                   "--logs-auth=on will refuse; pass --token-file", err=True)  # fmt: skip
    results = [
        collect_agent(api_client, namespace, p, port, target, since_s, timeout, token=token) for p in pods
    ]
    write_manifest(target, results, namespace, selector)
    failed = [r for r in results if not r.ok]
    if as_json:
        doc = {"out": str(target), "nodes": [r.as_dict() for r in results], "failed": len(failed)}
        click.echo(json.dumps(doc, indent=2))
    else:
        for r in results:
            click.echo(r.line())
        click.echo(f"collected {len(results) - len(failed)} of {len(results)} agent(s) into {target}")
        click.echo(f"next: auditor analyze --dir {shlex.quote(str(target))}")
    if failed and (strict or len(failed) == len(results)):
        sys.exit(1)


def _token(token_file: str | None, api_client: object) -> str | None:
    """The bearer token to send: ``--token-file``'s content, else the kubeconfig's (None: none)."""
    from auditor.kubeapi.proxy import bearer_token

    if token_file is None:
        return bearer_token(api_client)
    try:
        token = Path(token_file).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise AuditorError(
            f"cannot read the token file ({exc})", "--token-file", "give a file holding one token"
        ) from None
    if not token or any(c.isspace() for c in token):
        raise AuditorError(
            "not one bearer token", token_file, "the file must hold one token, e.g. from `kubectl create token`"
        )
    return token
