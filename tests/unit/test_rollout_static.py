"""The static audit of ``auditor rollout-test`` on crafted workloads (one finding per test), the
``KIND/NAME`` argument, and when a rollout counts as complete or stalled."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from auditor.errors import AuditorError
from auditor.rollout.static import Finding, static_audit
from auditor.rollout.status import rollout_state
from auditor.rollout.workload import looks_shell_less, parse_ref
from tests.kubeserver.workloads import deployment


def codes(findings: list[Finding]) -> dict[str, Finding]:
    return {f.code: f for f in findings}


def good() -> dict[str, Any]:
    """A Deployment without findings: readiness probe, native preStop sleep, room for the drain."""
    d = deployment(grace=30)
    d["spec"]["template"]["spec"]["containers"][0]["lifecycle"] = {"preStop": {"sleep": {"seconds": 5}}}
    return d


def test_a_good_deployment_has_only_the_note() -> None:
    found = static_audit("deployment", good())
    assert [f.code for f in found] == ["readiness-after-sigterm"]
    (note,) = found
    assert note.severity == "note"
    assert "not knowable from the manifest: the test will check it" in note.message


def test_no_readiness_probe() -> None:
    d = good()
    del d["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]
    f = codes(static_audit("deployment", d))["no-readiness-probe"]
    assert (f.severity, f.subject) == ("warning", "container web")
    assert "before it listens" in f.why and "readinessProbe" in f.fix


def test_no_prestop() -> None:
    f = codes(static_audit("deployment", deployment()))["no-prestop"]
    assert f.severity == "error" and "propagation delay" in f.why
    assert "lifecycle.preStop.sleep.seconds" in f.fix and "1.30" in f.fix and "1.34" in f.fix


def test_grace_shorter_than_prestop() -> None:
    d = good()
    d["spec"]["template"]["spec"]["containers"][0]["lifecycle"] = {
        "preStop": {"exec": {"command": ["/bin/sh", "-c", "sleep 20"]}}
    }
    d["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = 15
    f = codes(static_audit("deployment", d))["grace-too-short"]
    assert f.severity == "error"  # not even the preStop fits: SIGKILL before any drain
    assert f.message == "terminationGracePeriodSeconds 15 s is shorter than preStop 20 s + drain 5 s"
    assert "terminationGracePeriodSeconds >= 25" in f.fix


def test_grace_that_leaves_less_than_the_drain_is_a_warning() -> None:
    d = good()
    d["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = 8  # preStop 5 + drain 5 > 8
    f = codes(static_audit("deployment", d))["grace-too-short"]
    assert f.severity == "warning" and "only 3 s after SIGTERM" in f.why
    assert "grace-too-short" not in codes(static_audit("deployment", d, drain_s=2.0))


@pytest.mark.parametrize(
    "image", ["gcr.io/distroless/static-debian12:nonroot", "cgr.dev/chainguard/nginx:latest", "ko.local/app:v1"]
)
def test_exec_prestop_in_a_shell_less_image(image: str) -> None:
    d = good()
    c = d["spec"]["template"]["spec"]["containers"][0]
    c["image"] = image
    c["lifecycle"] = {"preStop": {"exec": {"command": ["sleep", "5"]}}}
    f = codes(static_audit("deployment", d))["exec-prestop-shell-less"]
    assert f.severity == "error" and image in f.message
    assert "the native sleep action is needed" in f.fix


def test_exec_prestop_in_an_image_with_a_shell_is_fine() -> None:
    d = good()
    c = d["spec"]["template"]["spec"]["containers"][0]
    c["image"], c["lifecycle"] = "nginx:1.27", {"preStop": {"exec": {"command": ["sh", "-c", "sleep 5"]}}}
    assert "exec-prestop-shell-less" not in codes(static_audit("deployment", d))
    # a program of the image itself needs no shell, even in distroless
    c["image"], c["lifecycle"] = "gcr.io/distroless/base", {"preStop": {"exec": {"command": ["/app/drain"]}}}
    assert "exec-prestop-shell-less" not in codes(static_audit("deployment", d))


def test_shell_less_names() -> None:
    assert looks_shell_less("gcr.io/distroless/java21") and looks_shell_less("scratch")
    assert looks_shell_less("registry.example/app:1.2-static")
    assert not looks_shell_less("nginx:1.27") and not looks_shell_less("registry.example/staticsite:1")


def test_max_unavailable_takes_every_replica_with_max_surge_zero() -> None:
    d = good()
    d["spec"]["strategy"] = {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "100%", "maxSurge": 0}}
    f = codes(static_audit("deployment", d))["max-unavailable-all"]
    assert f.severity == "error"
    assert f.message.startswith("maxUnavailable 100% takes every one of the 3 pod(s) at once and maxSurge 0")
    d["spec"]["strategy"]["rollingUpdate"] = {"maxUnavailable": 3, "maxSurge": 1}
    assert "maxSurge 0" not in codes(static_audit("deployment", d))["max-unavailable-all"].message
    d["spec"]["strategy"]["rollingUpdate"] = {"maxUnavailable": "50%", "maxSurge": 1}  # 1 of 3: fine
    assert "max-unavailable-all" not in codes(static_audit("deployment", d))


def test_recreate_strategy() -> None:
    d = good()
    d["spec"]["strategy"] = {"type": "Recreate"}
    assert codes(static_audit("deployment", d))["recreate-strategy"].severity == "error"


def test_single_replica() -> None:
    d = good()
    d["spec"]["replicas"] = 1
    f = codes(static_audit("deployment", d))["single-replica"]
    assert f.severity == "warning" and "PodDisruptionBudget" in f.fix
    sts = copy.deepcopy(d)
    sts["kind"] = "StatefulSet"
    del sts["spec"]["strategy"]
    f = codes(static_audit("statefulset", sts))["single-replica"]
    assert f.severity == "error" and "deletes its pod before it creates the replacement" in f.why


def test_daemonset_max_unavailable_of_every_node() -> None:
    ds = good()
    ds["kind"] = "DaemonSet"
    del ds["spec"]["strategy"], ds["spec"]["replicas"]
    ds["spec"]["updateStrategy"] = {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "100%"}}
    assert "max-unavailable-all" not in codes(static_audit("daemonset", ds))  # size unknown: no status yet
    ds["status"] = {"desiredNumberScheduled": 4}
    f = codes(static_audit("daemonset", ds))["max-unavailable-all"]
    assert "4 pod(s)" in f.message and "maxSurge 0" in f.message
    assert "single-replica" not in codes(static_audit("daemonset", ds))


def test_only_serving_containers_need_a_prestop() -> None:
    d = good()
    d["spec"]["template"]["spec"]["containers"].append({"name": "log-shipper", "image": "fluent-bit:3"})
    assert "no-prestop" not in codes(static_audit("deployment", d))  # the sidecar has no port
    found = static_audit("deployment", d, wanted=("log-shipper",))
    assert codes(found)["no-prestop"].subject == "container log-shipper"


@pytest.mark.parametrize(
    ("text", "kind", "name"),
    [("deployment/web", "deployment", "web"), ("deploy/web", "deployment", "web"), ("sts/db-0x", "statefulset", "db-0x"),
     ("DaemonSet/edge", "daemonset", "edge")],
)  # fmt: skip
def test_parse_ref(text: str, kind: str, name: str) -> None:
    ref = parse_ref(text, "prod")
    assert (ref.kind, ref.name, ref.namespace) == (kind, name, "prod")


@pytest.mark.parametrize("text", ["web", "pod/web", "deployment/", "deployment/Web_1"])
def test_parse_ref_refuses(text: str) -> None:
    with pytest.raises(AuditorError) as info:
        parse_ref(text, "default")
    assert info.value.exit_code == 2


# -- rollout status --------------------------------------------------------------------------------------


def with_status(gen: int, **status: Any) -> dict[str, Any]:
    d = good()
    d["metadata"]["generation"] = gen
    d["status"] = status
    return d


def test_deployment_rollout_state() -> None:
    waiting = rollout_state("deployment", with_status(2, observedGeneration=1, replicas=3, updatedReplicas=3,
                                                      availableReplicas=3))  # fmt: skip
    assert not waiting.done and "observe generation 2" in waiting.summary
    progressing = rollout_state("deployment", with_status(2, observedGeneration=2, replicas=4, updatedReplicas=1,
                                                          availableReplicas=3))  # fmt: skip
    assert not progressing.done and progressing.summary == "1 of 3 updated, 3 available, 4 total"
    old_left = rollout_state("deployment", with_status(2, observedGeneration=2, replicas=4, updatedReplicas=3,
                                                       availableReplicas=3))  # fmt: skip
    assert not old_left.done  # an old pod is still terminating
    done = rollout_state("deployment", with_status(2, observedGeneration=2, replicas=3, updatedReplicas=3,
                                                   availableReplicas=3))  # fmt: skip
    assert done.done and done.stalled is None
    # the restart's generation, not an older complete status
    assert not rollout_state("deployment", with_status(2, observedGeneration=2, replicas=3, updatedReplicas=3,
                                                       availableReplicas=3), min_generation=3).done  # fmt: skip
    stalled = with_status(2, observedGeneration=2, replicas=4, updatedReplicas=1, availableReplicas=3, conditions=[
        {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded", "message": "too slow"}])  # fmt: skip
    assert rollout_state("deployment", stalled).stalled == "ProgressDeadlineExceeded: too slow"


def test_statefulset_and_daemonset_rollout_state() -> None:
    sts = with_status(3, observedGeneration=3, replicas=3, updatedReplicas=3, readyReplicas=3,
                      currentRevision="a", updateRevision="b")  # fmt: skip
    assert not rollout_state("statefulset", sts).done
    sts["status"]["currentRevision"] = "b"
    assert rollout_state("statefulset", sts).done
    ds = with_status(2, observedGeneration=2, desiredNumberScheduled=4, updatedNumberScheduled=3, numberAvailable=4)
    assert not rollout_state("daemonset", ds).done
    ds["status"]["updatedNumberScheduled"] = 4
    assert rollout_state("daemonset", ds).done
