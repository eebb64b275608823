"""Issue 12's proof, in the lab as one command: ``auditor rollout-test deployment/web --apply`` against the lab
as a cluster (tests/lab/cluster.py: real pods in network namespaces, kube-proxy's rules with a 1 s
propagation delay, the Deployment and Job controllers, the node agent behind the pod proxy).

The Deployment starts with no preStop and a 2 s grace period. The first test must be a GAP whose client
failures equal what tcpdump counted on the node (the old pods' RSTs answering SYNs) and are attributed
to the terminations (the load opens a connection per request, ``--no-keepalive``: a kept-alive connection the
server closes at SIGTERM just as a request arrives is reset, and the load sends that GET again, as Go's
transport does, while the nodes count an in-flight reset; the after run's verdict would depend on that
race, which no preStop removes); the patch must use the native sleep action (>= 2 s: the 1 s delay + margin) and a
grace period >= preStop + drain; ``--apply`` must patch the Deployment through the API so that the lab's
next pods carry the hook, and their servers must see SIGTERM only after the sleep; the re-run must have
0 failures and be SAFE, and the before / after lines must be printed.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO, require_root, require_tool
from tests.lab.cluster import ClusterConfig, LabCluster

pytestmark = [pytest.mark.lab, pytest.mark.privileged, pytest.mark.slow]

S = 1_000_000_000
_LOAD = re.compile(r"^  load: ([\d,]+) requests, ([\d,]+) failed \([^)]*\): (.*); 502s: ([\d,]+)$", re.M)
_ATTRIBUTED = re.compile(
    r"^  attributed: ([\d,]+) of the client's ([\d,]+) failed request\(s\) matched .*; ([\d,]+) unexplained "
    r"inside terminations, ([\d,]+) outside any termination$",
    re.M,
)
_FIX = re.compile(
    r"^fix \(measured\): preStop >= (\d+) s, terminationGracePeriodSeconds (\d+) s \(>= (\d+) s needed\); .*"
    r"terminationGracePeriodSeconds >= preStop \+ drain ([\d.]+) s \+ margin ([\d.]+) s$",
    re.M,
)


def _n(text: str) -> int:
    return int(text.replace(",", ""))


def _rollout_terminations(truth: dict[str, Any], index: int) -> list[dict[str, Any]]:
    """The old pods the ``index``-th rollout (0: the first restart, 1: the patch, 2: the re-run's restart)
    deleted."""
    gen = truth["rollouts"][index]["generation"]
    return [t for t in truth["terminations"] if t["deleted_by_generation"] == gen]


def test_rollout_test_finds_the_gap_applies_the_fix_and_proves_it(tmp_path: Path) -> None:
    require_root()
    require_tool("tcpdump", "ip", "nsenter", "iptables-nft-restore", "xtables-monitor")
    pytest.importorskip("bcc", reason="the agent's probes need bcc (python3-bpfcc)")
    started = time.monotonic()
    with LabCluster(ClusterConfig(replicas=3, delay=1.0, grace=2), tmp_path / "lab") as cluster:
        cmd = [sys.executable, "-m", "auditor", "rollout-test", "deployment/web", "-n", "default",
               "--kubeconfig", str(cluster.kubeconfig), "--apply",
               "--qps", "200", "--no-keepalive", "--warmup", "2", "--tail", "4", "--quiet"]  # fmt: skip
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=240)
        web = cluster.server.get("Deployment", "default", "web")
        jobs_left = cluster.server.objects("Job")
        truth = cluster.finish()
    out = proc.stdout
    (tmp_path / "rollout-test.txt").write_text(out + "\n--- stderr\n" + proc.stderr)
    assert truth["errors"] == [], truth["errors"]
    assert proc.returncode == 0, out + proc.stderr  # SAFE after the fix
    assert len(truth["rollouts"]) == 3  # the restart, the patch, the re-run's restart

    # before: a GAP, the client's failures what the node's capture counted, attributed to the terminations
    before_line, after_line = _LOAD.findall(out)
    requests, failed = _n(before_line[0]), _n(before_line[1])
    before = _rollout_terminations(truth, 0)
    assert len(before) == 3 and all(t["prestop"]["kind"] == "none" for t in before)
    lab = {
        "refused": sum(t["rst_refused"] for t in before),
        "reset": sum(t["rst_established"] for t in before),
    }
    classes = {c: _n(n) for c, n in (part.rsplit(" ", 1) for part in before_line[2].split(", "))}
    truth_rows = [(t["name"], t["rst_refused"], t["rst_established"], t["unreachable"]) for t in before]
    # refused: a SYN the node still sent to the closed listener; reset: a connection accepted into the
    # queue of a listener that closed before the server took it (both answered by the old pod's kernel)
    assert failed > 0 and classes == {c: n for c, n in lab.items() if n}, (before_line, truth_rows)
    assert sum(t["unreachable"] for t in before) == 0 and failed == sum(lab.values()), (
        before_line,
        truth_rows,
    )
    attributed = _ATTRIBUTED.search(out)
    assert attributed is not None, out
    matched, of, unexplained, outside = (_n(g) for g in attributed.groups())
    assert (of, matched, unexplained, outside) == (failed, failed, 0, 0), attributed.group(0)
    assert "GAP default/web: " in out and "node lab-node" in out

    # the patch: the native sleep, >= 2 s, and a grace period >= preStop + drain
    fix = _FIX.search(out)
    assert fix is not None, out
    prestop, grace, needed = int(fix.group(1)), int(fix.group(2)), int(fix.group(3))
    drain, margin = float(fix.group(4)), float(fix.group(5))
    assert prestop >= 2 and grace >= needed >= prestop + drain + margin
    assert f"  change: container web: preStop added: native sleep {prestop} s" in out
    assert f"  change: terminationGracePeriodSeconds 2 -> {grace} s" in out
    # --apply patched the Deployment through the API (a strategic merge: the rest of the container kept)
    assert web is not None
    (container,) = web["spec"]["template"]["spec"]["containers"]
    assert container["lifecycle"] == {"preStop": {"sleep": {"seconds": prestop}}}
    assert (
        "readinessProbe" in container
        and web["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == grace
    )

    # the lab's pods got the hook: those the re-run replaced slept before their servers saw SIGTERM
    after = _rollout_terminations(truth, 2)
    assert len(after) == 3
    for t in after:
        assert t["prestop"] == {"kind": "sleep", "arg": float(prestop)} and t["grace_s"] == grace, t
        assert t["t_server_sigterm"] - t["t_delete"] >= prestop * S, t["name"]
        assert t["t_rule_removed_after"] < t["t_server_sigterm"], t["name"]  # the gap is closed
        assert t["rst_refused"] + t["rst_established"] + t["unreachable"] == 0, t
    # the patch's own rollout replaced the first test's pods, which had no hook yet
    assert all(t["prestop"]["kind"] == "none" for t in _rollout_terminations(truth, 1))

    # after: no failure, SAFE; before / after printed
    assert _n(after_line[1]) == 0 and _n(after_line[0]) > 0, after_line
    lines = out.splitlines()
    b = next(line for line in lines if line.startswith("before: "))
    a = next(line for line in lines if line.startswith("after:  "))
    pct = f"{100 * failed / requests:.2f}%"
    assert b == f"before: {requests:,} requests, {failed:,} failed ({pct}): {before_line[2]}; 502s: 0; GAP"
    assert a == f"after:  {_n(after_line[0]):,} requests, 0 failed (0%): -; 502s: 0; SAFE"
    assert f"{100 * failed / requests:.2f}% failed -> 0%: GAP -> SAFE" in lines
    assert "verdict: SAFE (exit 0)" in lines

    # the two load Jobs ran in the client's namespace and were deleted (their pods stopped)
    assert jobs_left == []
    assert [x["why_stopped"] for x in truth["loads"]] == ["the Job was deleted"] * 2
    assert time.monotonic() - started < 200
