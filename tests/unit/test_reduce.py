"""Only what the audit needs is recorded: pods, EndpointSlices and Events reduced before anything keeps
them (:mod:`auditor.model.reduce`).

* the reader draws the same facts from every shipped stream whether its objects are full or reduced;
* a preStop exec command keeps exactly what tells how long it sleeps;
* a pod with a secret in an env value, an arg, a preStop script, a probe command, a termination
  message and the last-applied annotation, watched by the agent (the watch child process, as
  ``auditor agent`` runs it) against the fake API server: the marker is in no file of the log
  directory and in no ``/logs`` answer, while the audit still sees the pod, its preStop and its probe.
"""

from __future__ import annotations

import copy
import json
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from auditor.agent import Agent, AgentConfig, run_agent
from auditor.kubeapi import load_api_client
from auditor.kubeapi.isolated import WatchProcess
from auditor.kubeapi.reviews import ApiAccessReviewer
from auditor.model.reduce import (
    REDACTED,
    reduce_endpoint_slice,
    reduce_event,
    reduce_object,
    reduce_pod,
    reduce_prestop_command,
)
from auditor.sources.kube_pod import exec_sleep
from auditor.sources.kube_stream import read_kube_streams
from tests.conftest import REPO
from tests.kubeserver.server import FakeApiServer
from tests.unit.test_agent_core import CountingSource

MARKER = "s3cr3t-MARKER-7f1c"
STREAMS = [*sorted((REPO / "tests" / "data" / "kube").glob("*.json")), REPO / "examples" / "rollout" / "kube.json"]


def secret_pod(name: str = "web-1", ip: str = "10.244.1.7") -> dict[str, Any]:
    """A pod whose spec and status carry MARKER wherever real pods carry secrets."""
    applied = json.dumps({"kind": "Deployment", "spec": {"template": {"spec": {"env": [{"value": MARKER}]}}}})
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "name": name, "namespace": "shop", "uid": f"uid-{name}", "generateName": "web-6d4b9c7f5-",
            "labels": {"app": "web", "pod-template-hash": "6d4b9c7f5"},
            "annotations": {"kubectl.kubernetes.io/last-applied-configuration": applied,
                            "kubectl.kubernetes.io/restartedAt": "2026-11-26T08:00:00Z",
                            "vendor.example/api-key": MARKER},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-6d4b9c7f5",
                                 "uid": "rs-1", "controller": True, "blockOwnerDeletion": True}],
            "managedFields": [{"manager": "kubectl", "fieldsV1": {"f:spec": {MARKER: {}}}}],
        },
        "spec": {
            "nodeName": "n1", "terminationGracePeriodSeconds": 45, "serviceAccountName": "web",
            "volumes": [{"name": "creds", "secret": {"secretName": MARKER}}],
            "containers": [{
                "name": "app", "image": f"registry.example/app:{MARKER}",
                "command": ["/app", f"--password={MARKER}"], "args": ["--token", MARKER],
                "env": [{"name": "DB_PASSWORD", "value": MARKER},
                        {"name": "API", "valueFrom": {"secretKeyRef": {"name": "x", "key": MARKER}}}],
                "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"}],
                "volumeMounts": [{"name": "creds", "mountPath": "/creds"}],
                "lifecycle": {"preStop": {"exec": {"command": [
                    "sh", "-c", f"sleep 5; curl -s -H 'Authorization: Bearer {MARKER}' http://localhost/drain"]}}},
                "readinessProbe": {
                    "exec": {"command": ["check", f"--secret={MARKER}"]}, "periodSeconds": 2,
                    "failureThreshold": 1,
                },
                "livenessProbe": {"httpGet": {"path": f"/live?key={MARKER}", "port": 8080,
                                              "httpHeaders": [{"name": "X-Key", "value": MARKER}]}},
            }],
        },
        "status": {
            "phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}], "hostIP": "192.168.0.10",
            "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": "2026-11-26T07:59:00Z",
                            "message": MARKER}],
            "containerStatuses": [{
                "name": "app", "ready": True, "restartCount": 1, "image": MARKER, "imageID": MARKER,
                "state": {"running": {"startedAt": "2026-11-26T07:58:00Z"}},
                "lastState": {"terminated": {"exitCode": 1, "reason": "Error", "message": MARKER,
                                             "finishedAt": "2026-11-26T07:57:00Z"}},
            }],
        },
    }  # fmt: skip


def secret_slice(ready: bool = True, ip: str = "10.244.1.7") -> dict[str, Any]:
    return {
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "web-abc", "namespace": "shop",
                     "labels": {"kubernetes.io/service-name": "web", "team": MARKER},
                     "annotations": {"endpoints.kubernetes.io/last-change-trigger-time": "2026-11-26T08:00:01Z",
                                     "note": MARKER}},
        "addressType": "IPv4", "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": [{"addresses": [ip], "conditions": {"ready": ready, "serving": True, "terminating": not ready},
                       "hostname": MARKER, "targetRef": {"kind": "Pod", "namespace": "shop", "name": "web-1",
                                                          "uid": "uid-web-1"}, "nodeName": "n1"}],
    }  # fmt: skip


def secret_event() -> dict[str, Any]:
    return {
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"name": "web-1.abc", "namespace": "shop", "annotations": {"x": MARKER}},
        "involvedObject": {"kind": "Pod", "namespace": "shop", "name": "web-1", "uid": "uid-web-1"},
        "reason": "Killing", "message": "Stopping container app", "type": "Normal", "count": 1,
        "firstTimestamp": "2026-11-26T08:00:00Z", "lastTimestamp": "2026-11-26T08:00:00Z",
        "source": {"component": "kubelet", "host": "n1"}, "reportingInstance": MARKER,
    }  # fmt: skip


# -- the reduced form ------------------------------------------------------------------------------
def test_pod_keeps_what_the_audit_reads_and_nothing_secret() -> None:
    full = secret_pod()
    before = copy.deepcopy(full)
    reduced = reduce_pod(full)
    assert full == before  # the input is not modified
    assert MARKER not in json.dumps(reduced)
    meta, spec, status = reduced["metadata"], reduced["spec"], reduced["status"]
    assert set(meta) == {"name", "namespace", "uid", "labels", "ownerReferences", "annotations"}
    assert meta["annotations"] == {"kubectl.kubernetes.io/restartedAt": "2026-11-26T08:00:00Z"}
    assert meta["ownerReferences"] == [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-6d4b9c7f5",
                                        "uid": "rs-1", "controller": True}]  # fmt: skip
    assert set(spec) == {"nodeName", "terminationGracePeriodSeconds", "containers"}
    (c,) = spec["containers"]
    assert set(c) == {"name", "ports", "lifecycle", "readinessProbe"}
    assert c["lifecycle"]["preStop"]["exec"]["command"] == ["sh", "-c", f"sleep 5; {REDACTED}"]
    assert c["readinessProbe"] == {"exec": {}, "periodSeconds": 2, "failureThreshold": 1}
    assert status["containerStatuses"][0] == {
        "name": "app", "ready": True, "restartCount": 1,
        "state": {"running": {"startedAt": "2026-11-26T07:58:00Z"}},
        "lastState": {"terminated": {"exitCode": 1, "reason": "Error", "finishedAt": "2026-11-26T07:57:00Z"}},
    }  # fmt: skip
    assert reduce_pod(reduced) == reduced == reduce_object(full)  # idempotent, and by the object's kind


def test_slices_and_events_keep_only_their_allow_list() -> None:
    s = reduce_endpoint_slice(secret_slice())
    assert MARKER not in json.dumps(s)
    assert s["metadata"]["labels"] == {"kubernetes.io/service-name": "web"}
    assert list(s["metadata"]["annotations"]) == ["endpoints.kubernetes.io/last-change-trigger-time"]
    assert set(s["endpoints"][0]) == {"addresses", "conditions", "targetRef", "nodeName"}
    e = reduce_event(secret_event())
    assert MARKER not in json.dumps(e)
    assert e["reason"] == "Killing" and e["involvedObject"]["name"] == "web-1" and e["count"] == 1
    other = reduce_object({"kind": "Secret", "metadata": {"name": "x"}, "data": {"k": MARKER}})
    assert other == {"kind": "Secret", "metadata": {"name": "x"}}


@pytest.mark.parametrize(
    "command",
    [
        ["sleep", "5"], ["/bin/sleep", "2m"], ["sleep", "infinity"], ["sleep"],
        ["sh", "-c", "sleep 5"], ["/bin/sh", "-c", "sleep 3 && sleep 2"], ["bash", "-c", "sleep 5; nginx -s quit"],
        ["sh", "-c", "nginx -s quit; sleep 10"], ["sh", "-c", "curl -H 'x: y' http://a && sleep 1\nsleep 'unterminated"],
        ["sh", "-e", "-c", "sleep 4", "arg0"], ["sh", "-c"], ["sh", "/drain.sh"], ["/drain", "--token", "x"],
        ["busybox", "-c", ";;sleep 1;;"], [],
    ],
)  # fmt: skip
def test_prestop_command_keeps_exactly_what_the_reader_needs(command: list[str]) -> None:
    reduced = reduce_prestop_command(command)
    assert exec_sleep(reduced) == exec_sleep(command)
    assert reduce_prestop_command(reduced) == reduced
    assert "curl" not in " ".join(reduced) and "--token" not in reduced and "nginx" not in " ".join(reduced)


def _documents(path: Path) -> list[Any]:
    text, decoder, pos, out = path.read_text(), json.JSONDecoder(), 0, []
    while True:
        while pos < len(text) and text[pos].isspace():
            pos += 1
        if pos >= len(text):
            return out
        doc, pos = decoder.raw_decode(text, pos)
        out.append(doc)


def _reduced_document(doc: Any) -> Any:
    if isinstance(doc, dict) and isinstance(doc.get("object"), dict) and doc.get("type") != "BOOKMARK":
        return {**doc, "object": reduce_object(doc["object"])}
    if isinstance(doc, dict) and isinstance(doc.get("items"), list):
        kind = str(doc.get("kind") or "").removesuffix("List")
        return {**doc, "items": [reduce_object(i, str(i.get("kind") or kind)) for i in doc["items"]]}
    if isinstance(doc, dict) and isinstance(doc.get("metadata"), dict):
        return reduce_object(doc)
    return doc


@pytest.mark.parametrize("stream", STREAMS, ids=lambda p: p.name)
def test_the_reader_draws_the_same_facts_from_reduced_objects(stream: Path, tmp_path: Path) -> None:
    reduced = tmp_path / stream.name
    docs = _documents(stream)
    reduced.write_text("\n".join(json.dumps(_reduced_document(d)) for d in docs) + "\n")
    full, small = read_kube_streams([stream]), read_kube_streams([reduced])
    assert small.pods == full.pods
    pd.testing.assert_frame_equal(small.endpoints, full.endpoints)
    pd.testing.assert_frame_equal(small.events, full.events)
    assert (small.events_read, small.events_skipped, len(small.problems)) == (
        full.events_read, full.events_skipped, len(full.problems))  # fmt: skip
    assert reduced.stat().st_size <= len("\n".join(json.dumps(d) for d in docs) + "\n")


def test_reader_facts_of_the_secret_pod_survive_reduction(tmp_path: Path) -> None:
    docs = [{"type": "ADDED", "object": o} for o in (secret_pod(), secret_slice(), secret_event())]
    full, small = tmp_path / "full.json", tmp_path / "small.json"
    full.write_text("\n".join(json.dumps(d) for d in docs))
    small.write_text("\n".join(json.dumps(_reduced_document(d)) for d in docs))
    a, b = read_kube_streams([full]), read_kube_streams([small])
    assert a.pods == b.pods
    info = b.pods["uid-web-1"]
    assert (info.prestop_kind, info.prestop_sleep_s, info.has_readiness_probe) == ("exec", 5.0, True)
    assert (info.deployment, info.termination_grace_s, info.restarts) == ("web", 45, 1)
    pd.testing.assert_frame_equal(a.endpoints, b.endpoints)
    pd.testing.assert_frame_equal(a.events, b.events)


# -- end to end: the agent records nothing secret --------------------------------------------------
def test_marker_reaches_no_file_and_no_logs_answer(tmp_path: Path) -> None:
    log_dir = tmp_path / "log"
    with FakeApiServer(bookmark_interval=0.2) as srv:
        srv.create(secret_pod())
        srv.create(secret_slice())
        srv.create(secret_event())
        srv.add_token("t-reader", "reader")
        srv.grant("reader", "get", "nodes", "proxy", name="n1")
        kubeconfig = srv.write_kubeconfig(tmp_path / "kubeconfig")
        api = load_api_client(str(kubeconfig))
        config = AgentConfig(node="n1", log_dir=log_dir, metrics_addr="127.0.0.1:0", flush_ms=100,
                             settle_s=0.5, rss_limit_mb=0, stop_timeout_s=15)  # fmt: skip
        answers: list[bytes] = []
        failures: list[BaseException] = []

        def get(agent: Agent, path: str) -> bytes:
            assert agent._server is not None
            req = urllib.request.Request(f"http://127.0.0.1:{agent._server.port}{path}",
                                         headers={"Authorization": "Bearer t-reader"})  # fmt: skip
            with urllib.request.urlopen(req, timeout=10) as resp:
                return bytes(resp.read())

        def drive(agent: Agent) -> None:
            def run() -> None:
                try:
                    deadline = time.monotonic() + 60
                    while agent.kube is not None and agent.kube.recorder.count < 3:
                        assert time.monotonic() < deadline, "the watch child never delivered the objects"
                        time.sleep(0.1)
                    pod = srv.get("Pod", "shop", "web-1")
                    assert pod is not None
                    pod["metadata"]["deletionTimestamp"] = "2026-11-26T08:00:30Z"
                    pod["metadata"]["deletionGracePeriodSeconds"] = 45
                    srv.update(pod)
                    srv.update(secret_slice(ready=False))
                    srv.delete("Pod", "shop", "web-1")
                    while agent.kube is not None and agent.kube.recorder.count < 6:
                        assert time.monotonic() < deadline, "the changes never arrived"
                        time.sleep(0.1)
                    time.sleep(1.5)  # an episode, a summary
                    listing = get(agent, "/logs")
                    answers.append(listing)
                    for f in json.loads(listing)["files"]:
                        answers.append(get(agent, f"/logs/{f['name']}"))
                except BaseException as exc:
                    failures.append(exc)
                finally:
                    agent.request_stop()

            threading.Thread(target=run, daemon=True).start()

        summary = run_agent(config, [CountingSource(batch=0)], kube_client=WatchProcess(str(kubeconfig)),
                            on_started=drive, log_reviewer=ApiAccessReviewer(api))  # fmt: skip
        api.close()
    assert not failures, failures
    assert summary["kube"]["process"] is True and summary["kube"]["recorded"] >= 6
    assert summary["logs_auth"] == "on"
    files = [p for p in log_dir.rglob("*") if p.is_file()]
    assert any(p.name.startswith("kube-n1-") for p in files) and len(answers) > 2
    for p in files:
        assert MARKER.encode() not in p.read_bytes(), p.name
    for body in answers:
        assert MARKER.encode() not in body
    # what the audit needs is all there
    (kube_file,) = log_dir.glob("kube-n1-*.json")
    info = read_kube_streams([kube_file]).pods["uid-web-1"]
    assert info.deleted and info.deletion_observed_ns and info.ips == ("10.244.1.7",)
    assert (info.prestop_kind, info.prestop_sleep_s, info.has_readiness_probe) == ("exec", 5.0, True)
