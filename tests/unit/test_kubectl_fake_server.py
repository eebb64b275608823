"""The real ``kubectl`` against the fake API server: discovery, JSON and table output, list then watch.

The README's offline section is run verbatim in the lab (tests/lab/test_offline_kubectl_lab.py); this is
the quick check of what kubectl asks of the server (found with ``kubectl -v=8``): aggregated discovery
(``/api``, ``/apis``; the legacy documents for clients that do not ask for it), a LIST with ``limit=500``
then a WATCH from its ``resourceVersion``, ``application/json`` for ``-o json`` and
``application/json;as=Table;v=v1;g=meta.k8s.io`` for the human output.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import require_tool
from tests.kubeserver.server import FakeApiServer


def _pod(name: str, app: str = "web", ns: str = "default") -> dict[str, Any]:
    return {"kind": "Pod", "metadata": {"namespace": ns, "name": name, "labels": {"app": app}},
            "spec": {"nodeName": "n1", "containers": [{"name": "c"}]},
            "status": {"phase": "Running", "podIP": "10.244.0.9"}}  # fmt: skip


@pytest.fixture
def api(tmp_path: Path) -> Iterator[tuple[FakeApiServer, dict[str, str]]]:
    require_tool("kubectl")
    with FakeApiServer() as server:
        kubeconfig = server.write_kubeconfig(tmp_path / "kubeconfig")
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path), "KUBECONFIG": str(kubeconfig)}
        yield server, env


def _kubectl(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["kubectl", *args], env=env, capture_output=True, text=True, timeout=60)


def test_watch_events_as_json_list_then_watch(api: tuple[FakeApiServer, dict[str, str]], tmp_path: Path) -> None:
    server, env = api
    server.create(_pod("web-a"))
    out, err = (tmp_path / "pods.json").open("wb"), (tmp_path / "kubectl.err").open("wb")
    proc = subprocess.Popen(["kubectl", "get", "pods", "-A", "--watch", "--output-watch-events", "-o", "json"],
                            env=env, stdout=out, stderr=err)  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while server.open_watches < 1:
            assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "kubectl.err").read_text()
            time.sleep(0.05)
        server.set_status("Pod", "default", "web-a", {"phase": "Succeeded"})
        server.delete("Pod", "default", "web-a")
        server.create(_pod("web-b"))
        deadline = time.monotonic() + 10
        while (tmp_path / "pods.json").read_text().count('"type"') < 4 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(10)
        out.close()
        err.close()
    lines = [json.loads(x) for x in (tmp_path / "pods.json").read_text().splitlines() if x.strip()]
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in lines] == [
        ("ADDED", "web-a"), ("MODIFIED", "web-a"), ("DELETED", "web-a"), ("ADDED", "web-b")]  # fmt: skip
    # what kubectl asked: a list, then a watch from the list's version
    asked = [r for r in server.requests if r.startswith("/api/v1/pods")]
    assert asked[0].startswith("/api/v1/pods?limit=500")
    assert any("watch=true" in r and "resourceVersion=2" in r for r in asked), asked
    # auditor reads it
    from auditor.sources.kube_stream import read_kube_streams

    kube = read_kube_streams([tmp_path / "pods.json"])
    assert len(kube.pods) == 2


def test_table_output_and_selector(api: tuple[FakeApiServer, dict[str, str]]) -> None:
    server, env = api
    server.create(_pod("web-a"))
    server.create(_pod("db-a", app="db"))
    server.create(_pod("web-x", ns="other"))
    server.create({"kind": "EndpointSlice", "metadata": {"namespace": "default", "name": "web-abc"},
                   "addressType": "IPv4", "endpoints": [{"addresses": ["10.244.0.9"]}], "ports": [{"port": 8080}]})  # fmt: skip
    proc = _kubectl(env, "get", "pods,endpointslices", "-A")
    assert proc.returncode == 0, proc.stderr
    rows = [line.split() for line in proc.stdout.splitlines()]
    assert [r[:5] for r in rows[1:4]] == [["default", "pod/db-a", "0/1", "Running", "0"],
                                          ["default", "pod/web-a", "0/1", "Running", "0"],
                                          ["other", "pod/web-x", "0/1", "Running", "0"]], proc.stdout  # fmt: skip
    assert any(r[:2] == ["default", "endpointslice.discovery.k8s.io/web-abc"] and "8080" in r for r in rows), proc.stdout
    proc = _kubectl(env, "get", "pods", "-n", "default", "-l", "app=web")
    assert proc.returncode == 0, proc.stderr
    assert [line.split()[0] for line in proc.stdout.splitlines()] == ["NAME", "web-a"], proc.stdout


def test_discovery_documents(api: tuple[FakeApiServer, dict[str, str]]) -> None:
    server, env = api
    proc = _kubectl(env, "api-resources", "--no-headers")
    assert proc.returncode == 0, proc.stderr
    names = {line.split()[0] for line in proc.stdout.splitlines()}
    assert {"pods", "endpointslices", "events", "deployments"} <= names, proc.stdout

    def get(path: str, accept: str) -> tuple[str, dict[str, Any]]:
        req = urllib.request.Request(server.url + path, headers={"Accept": accept})
        with urllib.request.urlopen(req, timeout=10) as resp:
            return str(resp.headers["Content-Type"]), dict(json.loads(resp.read()))

    ctype, doc = get("/apis", "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json")
    assert "as=APIGroupDiscoveryList" in ctype and doc["kind"] == "APIGroupDiscoveryList"
    assert "discovery.k8s.io" in {g["metadata"]["name"] for g in doc["items"]}
    _, doc = get("/apis", "application/json")  # a client without aggregated discovery
    assert doc["kind"] == "APIGroupList" and "discovery.k8s.io/v1" in {g["preferredVersion"]["groupVersion"] for g in doc["groups"]}
    _, doc = get("/api/v1", "application/json")
    assert doc["kind"] == "APIResourceList" and {"pods", "events"} <= {r["name"] for r in doc["resources"]}
    _, doc = get("/apis/discovery.k8s.io/v1", "application/json")
    assert [r["kind"] for r in doc["resources"]] == ["EndpointSlice"]


def test_rollout_restart(api: tuple[FakeApiServer, dict[str, str]]) -> None:
    server, env = api
    server.create({"kind": "Deployment", "metadata": {"namespace": "default", "name": "web"},
                   "spec": {"selector": {"matchLabels": {"app": "web"}},
                            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c"}]}}}})  # fmt: skip
    proc = _kubectl(env, "rollout", "restart", "deployment/web")
    assert proc.returncode == 0 and "restarted" in proc.stdout, proc.stderr
    dep = server.get("Deployment", "default", "web")
    assert dep is not None and "kubectl.kubernetes.io/restartedAt" in dep["spec"]["template"]["metadata"]["annotations"]
