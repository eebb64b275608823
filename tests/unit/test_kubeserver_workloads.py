"""The fake API server's workload side, through the official client (auditor.kubeapi.workloads): GET of one
object, strategic-merge and merge PATCH with generations, Jobs, pods by label, pod logs, /version, RBAC."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from auditor.kubeapi import load_api_client
from auditor.kubeapi.workloads import MERGE, KubeCallError, WorkloadApi
from tests.kubeserver.server import FakeApiServer
from tests.kubeserver.workloads import deployment

TOKEN = "fake-token"  # the kubeconfig's


@pytest.fixture
def server() -> Iterator[FakeApiServer]:
    with FakeApiServer() as srv:
        srv.create(deployment())
        yield srv


@pytest.fixture
def api(server: FakeApiServer, tmp_path: Path) -> Iterator[WorkloadApi]:
    client = load_api_client(str(server.write_kubeconfig(tmp_path / "kubeconfig")))
    try:
        yield WorkloadApi(client, timeout_s=5)
    finally:
        client.close()


def test_version(server: FakeApiServer, api: WorkloadApi) -> None:
    server.set_version(1, 34, "v1.34.2-gke.100")
    v = api.server_version()
    assert (v.major, v.minor, v.text) == (1, 34, "v1.34.2-gke.100")


def test_get_and_not_found(api: WorkloadApi) -> None:
    obj = api.read_workload("deployment", "default", "web")
    assert obj["metadata"]["generation"] == 1 and obj["kind"] == "Deployment"
    with pytest.raises(KubeCallError) as info:
        api.read_workload("deployment", "default", "nope")
    assert info.value.not_found
    assert info.value.line() == (
        "not found: get deployments.apps 'nope' in namespace default (deployments.apps \"nope\" not found)"
    )


def test_strategic_merge_patch_merges_containers_by_name_and_bumps_the_generation(
    server: FakeApiServer, api: WorkloadApi
) -> None:
    server.set_status("Deployment", "default", "web", {"observedGeneration": 1, "replicas": 3})
    patch = {"spec": {"template": {"spec": {"terminationGracePeriodSeconds": 40, "containers": [
        {"name": "web", "lifecycle": {"preStop": {"sleep": {"seconds": 2}}}},
        {"name": "sidecar", "image": "busybox"}]}}}, "status": {"replicas": 99}}  # fmt: skip
    obj = api.patch_workload("deployment", "default", "web", patch)
    spec = obj["spec"]["template"]["spec"]
    web, sidecar = spec["containers"]
    assert web["lifecycle"] == {"preStop": {"sleep": {"seconds": 2}}}
    assert web["ports"] == [{"name": "http", "containerPort": 8080}]  # merged, not replaced
    assert sidecar == {"name": "sidecar", "image": "busybox"}
    assert spec["terminationGracePeriodSeconds"] == 40
    assert obj["metadata"]["generation"] == 2
    assert obj["status"] == {"observedGeneration": 1, "replicas": 3}  # a PATCH never writes status
    # an exec hook replaced by the native sleep: null deletes
    obj = api.patch_workload("deployment", "default", "web", {"spec": {"template": {"spec": {"containers": [
        {"name": "web", "lifecycle": {"preStop": {"exec": None, "sleep": {"seconds": 3}}}}]}}}})  # fmt: skip
    assert obj["spec"]["template"]["spec"]["containers"][0]["lifecycle"] == {"preStop": {"sleep": {"seconds": 3}}}
    assert obj["metadata"]["generation"] == 3


def test_merge_patch_of_annotations(server: FakeApiServer, api: WorkloadApi) -> None:
    restart = {"spec": {"template": {"metadata": {"annotations": {"kubectl.kubernetes.io/restartedAt": "2026-01-01T00:00:00Z"}}}}}
    obj = api.patch_workload("deployment", "default", "web", restart, MERGE)
    assert obj["spec"]["template"]["metadata"]["annotations"] == {"kubectl.kubernetes.io/restartedAt": "2026-01-01T00:00:00Z"}
    assert obj["spec"]["template"]["metadata"]["labels"] == {"app": "web"}
    assert obj["metadata"]["generation"] == 2
    obj = api.patch_workload("deployment", "default", "web", {"metadata": {"labels": {"team": "a"}}}, MERGE)
    assert obj["metadata"]["generation"] == 2  # no spec change, no new generation
    assert server.patches[0][1] == "application/merge-patch+json"


def test_jobs_pods_and_logs(server: FakeApiServer, api: WorkloadApi) -> None:
    job = api.create_job("default", {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"generateName": "load-"},
                                     "spec": {"template": {"spec": {"containers": []}}}})  # fmt: skip
    name = job["metadata"]["name"]
    assert name.startswith("load-") and api.read_job("default", name)["metadata"]["uid"]
    for i, labels in enumerate(({"job": name}, {"job": "other"})):
        server.create({"kind": "Pod", "metadata": {"name": f"p{i}", "namespace": "default", "labels": labels}})
    (pod,) = api.list_pods("default", f"job={name}")
    assert pod["metadata"]["name"] == "p0"
    server.set_pod_log("default", "p0", b'{"code":200}\n')
    assert api.pod_log("default", "p0") == b'{"code":200}\n'
    calls = []
    server.set_pod_log("default", "p1", lambda: calls.append(1) or b"line\n")
    assert b"".join(api.follow_pod_log("default", "p1")) == b"line\n" and calls == [1]
    assert api.delete_job("default", name) is True
    assert api.delete_job("default", name) is False  # already gone: not an error
    with pytest.raises(KubeCallError) as info:
        api.pod_log("default", "nope")
    assert info.value.not_found


def test_rbac_enforced(server: FakeApiServer, api: WorkloadApi) -> None:
    server.enforce_rbac = True
    with pytest.raises(KubeCallError) as info:
        api.read_workload("deployment", "default", "web")
    assert info.value.status == 401  # the kubeconfig's token is unknown to the server
    server.add_token(TOKEN, "jane", groups=("devs",))
    with pytest.raises(KubeCallError) as info:
        api.read_workload("deployment", "default", "web")
    assert info.value.forbidden
    assert info.value.line() == (
        "permission missing: get deployments.apps 'web' in namespace default (the API server: deployments.apps "
        '"web" is forbidden: User "jane" cannot get resource "deployments" in API group "apps" in the namespace '
        '"default")'
    )
    server.grant("group:devs", "get", "deployments", group="apps")
    assert api.read_workload("deployment", "default", "web")["metadata"]["name"] == "web"
    with pytest.raises(KubeCallError) as info:
        api.pod_log("default", "x")
    assert 'cannot get resource "pods/log" in API group "" in the namespace "default"' in info.value.line()
    assert api.server_version().minor == 31  # /version needs no grant
