"""daemonset/rollout-test-rbac.yaml: the roles of the person running ``auditor rollout-test``: schema-valid,
apart from the agent's ClusterRole, no wildcard, nothing beyond what the run does (and, in
test_rollout_test.py, enough for a whole run with --apply against a fake server that enforces it)."""

from __future__ import annotations

from typing import Any

import kubernetes_validate
import pytest

from tests.unit.test_manifests import DAEMONSET, K8S_VERSIONS, load_docs

RBAC = DAEMONSET / "rollout-test-rbac.yaml"


def docs() -> list[dict[str, Any]]:
    return load_docs(RBAC)


def by_name(name: str) -> dict[str, Any]:
    (doc,) = [d for d in docs() if d["metadata"]["name"] == name]
    return doc


def rbac_grants(name: str = "auditor-rollout-test") -> list[tuple[str, str, str, str]]:
    """(verb, API group, resource, subresource) for every rule of the role ``name``."""
    out = []
    for rule in by_name(name)["rules"]:
        for group in rule["apiGroups"]:
            for res in rule["resources"]:
                resource, _, sub = res.partition("/")
                out += [(verb, group, resource, sub) for verb in rule["verbs"]]
    return out


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_schema_valid(version: str) -> None:
    for doc in docs():
        kubernetes_validate.validate(doc, version, strict=True)


def test_roles_are_apart_from_the_agent_and_least_privilege() -> None:
    kinds = sorted((d["kind"], d["metadata"]["name"]) for d in docs())
    assert kinds == [("ClusterRole", "auditor-read-logs"), ("ClusterRole", "auditor-rollout-test"),
                     ("Role", "auditor-collect")]  # fmt: skip
    assert all(d["metadata"]["name"] != "auditor" for d in docs()), "never the agent's ClusterRole"
    for doc in docs():
        for rule in doc["rules"]:
            assert "*" not in rule["verbs"] + rule["resources"] + rule["apiGroups"], rule
    granted = set(rbac_grants())
    # the writes: the workload's patch, the load Job's create and delete; nothing else
    writes = {g for g in granted if g[0] not in ("get", "list", "watch")}
    assert writes == {("patch", "apps", "deployments", ""), ("patch", "apps", "statefulsets", ""),
                      ("patch", "apps", "daemonsets", ""), ("create", "batch", "jobs", ""),
                      ("delete", "batch", "jobs", "")}  # fmt: skip
    assert ("get", "", "pods", "log") in granted
    assert not any(r in ("secrets", "configmaps") or s in ("exec", "attach") for _, _, r, s in granted)
    assert set(rbac_grants("auditor-collect")) == {("list", "", "pods", ""), ("get", "", "pods", "proxy")}
    assert by_name("auditor-collect")["metadata"]["namespace"] == "auditor"
    assert set(rbac_grants("auditor-read-logs")) == {("get", "", "nodes", "proxy")}


def test_the_header_says_how_to_bind_it() -> None:
    text = RBAC.read_text()
    assert "create rolebinding auditor-rollout-test --clusterrole=auditor-rollout-test" in text
    assert "create clusterrolebinding auditor-read-logs --clusterrole=auditor-read-logs" in text
