"""The lab cluster's pure parts (tests/lab/cluster.py), without root: the pod template hash that names its
ReplicaSets, and the preStop hook its kubelet honours."""

from __future__ import annotations

import copy

from tests.lab.cluster import ClusterConfig, deployment_manifest, prestop_hook, template_hash
from tests.lab.kube import _ALNUM


def test_the_template_hash_names_a_replicaset_per_template() -> None:
    d = deployment_manifest(ClusterConfig(), 8080)
    template = d["spec"]["template"]
    h = template_hash(template)
    assert h == template_hash(copy.deepcopy(template))  # stable
    assert 8 <= len(h) <= 10 and set(h) <= set(_ALNUM)  # Kubernetes' SafeEncodeString of a 32-bit number
    restarted = copy.deepcopy(template)
    restarted["metadata"]["annotations"] = {"kubectl.kubernetes.io/restartedAt": "2026-12-02T07:00:00Z"}
    assert template_hash(restarted) != h  # a rollout restart is a new ReplicaSet


def test_the_prestop_hook_as_the_kubelet_runs_it() -> None:
    assert prestop_hook({"name": "web"}) == ("none", None)
    assert prestop_hook({"lifecycle": {"preStop": {"sleep": {"seconds": 2}}}}) == ("sleep", 2.0)
    assert prestop_hook({"lifecycle": {"preStop": {"exec": {"command": ["sleep", "3"]}}}}) == (
        "exec",
        ["sleep", "3"],
    )
    # an action set to null (as a patch that replaces the action sends it) is not the hook's action
    assert prestop_hook({"lifecycle": {"preStop": {"exec": None, "sleep": {"seconds": 4}}}}) == ("sleep", 4.0)
    assert prestop_hook({"lifecycle": {"preStop": {"httpGet": {"path": "/stop", "port": 8080}}}}) == (
        "httpGet",
        {"path": "/stop", "port": 8080},
    )
    d = deployment_manifest(ClusterConfig(prestop=3), 8080)
    (c,) = d["spec"]["template"]["spec"]["containers"]
    assert prestop_hook(c) == ("sleep", 3.0)
