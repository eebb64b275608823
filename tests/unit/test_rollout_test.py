"""``auditor rollout-test`` end to end over real HTTP with the official client: the fake API server, the
controller emulation (tests/kubeserver/workloads.py) and, for the measured fix, a node agent serving the
example rollout. Every failure is one line and a non-zero exit, and no load Job is ever left behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from auditor.rollout import load as load_module
from tests.conftest import REPO
from tests.unit.rollout_cluster import USER_TOKEN, Cluster, make_cluster
from tests.unit.test_analyze_dir import run

FAST = ("--warmup", "0.3", "--tail", "0.3", "--quiet")


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    yield from make_cluster(tmp_path)


@pytest.fixture
def agent_cluster(tmp_path: Path) -> Iterator[Cluster]:
    yield from make_cluster(tmp_path, with_agent=True)


def rollout_test(capsys: pytest.CaptureFixture[str], c: Cluster, *args: str) -> tuple[int, str, str]:
    return run(capsys, "rollout-test", "deployment/web", "--kubeconfig", str(c.kubeconfig), *FAST, *args)


def web(c: Cluster) -> dict[str, Any]:
    obj = c.api.get("Deployment", "default", "web")
    assert obj is not None
    return obj


def container(c: Cluster) -> dict[str, Any]:
    spec = web(c)["spec"]["template"]["spec"]
    (only,) = spec["containers"]
    return dict(only)


# -- the whole experiment -----------------------------------------------------------------------------------


def test_apply_with_an_agent_measures_patches_with_native_sleep_and_proves_it(
    agent_cluster: Cluster, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    c = agent_cluster
    patch_file = tmp_path / "fix.yaml"
    code, out, err = rollout_test(capsys, c, "--apply", "--patch-out", str(patch_file))
    assert code == 0, err + out  # SAFE after the fix
    assert c.controller.errors == []
    # the static audit came first, then the measured GAP with the example's 1 s delay
    assert out.index("ERROR no-prestop (container web)") < out.index("test before:")
    assert "evidence: 1 node agent(s) (lab-node)" in out
    assert "GAP default/web:" in out and "1.008 s after their deletion (node lab-node)" in out
    assert "fix (measured): preStop >= 2 s" in out
    # the Deployment got the native sleep through the API (a strategic merge, containers by name)
    assert container(c)["lifecycle"] == {"preStop": {"sleep": {"seconds": 2}}}
    assert container(c)["readinessProbe"]["httpGet"]["path"] == "/ready"  # the rest of the container is kept
    assert web(c)["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == 30  # never lowered
    smp = [(p, t) for p, t, _ in c.api.patches if "strategic-merge" in t]
    assert smp == [("/apis/apps/v1/namespaces/default/deployments/web", "application/strategic-merge-patch+json")]
    restarts = [b for _, t, b in c.api.patches if "merge-patch+json" in t and "strategic" not in t]
    assert len(restarts) == 2 and all("kubectl.kubernetes.io/restartedAt" in json.dumps(b) for b in restarts)
    # three rollouts: before, the patch, after; two load Jobs, both deleted
    assert len(c.controller.rollouts) == 3
    assert len(set(c.controller.jobs_seen)) == 2 and c.jobs() == []
    # before / after
    lines = out.splitlines()
    before = next(line for line in lines if line.startswith("before: "))
    after = next(line for line in lines if line.startswith("after:  "))
    assert before.endswith("; GAP") and "refused" in before
    assert after.endswith("; SAFE") and " 0 failed (0%): -; 502s: 0;" in after
    change = next(line for line in lines if "failed -> " in line)
    assert change.endswith("failed -> 0%: GAP -> SAFE") and change.split("%")[0].replace(".", "").isdigit()
    assert "verdict: SAFE (exit 0)" in out
    # the patch file: YAML with comments, the same patch, ready for kubectl patch or a kustomize overlay
    text = patch_file.read_text()
    doc = yaml.safe_load(text)
    assert doc["kind"] == "Deployment" and doc["metadata"] == {"name": "web", "namespace": "default"}
    assert doc["spec"]["template"]["spec"]["containers"] == [
        {"name": "web", "lifecycle": {"preStop": {"sleep": {"seconds": 2}}}}
    ]
    assert "beta, on by default since 1.30" in text and "# web: preStop added: native sleep 2 s" in text


def test_apply_with_the_client_alone_says_what_it_cannot_tell(
    cluster: Cluster, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = rollout_test(capsys, cluster, "--apply")
    assert code == 3, err + out  # INCONCLUSIVE: no failure after the fix, but nothing measured
    assert "evidence: the client's records alone (no agent pods match" in out
    assert "GAP default/web (client's records only): 40 of" in out
    assert "they cannot tell which node or consumer" in out
    assert "note: the load said: auditor load: summary line on stderr" in out  # not taken for a record
    assert "fix (NOT measured): preStop >= 5 s" in out  # the default, said so
    assert container(cluster)["lifecycle"] == {"preStop": {"sleep": {"seconds": 5}}}
    lines = out.splitlines()
    assert next(line for line in lines if line.startswith("before: ")).endswith("refused 40; 502s: 0; GAP")
    assert next(line for line in lines if line.startswith("after:  ")).endswith("; INCONCLUSIVE")
    assert any(line.endswith("failed -> 0%: GAP -> INCONCLUSIVE") for line in lines)
    assert cluster.jobs() == []


def test_json_document_and_no_apply(cluster: Cluster, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, out, err = rollout_test(capsys, cluster, "--json", "--out", str(tmp_path / "kept"))
    assert code == 1, err  # GAP, not applied
    doc = json.loads(out)
    assert {"workload", "server", "static", "evidence", "tests", "patch", "applied", "before_after", "verdict",
            "exit_code", "cleanup"} <= set(doc)  # fmt: skip
    assert doc["verdict"] == "GAP" and doc["exit_code"] == 1 and doc["applied"] is False
    assert doc["server"] == {"version": "v1.31.0", "native_sleep": True, "sleep_action_state": "beta"}
    (test,) = doc["tests"]
    assert test["client"]["by_class_after_restart"]["refused"] == 40
    assert test["evidence"] == "client" and test["analysis"]["client"]["tool"] == "vegeta"
    assert doc["patch"]["measured"] is False and doc["patch"]["changed"] is True
    assert "preStop" not in json.dumps(web(cluster)["spec"]["template"])  # nothing applied
    assert any(line.startswith("deleted the load Job auditor-load-web-") for line in doc["cleanup"])
    assert (tmp_path / "kept" / "before" / "client.json").stat().st_size > 0
    assert cluster.jobs() == []


def test_old_server_gets_an_exec_sleep_with_a_warning(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for c in make_cluster(tmp_path, version=(1, 29)):
        code, out, err = rollout_test(capsys, c, "--patch-out", str(tmp_path / "fix.yaml"))
        assert code == 1, err
        doc = yaml.safe_load((tmp_path / "fix.yaml").read_text())
        (entry,) = doc["spec"]["template"]["spec"]["containers"]
        assert entry["lifecycle"] == {"preStop": {"exec": {"command": ["sleep", "5"]}}}
        assert "WARNING: container web: the exec sleep needs a `sleep` binary in the image" in out
        assert "alpha in 1.29, off by default" in out
        assert c.jobs() == []


def test_from_here_runs_the_load_locally(cluster: Cluster, capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    stand_in = tmp_path / "load.py"
    stand_in.write_text(textwrap.dedent('''
        import json, signal, sys, time
        stop = []
        signal.signal(signal.SIGTERM, lambda *a: stop.append(1))
        url = sys.argv[2]
        i = 0
        while not stop:
            t = time.time_ns()
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t // 10**9)) + ".%09dZ" % (t % 10**9)
            code, err = (200, "") if i % 10 else (0, "connect: connection refused")
            print(json.dumps({"code": code, "timestamp": stamp, "latency": 1000000, "error": err}), flush=True)
            i += 1
            time.sleep(0.01)
    '''))  # fmt: skip
    monkeypatch.setattr(load_module, "LOCAL_PREFIX", [sys.executable, str(stand_in)])
    code, out, err = rollout_test(capsys, cluster, "--from-here", "--url", "http://127.0.0.1:9/")
    assert code == 1, err
    assert "test before: load local -> http://127.0.0.1:9/" in out
    assert cluster.controller.jobs_seen == []  # no Job at all
    assert "GAP default/web (client's records only)" in out


def test_from_here_needs_url(cluster: Cluster, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = rollout_test(capsys, cluster, "--from-here")
    assert code == 2 and "--from-here needs --url" in err


# -- one clear line, a non-zero exit, no Job left ---------------------------------------------------------


def last_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    return lines[-1]


def test_unknown_workload(cluster: Cluster, capsys: pytest.CaptureFixture[str]) -> None:
    code, _out, err = run(capsys, "rollout-test", "deployment/nope", "-n", "default", "--kubeconfig",
                         str(cluster.kubeconfig), "--quiet")  # fmt: skip
    assert code == 2
    assert err.strip() == (
        "auditor: rollout-test: deployment default/nope not found — check the name and -n/--namespace "
        "(kubectl -n default get deployments)"
    )
    assert cluster.controller.jobs_seen == [] and cluster.jobs() == []


def test_not_a_workload_is_a_usage_error(cluster: Cluster, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "rollout-test", "pod/web", "--kubeconfig", str(cluster.kubeconfig))
    assert code == 2 and "not a workload: 'pod/web'" in err


def grant_all_but(c: Cluster, missing: tuple[str, str, str] | None) -> None:
    """Everything rollout-test needs (as daemonset/rollout-test-rbac.yaml grants it), but ``missing``
    (verb, group, resource)."""
    from tests.unit.test_rollout_rbac import rbac_grants

    c.api.enforce_rbac = True
    for verb, group, resource, sub in rbac_grants():
        if (verb, group, resource) != missing:
            c.api.grant("tester", verb, resource, sub, group=group)


def test_the_documented_rbac_is_enough(agent_cluster: Cluster, capsys: pytest.CaptureFixture[str]) -> None:
    grant_all_but(agent_cluster, None)
    code, out, err = rollout_test(capsys, agent_cluster, "--apply")
    assert code == 0, err + out
    assert agent_cluster.jobs() == []


@pytest.mark.parametrize(
    ("missing", "message"),
    [
        (("patch", "apps", "deployments"),
         'permission missing: patch deployments.apps \'web\' in namespace default (the API server: deployments.apps '
         '"web" is forbidden: User "tester" cannot patch resource "deployments" in API group "apps" in the '
         'namespace "default")'),
        (("create", "batch", "jobs"),
         'permission missing: create jobs.batch in namespace default (the API server: jobs.batch is forbidden: '
         'User "tester" cannot create resource "jobs" in API group "batch" in the namespace "default")'),
        (("get", "apps", "deployments"), 'cannot get resource "deployments" in API group "apps"'),
    ],
)  # fmt: skip
def test_missing_permission_is_one_line(
    cluster: Cluster, capsys: pytest.CaptureFixture[str], missing: tuple[str, str, str], message: str
) -> None:
    grant_all_but(cluster, missing)
    code, _out, err = rollout_test(capsys, cluster)
    assert code == 2
    line = last_line(err)
    assert line.startswith("auditor: rollout-test: permission missing: ")
    assert message in line
    assert "daemonset/rollout-test-rbac.yaml" in line
    assert cluster.jobs() == []


def test_a_job_that_cannot_be_deleted_is_named_with_the_command_to_delete_it(
    cluster: Cluster, capsys: pytest.CaptureFixture[str]
) -> None:
    grant_all_but(cluster, ("delete", "batch", "jobs"))
    code, _, err = rollout_test(capsys, cluster)
    assert code == 1  # the test itself ran
    assert "could not delete the load Job auditor-load-web-" in err
    assert "kubectl -n default delete job auditor-load-web-" in err


def test_a_rollout_that_stalls(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for c in make_cluster(tmp_path, stall=True):
        code, _, err = rollout_test(capsys, c, "--timeout", "1")
        assert code == 2
        line = last_line(err)
        assert line.startswith("auditor: rollout-test: the rollout of deployment default/web did not complete "
                               "within 1 s: 1 of 3 updated, 3 available, 4 total — look at its new pods")  # fmt: skip
        assert "deleted the load Job auditor-load-web-" in err
        assert len(c.controller.jobs_seen) == 1 and c.jobs() == []


def test_a_rollout_past_its_progress_deadline(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for c in make_cluster(tmp_path, stall=True, deadline_exceeded=True):
        code, _, err = rollout_test(capsys, c)
        assert code == 2
        assert "stalled: 1 of 3 updated, 3 available, 4 total; ProgressDeadlineExceeded: ReplicaSet" in last_line(err)
        assert c.jobs() == []


def test_a_load_pod_that_cannot_pull_its_image(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for c in make_cluster(tmp_path, job_phase="Pending", waiting_reason="ImagePullBackOff"):
        code, _, err = rollout_test(capsys, c, "--image", "registry.invalid/auditor:none")
        assert code == 2
        line = last_line(err)
        assert "cannot start: ImagePullBackOff" in line and "pass --image" in line
        assert c.jobs() == [] and c.controller.rollouts == []  # nothing restarted


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_killed_mid_run_leaves_no_job(tmp_path: Path, sig: signal.Signals) -> None:
    for c in make_cluster(tmp_path, stall=True):
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        proc = subprocess.Popen(
            [sys.executable, "-m", "auditor", "rollout-test", "deployment/web", "--kubeconfig", str(c.kubeconfig),
             "--warmup", "0.2", "--timeout", "120"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 60
            while not c.controller.rollouts:  # the Job runs and the rollout has begun (and stalls)
                assert proc.poll() is None, proc.communicate()
                assert time.monotonic() < deadline, "the run never reached the rollout"
                time.sleep(0.05)
            assert len(c.jobs()) == 1
            proc.send_signal(sig)
            _, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
        assert proc.returncode == 128 + sig, err
        line = last_line(err)
        assert line.startswith(f"auditor: rollout-test: interrupted by {sig.name} during before: rollout; "
                               "deleted the load Job auditor-load-web-")  # fmt: skip
        assert c.jobs() == []
        assert USER_TOKEN not in err
