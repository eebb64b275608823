"""The fix as a strategic-merge patch, for several starting points: each patch is parsed back from its
YAML text (it must equal the document), applied with a strategic merge (tests/kubeserver/smp.py, the
fake API server's) and the result checked, and schema-valid where the server version allows the field."""

from __future__ import annotations

import copy
from typing import Any

import kubernetes_validate
import pytest
import yaml

from auditor.kubeapi.workloads import parse_version
from auditor.rollout.fix import FixPatch, SleepSupport, build_patch, sleep_support
from auditor.rollout.workload import WorkloadRef
from tests.kubeserver.smp import json_merge_patch, strategic_merge
from tests.kubeserver.workloads import deployment

REF = WorkloadRef("deployment", "web", "default")
NATIVE = sleep_support(1, 31, "v1.31.0")
OLD = sleep_support(1, 29, "v1.29.4")


def web(**container: Any) -> dict[str, Any]:
    d = deployment()
    d["spec"]["template"]["spec"]["containers"][0].update(container)
    return d


def patched(obj: dict[str, Any], patch: FixPatch) -> dict[str, Any]:
    """Parse the YAML text (it is the patch), then apply it as the API server would."""
    assert yaml.safe_load(patch.text) == patch.document
    assert patch.body == {"spec": patch.document["spec"]}
    return dict(strategic_merge(obj, patch.body))


def flat(text: str) -> str:
    """The patch's text with comment lines unwrapped."""
    return " ".join(w for w in text.split() if w != "#")


def hook(obj: dict[str, Any], name: str = "web") -> Any:
    (c,) = [c for c in obj["spec"]["template"]["spec"]["containers"] if c["name"] == name]
    return c.get("lifecycle", {}).get("preStop")


@pytest.mark.parametrize(
    ("major", "minor", "state", "native"),
    [(1, 27, "absent", False), (1, 28, "absent", False), (1, 29, "alpha", False), (1, 30, "beta", True),
     (1, 33, "beta", True), (1, 34, "GA", True), (1, 36, "GA", True), (None, None, "unknown", False)],
)  # fmt: skip
def test_sleep_action_by_server_version(major: int | None, minor: int | None, state: str, native: bool) -> None:
    s = sleep_support(major, minor)
    assert (s.state, s.native) == (state, native)
    assert sleep_support(major, minor, action="exec").native is False
    assert sleep_support(major, minor, action="sleep").native is True


def test_server_versions_as_managed_clusters_write_them() -> None:
    assert parse_version({"major": "1", "minor": "30+", "gitVersion": "v1.30.4-eks-a737599"}).minor == 30
    v = parse_version({"gitVersion": "v1.29.3+k3s1"})
    assert (v.major, v.minor, v.text) == (1, 29, "v1.29.3+k3s1")


def test_no_prestop_native_server() -> None:
    obj = deployment(grace=10)
    patch = build_patch(REF, obj, 2, 3, NATIVE, drain_s=0.03)
    after = patched(obj, patch)
    assert hook(after) == {"sleep": {"seconds": 2}}
    assert after["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == 10  # >= 3 already: kept
    assert (patch.action, patch.changed, patch.grace_needed) == ("sleep", True, 3)
    c = after["spec"]["template"]["spec"]["containers"][0]
    assert c["readinessProbe"] == deployment()["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]
    kubernetes_validate.validate(after, "1.34", strict=True)
    assert "        # web: preStop added: native sleep 2 s\n        - name: web\n" in patch.text
    assert "beta, on by default since 1.30" in flat(patch.text)


def test_grace_is_raised_to_cover_prestop_drain_and_margin() -> None:
    obj = deployment(grace=2)
    patch = build_patch(REF, obj, 4, None, NATIVE, drain_s=3.0, margin_s=0.5)
    assert patched(obj, patch)["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == 8  # ceil(4+3+0.5)
    assert "terminationGracePeriodSeconds 2 -> 8 s" in patch.changes


def test_no_prestop_old_server_uses_exec_sleep_with_a_warning() -> None:
    obj = deployment()
    patch = build_patch(REF, obj, 2, 3, OLD)
    after = patched(obj, patch)
    assert hook(after) == {"exec": {"command": ["sleep", "2"]}}
    (warning,) = patch.warnings
    assert "needs a `sleep` binary in the image registry.example/web:1" in warning
    kubernetes_validate.validate(after, "1.29", strict=True)
    assert "alpha in 1.29, off by default" in flat(patch.text)


def test_old_server_and_a_shell_less_image_says_the_hook_would_fail() -> None:
    obj = deployment(image="gcr.io/distroless/static:nonroot")
    patch = build_patch(REF, obj, 2, 3, OLD)
    assert "looks shell-less, so the hook would fail" in patch.warnings[0]


def test_existing_exec_script_is_extended_not_replaced() -> None:
    obj = web(lifecycle={"preStop": {"exec": {"command": ["/bin/sh", "-c", "nginx -s quit; while pgrep nginx; do sleep 1; done"]}}})
    patch = build_patch(REF, obj, 3, 4, NATIVE)
    after = patched(obj, patch)
    assert hook(after) == {"exec": {"command": [
        "/bin/sh", "-c", "sleep 3 && nginx -s quit; while pgrep nginx; do sleep 1; done"]}}  # fmt: skip
    assert patch.action == "exec"
    assert "preStop extended: `sleep 3 && ` prefixed to its sh -c script (the script still runs after it)" in flat(patch.text)
    assert "existing preStop hooks are extended, not replaced" in flat(patch.text)


def test_existing_exec_sleep_is_raised() -> None:
    obj = web(lifecycle={"preStop": {"exec": {"command": ["sleep", "1"]}}})
    after = patched(obj, build_patch(REF, obj, 2, 3, NATIVE))
    assert hook(after) == {"exec": {"command": ["sleep", "2"]}}


def test_existing_native_sleep_is_raised_or_kept() -> None:
    obj = web(lifecycle={"preStop": {"sleep": {"seconds": 1}}})
    assert hook(patched(obj, build_patch(REF, obj, 2, 3, NATIVE))) == {"sleep": {"seconds": 2}}
    obj = web(lifecycle={"preStop": {"sleep": {"seconds": 10}}})
    patch = build_patch(REF, obj, 2, 3, NATIVE)
    assert not patch.changed and patch.action == "none"
    assert hook(patched(obj, patch)) == {"sleep": {"seconds": 10}}
    assert "native preStop sleep 10 s already >= 2 s: unchanged" in flat(patch.text)


def test_exec_program_is_wrapped_in_a_shell_where_there_is_one() -> None:
    obj = web(lifecycle={"preStop": {"exec": {"command": ["/usr/sbin/nginx", "-s", "quit"]}}})
    patch = build_patch(REF, obj, 2, 3, NATIVE)
    assert hook(patched(obj, patch)) == {"exec": {"command": ["/bin/sh", "-c", "sleep 2 && exec /usr/sbin/nginx -s quit"]}}
    assert "needs /bin/sh and sleep" in patch.warnings[0]


def test_exec_program_in_a_shell_less_image_cannot_be_extended_and_says_what_to_do() -> None:
    obj = web(image="gcr.io/distroless/base", lifecycle={"preStop": {"exec": {"command": ["/app/drain", "--wait"]}}})
    patch = build_patch(REF, obj, 2, 3, NATIVE)
    assert hook(patched(obj, patch)) == {"exec": {"command": ["/app/drain", "--wait"]}}  # untouched
    (warning,) = patch.warnings
    assert "cannot extend the preStop exec '/app/drain --wait'" in warning
    assert "make /app/drain wait 2 s" in warning and "native sleep action" in warning
    assert "WARNING: cannot extend" in flat(patch.text)


def test_shell_exec_in_a_shell_less_image_is_replaced_by_the_native_sleep() -> None:
    obj = web(image="cgr.dev/chainguard/nginx", lifecycle={"preStop": {"exec": {"command": ["sh", "-c", "sleep 5"]}}})
    patch = build_patch(REF, obj, 2, 3, NATIVE)
    assert patch.body["spec"]["template"]["spec"]["containers"][0]["lifecycle"]["preStop"]["exec"] is None
    after = patched(obj, patch)
    assert hook(after) == {"sleep": {"seconds": 2}}  # the exec is gone: a hook has one action
    kubernetes_validate.validate(after, "1.34", strict=True)
    assert "it never delayed anything" in flat(patch.text)


def test_http_hook_is_left_alone_with_what_to_do() -> None:
    obj = web(lifecycle={"preStop": {"httpGet": {"path": "/drain", "port": 8080}}})
    patch = build_patch(REF, obj, 2, 3, NATIVE)
    assert hook(patched(obj, patch)) == {"httpGet": {"path": "/drain", "port": 8080}}
    assert "make its endpoint wait 2 s before it answers" in patch.warnings[0]


def test_containers_are_addressed_by_name_and_sidecars_left_alone() -> None:
    obj = deployment()
    sidecar = {"name": "log-shipper", "image": "fluent-bit:3"}
    obj["spec"]["template"]["spec"]["containers"].insert(0, sidecar)
    after = patched(obj, build_patch(REF, obj, 2, 3, NATIVE))
    names = [c["name"] for c in after["spec"]["template"]["spec"]["containers"]]
    assert names == ["log-shipper", "web"]
    assert hook(after, "log-shipper") is None and hook(after, "web") == {"sleep": {"seconds": 2}}
    chosen = patched(obj, build_patch(REF, obj, 2, 3, NATIVE, wanted=("log-shipper",)))
    assert hook(chosen, "log-shipper") == {"sleep": {"seconds": 2}} and hook(chosen, "web") is None


def test_a_missing_readiness_probe_is_suggested_in_a_comment_only() -> None:
    obj = deployment()
    del obj["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]
    patch = build_patch(REF, obj, 2, 3, NATIVE)
    assert "readinessProbe" not in str(patch.document)
    assert "no readinessProbe; a suggestion, NOT applied" in flat(patch.text)
    assert "#      httpGet: {path: /healthz, port: http}" in patch.text


def test_statefulset_patch_document() -> None:
    ref = WorkloadRef("statefulset", "db", "data")
    obj = copy.deepcopy(deployment("db", "data"))
    obj["kind"] = "StatefulSet"
    patch = build_patch(ref, obj, 2, 3, NATIVE)
    assert patch.document["kind"] == "StatefulSet" and patch.document["metadata"] == {"name": "db", "namespace": "data"}
    assert "kubectl -n data patch statefulset db --patch-file FILE" in flat(patch.text)


def test_support_line() -> None:
    assert SleepSupport(True, "GA", "v1.34.1").line() == (
        "server v1.34.1: lifecycle.preStop.sleep GA since 1.34: native sleep action"
    )


def test_the_merge_patches_of_the_fake_server() -> None:
    base = {"a": {"b": 1, "c": [1, 2]}, "containers": [{"name": "x", "v": 1}, {"name": "y"}]}
    assert json_merge_patch(base, {"a": {"b": None, "c": [3]}, "containers": [{"name": "z"}]}) == {
        "a": {"c": [3]}, "containers": [{"name": "z"}]}  # fmt: skip
    assert strategic_merge(base, {"a": {"b": None}, "containers": [{"name": "y", "v": 2}, {"name": "z"}]}) == {
        "a": {"c": [1, 2]}, "containers": [{"name": "x", "v": 1}, {"name": "y", "v": 2}, {"name": "z"}]}  # fmt: skip
    assert strategic_merge(base, {"containers": [{"name": "x", "$patch": "delete"}]})["containers"] == [{"name": "y"}]


def test_the_load_job_manifest_is_schema_valid_and_bounded() -> None:
    from auditor.rollout.load import LOAD_LABEL, LoadSpec, job_name, load_args, load_job

    name = job_name(WorkloadRef("deployment", "a-very-long-deployment-name-" * 3, "default"))
    assert len(name) <= 63 and name.startswith("auditor-load-a-very-long")
    spec = LoadSpec("http://10.96.0.10:80/", 500, 50, False, 375.2)
    job = load_job(REF, spec, "auditor-load-web-abcde", "registry.example/auditor:0.1.0")
    kubernetes_validate.validate(job, "1.27", strict=True)
    pod = job["spec"]["template"]
    assert pod["metadata"]["labels"][LOAD_LABEL] == "auditor-load-web-abcde"
    (c,) = pod["spec"]["containers"]
    assert c["command"] + c["args"] == ["auditor", "load", "http://10.96.0.10:80/", "--qps", "500", "--connections",
                                        "50", "--no-keepalive", "--duration", "376s", "--out", "-"]  # fmt: skip
    assert load_args(spec) == c["args"]
    assert job["spec"]["activeDeadlineSeconds"] == 436 and job["spec"]["ttlSecondsAfterFinished"] > 0
    assert job["spec"]["backoffLimit"] == 0 and pod["spec"]["restartPolicy"] == "Never"


def test_pod_log_records_and_the_rest() -> None:
    from auditor.rollout.load import Tally, split_log

    log = (b'{"code":200,"error":""}\nauditor load: 2 requests\n{"code":0,"error":"connect: connection refused"}\n'
           b'{"code":502,"error":"502 Bad Gateway"}\n{"code":200,"err')  # fmt: skip
    records, other = split_log(log)
    assert records.count(b"\n") == 3 and other == ["auditor load: 2 requests"]
    tally = Tally()
    for i in range(0, len(log), 7):  # lines cut across chunks
        tally.feed(log[i : i + 7])
    assert tally.snapshot() == (3, 2)
    assert dict(tally.by_class) == {"refused": 1, "http_502": 1} and tally.status[502] == 1
