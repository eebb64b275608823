"""The DaemonSet packaging in daemonset/: complete kustomizations, schema-valid manifests, least privilege.

kustomize cannot be downloaded in CI, so ``build`` below implements the subset of kustomize these
kustomizations use (resources, namespace, labels, images, strategic-merge patches) and refuses any
other field. Where ``kubectl`` is installed, its ``kubectl kustomize`` output must equal ours.
"""

from __future__ import annotations

import copy
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.conftest import REPO

DAEMONSET = REPO / "daemonset"
BUILDS = {"base": DAEMONSET, "prometheus-operator": DAEMONSET / "overlays" / "prometheus-operator"}
K8S_VERSIONS = ("1.27", "1.37")  # oldest supported by the manifests, newest schema shipped
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding"}
SUPPORTED_FIELDS = {"apiVersion", "kind", "namespace", "labels", "resources", "images", "patches"}
READ_VERBS = {"get", "list", "watch"}
CRD_KINDS = {"ServiceMonitor"}  # no OpenAPI schema in kubernetes-validate: checked by hand below
# applied by hand, in no kustomization (the rollout-test user's roles): tests/unit/test_rollout_rbac.py
STANDALONE = {DAEMONSET / "rollout-test-rbac.yaml"}

Doc = dict[str, Any]


# --- the kustomize subset -----------------------------------------------------------------------


def load_docs(path: Path) -> list[Doc]:
    with path.open() as f:
        return [d for d in yaml.safe_load_all(f) if d]


def kustomization(directory: Path) -> Doc:
    doc = load_docs(directory / "kustomization.yaml")[0]
    unknown = set(doc) - SUPPORTED_FIELDS
    assert not unknown, f"{directory}: kustomization fields this test does not implement: {unknown}"
    assert doc["kind"] == "Kustomization"
    return doc


def strategic_merge(base: Any, patch: Any) -> Any:
    """Strategic merge patch: maps merge, null deletes, lists of named maps merge by name."""
    if isinstance(base, dict) and isinstance(patch, dict):
        out = dict(base)
        for key, value in patch.items():
            if value is None:
                out.pop(key, None)
            elif key in out:
                out[key] = strategic_merge(out[key], value)
            else:
                out[key] = copy.deepcopy(value)
        return out
    if (
        isinstance(base, list)
        and isinstance(patch, list)
        and all(isinstance(i, dict) and "name" in i for i in base + patch)
    ):
        merged = {i["name"]: i for i in base}
        for item in patch:
            merged[item["name"]] = strategic_merge(merged.get(item["name"], {}), item)
        return list(merged.values())
    return copy.deepcopy(patch)


def key(doc: Doc) -> tuple[str, str, str]:
    return (doc["kind"], doc["metadata"].get("namespace", ""), doc["metadata"]["name"])


def pod_templates(doc: Doc) -> list[Doc]:
    template = doc.get("spec", {}).get("template")
    return [template] if isinstance(template, dict) else []


def build(directory: Path) -> list[Doc]:
    kust = kustomization(directory)
    docs: list[Doc] = []
    for entry in kust.get("resources", []):
        target = (directory / entry).resolve()
        docs.extend(build(target) if target.is_dir() else load_docs(target))
    for patch_entry in kust.get("patches", []):
        assert set(patch_entry) == {"path"}, f"only file patches are implemented: {patch_entry}"
        for patch in load_docs(directory / patch_entry["path"]):
            matches = [i for i, d in enumerate(docs) if key(d) == key(patch)]
            assert len(matches) == 1, f"{directory}: patch {key(patch)} matches {len(matches)} resources"
            docs[matches[0]] = strategic_merge(docs[matches[0]], patch)
    if "namespace" in kust:
        for doc in docs:
            if doc["kind"] not in CLUSTER_SCOPED:
                doc["metadata"]["namespace"] = kust["namespace"]
    for label_set in kust.get("labels", []):
        assert set(label_set) <= {"pairs"}, "includeSelectors/includeTemplates not implemented"
        for doc in docs:
            doc["metadata"].setdefault("labels", {}).update(label_set["pairs"])
    for image in kust.get("images", []):
        for doc in docs:
            for template in pod_templates(doc):
                for container in template["spec"].get("containers", []):
                    name, _, tag = container["image"].partition(":")
                    if name == image["name"]:
                        new_name = image.get("newName", name)
                        container["image"] = f"{new_name}:{image.get('newTag', tag or 'latest')}"
    return docs


@pytest.fixture(scope="module", params=sorted(BUILDS))
def built(request: pytest.FixtureRequest) -> tuple[str, list[Doc]]:
    return request.param, build(BUILDS[request.param])


def only(docs: list[Doc], kind: str) -> Doc:
    found = [d for d in docs if d["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def agent_container(docs: list[Doc]) -> Doc:
    containers = only(docs, "DaemonSet")["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == ["agent"]
    return containers[0]


# --- least-privilege predicates (tested on literals too) ----------------------------------------


def privileged_paths(node: Any, path: str = "") -> list[str]:
    """Every place in a manifest that says ``privileged: true``."""
    if isinstance(node, dict):
        found = [f"{path}.privileged"] if node.get("privileged") is True else []
        for k, v in node.items():
            found += privileged_paths(v, f"{path}.{k}")
        return found
    if isinstance(node, list):
        return [p for i, v in enumerate(node) for p in privileged_paths(v, f"{path}[{i}]")]
    return []


def verbs_beyond_read(role: Doc) -> set[str]:
    return {verb for rule in role.get("rules", []) for verb in rule.get("verbs", [])} - READ_VERBS


def test_predicates_catch_what_they_look_for() -> None:
    pod = {"spec": {"containers": [{"securityContext": {"privileged": True}}], "privileged": False}}
    assert privileged_paths(pod) == [".spec.containers[0].securityContext.privileged"]
    assert privileged_paths({"securityContext": {"privileged": False}}) == []
    role = {"rules": [{"verbs": ["get", "list"]}, {"verbs": ["watch", "patch", "*"]}]}
    assert verbs_beyond_read(role) == {"patch", "*"}
    broken = copy.deepcopy(load_docs(DAEMONSET / "base" / "daemonset.yaml")[0])
    broken["spec"]["template"]["spec"]["hostNetwrok"] = True  # a typo strict validation must catch
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSIONS[-1], strict=True)
    assert strategic_merge(
        {"a": {"b": 1, "c": 2}, "l": [{"name": "x", "v": 1}, {"name": "y"}], "s": [1, 2]},
        {"a": {"c": None, "d": 3}, "l": [{"name": "x", "v": 2}, {"name": "z"}], "s": [3]},
    ) == {"a": {"b": 1, "d": 3}, "l": [{"name": "x", "v": 2}, {"name": "y"}, {"name": "z"}], "s": [3]}


# --- the kustomizations are complete -------------------------------------------------------------


def referenced_files(directory: Path) -> set[Path]:
    kust = kustomization(directory)
    paths = {directory / "kustomization.yaml"}
    for entry in kust.get("resources", []):
        target = (directory / entry).resolve()
        assert target.exists(), f"{directory}/kustomization.yaml: resource {entry} does not exist"
        paths |= referenced_files(target) if target.is_dir() else {target}
    for patch in kust.get("patches", []):
        target = (directory / patch["path"]).resolve()
        assert target.is_file(), f"{directory}/kustomization.yaml: patch {patch['path']} does not exist"
        paths.add(target)
    return paths


def test_every_manifest_is_referenced_and_every_reference_exists() -> None:
    referenced: set[Path] = set()
    for directory in BUILDS.values():
        referenced |= referenced_files(directory)
    manifests = {p.resolve() for p in DAEMONSET.rglob("*") if p.suffix in {".yaml", ".yml"}}
    assert manifests, "no manifests in daemonset/"
    assert manifests - referenced - {p.resolve() for p in STANDALONE} == set(), "manifests no kustomization references"
    others = {p.relative_to(DAEMONSET).as_posix() for p in DAEMONSET.rglob("*") if p.is_file()} - {
        p.relative_to(DAEMONSET.resolve()).as_posix() for p in manifests
    }
    assert others == {"Dockerfile", "README.md"}
    for directory in {p.parent for p in manifests}:
        assert (directory / "kustomization.yaml").exists(), f"{directory}: YAML without a kustomization"


def test_base_has_every_object_the_issue_lists(built: tuple[str, list[Doc]]) -> None:
    name, docs = built
    kinds = sorted(d["kind"] for d in docs)
    expected = ["ClusterRole", "ClusterRoleBinding", "DaemonSet", "Namespace", "Service", "ServiceAccount"]
    if name == "prometheus-operator":
        expected.append("ServiceMonitor")
    assert kinds == sorted(expected)
    assert len({key(d) for d in docs}) == len(docs), "duplicate objects"
    for doc in docs:
        if doc["kind"] not in CLUSTER_SCOPED:
            assert doc["metadata"]["namespace"] == "auditor", key(doc)
        assert doc["metadata"]["labels"]["app.kubernetes.io/part-of"] == "auditor", key(doc)


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_manifests_pass_the_kubernetes_openapi_schema(built: tuple[str, list[Doc]], version: str) -> None:
    _, docs = built
    validated = 0
    for doc in docs:
        if doc["kind"] in CRD_KINDS:
            continue
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            where = ".".join(str(p) for p in exc.path)
            pytest.fail(f"{key(doc)} against {version}: {where}: {exc.message}")
        validated += 1
    assert validated == len([d for d in docs if d["kind"] not in CRD_KINDS]) >= 6


def test_kubectl_kustomize_agrees_with_our_build(built: tuple[str, list[Doc]]) -> None:
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl not installed: the in-test kustomize subset stands alone")
    name, docs = built
    out = subprocess.run(
        ["kubectl", "kustomize", str(BUILDS[name])], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    theirs = {key(d): d for d in yaml.safe_load_all(out) if d}
    assert theirs == {key(d): d for d in docs}


# --- least privilege and the agent's contract ----------------------------------------------------


def test_daemonset_is_not_privileged_and_names_its_capabilities(built: tuple[str, list[Doc]]) -> None:
    _, docs = built
    for doc in docs:
        assert privileged_paths(doc) == [], key(doc)
    security = agent_container(docs)["securityContext"]
    assert security["capabilities"]["drop"] == ["ALL"]
    added = security["capabilities"]["add"]
    assert {"BPF", "PERFMON", "NET_ADMIN"} <= set(added)
    assert set(added) <= {"BPF", "PERFMON", "NET_ADMIN", "NET_RAW"}, "a capability nobody justified"
    assert "SYS_ADMIN" not in added and "ALL" not in added
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False


def test_cluster_role_reads_pods_endpointslices_events_and_only_creates_reviews(
    built: tuple[str, list[Doc]],
) -> None:
    _, docs = built
    role = only(docs, "ClusterRole")
    granted = {
        (g, r, v) for rule in role["rules"] for g in rule["apiGroups"] for r in rule["resources"] for v in rule["verbs"]
    }
    reads = {(g, r) for g, r, v in granted if v in READ_VERBS}
    assert reads == {
        ("", "pods"),
        ("", "events"),
        ("discovery.k8s.io", "endpointslices"),
        ("events.k8s.io", "events"),
    }
    # /logs: TokenReview + SubjectAccessReview of the caller; nothing else is ever written
    assert {(g, r, v) for g, r, v in granted if v not in READ_VERBS} == {
        ("authentication.k8s.io", "tokenreviews", "create"),
        ("authorization.k8s.io", "subjectaccessreviews", "create"),
    }
    assert verbs_beyond_read(role) == {"create"}
    for rule in role["rules"]:
        assert "*" not in rule["verbs"] + rule["resources"] + rule["apiGroups"], rule
        assert "resourceNames" not in rule and "nonResourceURLs" not in rule, rule
        if "create" in rule["verbs"]:
            assert rule["verbs"] == ["create"], "review creation only, no other verb on those resources"
    binding = only(docs, "ClusterRoleBinding")
    account = only(docs, "ServiceAccount")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": role["metadata"]["name"],
    }
    assert binding["subjects"] == [
        {
            "kind": "ServiceAccount",
            "name": account["metadata"]["name"],
            "namespace": account["metadata"]["namespace"],
        }
    ]
    ds_spec = only(docs, "DaemonSet")["spec"]["template"]["spec"]
    assert ds_spec["serviceAccountName"] == account["metadata"]["name"]


def test_daemonset_runs_the_agent_as_the_issue_asks(built: tuple[str, list[Doc]]) -> None:
    _, docs = built
    daemonset = only(docs, "DaemonSet")
    spec = daemonset["spec"]["template"]["spec"]
    container = agent_container(docs)
    assert spec["hostNetwork"] is True and spec["hostPID"] is True
    assert spec["tolerations"] == [{"operator": "Exists"}]
    assert spec["terminationGracePeriodSeconds"] >= 30
    assert container["command"] + container["args"] == [
        "auditor",
        "agent",
        "--node-name",
        "$(NODE_NAME)",
        "--log-dir",
        "/var/lib/auditor",
        "--metrics-addr",
        ":9808",
        "--memory-limit-mb",
        "512",
    ]
    assert not any(a.startswith("--logs-auth") for a in container["args"]), "/logs stays behind the token check"
    # the agent keeps itself and its watch process under --memory-limit-mb; the container's limit leaves
    # room above it for the BPF maps (kernel memory charged to the pod) and the page cache
    limit_mib = int(container["resources"]["limits"]["memory"].removesuffix("Mi"))
    assert limit_mib - 512 >= 96, limit_mib
    env = {e["name"]: e for e in container["env"]}
    assert env["NODE_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}
    assert set(container["resources"]) == {"requests", "limits"}
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {"metrics": 9808}
    # the pod template carries the selector's labels
    assert daemonset["spec"]["selector"]["matchLabels"].items() <= spec_labels(daemonset).items()


def spec_labels(daemonset: Doc) -> dict[str, str]:
    labels: dict[str, str] = daemonset["spec"]["template"]["metadata"]["labels"]
    return labels


def test_host_mounts_are_read_only_except_the_event_log(built: tuple[str, list[Doc]]) -> None:
    _, docs = built
    spec = only(docs, "DaemonSet")["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    mounts = {m["name"]: m for m in agent_container(docs)["volumeMounts"]}
    assert set(mounts) == set(volumes), "a mount without a volume, or a volume never mounted"
    host_paths = {v["hostPath"]["path"]: name for name, v in volumes.items() if "hostPath" in v}
    for needed in ("/sys/kernel/tracing", "/sys/kernel/btf/vmlinux", "/lib/modules", "/usr/src"):
        assert mounts[host_paths[needed]].get("readOnly") is True, needed
    writable = {name for name, m in mounts.items() if not m.get("readOnly")}
    assert writable == {"event-log", "tmp"}
    assert mounts["event-log"]["mountPath"] == "/var/lib/auditor"
    assert "emptyDir" in volumes["tmp"]


def test_service_and_service_monitor_reach_the_metrics_port(built: tuple[str, list[Doc]]) -> None:
    name, docs = built
    service = only(docs, "Service")
    pod_labels = spec_labels(only(docs, "DaemonSet"))
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert [(p["name"], p["port"], p["targetPort"]) for p in service["spec"]["ports"]] == [
        ("metrics", 9808, "metrics")
    ]
    scrape = service["metadata"]["annotations"]["prometheus.io/scrape"]
    if name != "prometheus-operator":
        assert scrape == "true"
        return
    assert scrape == "false", "the overlay's patch turns annotation scraping off"
    monitor = only(docs, "ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["namespaceSelector"]["matchNames"] == [service["metadata"]["namespace"]]
    assert [e["port"] for e in monitor["spec"]["endpoints"]] == ["metrics"]
    assert set(monitor["spec"]) <= {"selector", "namespaceSelector", "endpoints", "jobLabel"}


# --- the image -------------------------------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    logical, current = [], ""
    for line in (DAEMONSET / "Dockerfile").read_text().splitlines():
        if line.lstrip().startswith("#") or not line.strip():
            continue
        current += line.rstrip("\\").strip() + " "
        if not line.rstrip().endswith("\\"):
            logical.append(current.strip())
            current = ""
    return [(s.split(None, 1)[0].upper(), s.split(None, 1)[1]) for s in logical]


def test_dockerfile_builds_the_agent_image() -> None:
    instructions = dockerfile_instructions()
    stages = [i for i, (op, _) in enumerate(instructions) if op == "FROM"]
    assert [instructions[i][1] for i in stages] == ["debian:bookworm-slim AS build", "debian:bookworm-slim"]
    build, final = instructions[: stages[1]], instructions[stages[1] :]
    # the build stage compiles the C extensions into a wheel; the agent image gets no compiler
    build_runs = " ".join(args for op, args in build if op == "RUN")
    assert {"gcc", "python3-dev"} <= set(build_runs.split()) and "pip wheel" in build_runs
    assert any(op == "COPY" and args.split()[0] == "." for op, args in build), "copies the repo"
    runs = " ".join(args for op, args in final if op == "RUN")
    assert "python3-bpfcc" in runs.split() and "libpcap0.8" in runs.split()
    assert "gcc" not in runs.split() and "python3-dev" not in runs.split()
    assert "--system-site-packages" in runs, "bcc lives in Debian's dist-packages"
    assert ("COPY", "--from=build /wheels /wheels") in final
    assert "pip install" in runs and "/wheels/*.whl" in runs
    assert ("ENTRYPOINT", '["auditor", "agent"]') in instructions
    users = [args for op, args in instructions if op == "USER"]
    assert users in ([], ["0:0"]), "BPF needs root with named capabilities; the comment says why"
    text = (DAEMONSET / "Dockerfile").read_text()
    assert "docker build -f daemonset/Dockerfile" in text, "the build command is documented"
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["auditor"] == "auditor.cli:main", "the entrypoint is the package's console script"


# --- the documented RBAC of `auditor collect` ------------------------------------------------------


def test_documented_collect_rbac_grants_what_collect_and_the_agent_check() -> None:
    from auditor.model.access import node_proxy_permission

    text = (DAEMONSET / "README.md").read_text()
    blocks = [b.split("```", 1)[0] for b in text.split("```yaml\n")[1:]]
    docs = [d for b in blocks for d in yaml.safe_load_all(b) if d]
    assert {d["kind"] for d in docs} == {"Role", "ClusterRole"}
    for doc in docs:
        kubernetes_validate.validate(doc, K8S_VERSIONS[-1], strict=True)
    role, cluster_role = only(docs, "Role"), only(docs, "ClusterRole")
    granted = {(r, v) for rule in role["rules"] for r in rule["resources"] for v in rule["verbs"]}
    assert granted == {("pods", "list"), ("pods/proxy", "get")}  # listing agents, the pod proxy
    wanted = node_proxy_permission("node-a")  # what each agent's SubjectAccessReview asks
    (rule,) = cluster_role["rules"]
    assert rule["apiGroups"] == [wanted.group]
    assert rule["resources"] == [f"{wanted.resource}/{wanted.subresource}"] and rule["verbs"] == [wanted.verb]
