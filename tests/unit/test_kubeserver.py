"""The fake kube-apiserver speaks list/watch like the real one (plain HTTP on 127.0.0.1)."""

from __future__ import annotations

import http.client
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.kubeserver.server import FakeApiServer


def pod(name: str, ns: str = "default", ip: str = "10.244.0.1") -> dict[str, Any]:
    return {"kind": "Pod", "metadata": {"namespace": ns, "name": name}, "status": {"podIP": ip}}


@pytest.fixture
def server() -> Iterator[FakeApiServer]:
    with FakeApiServer(bookmark_interval=0.2) as srv:
        yield srv


def get(srv: FakeApiServer, path: str) -> tuple[int, dict[str, Any]]:
    host, port = srv.url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=5)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read())
    finally:
        conn.close()


def watch_lines(srv: FakeApiServer, path: str, max_lines: int, timeout: float = 5) -> list[dict[str, Any]]:
    """Read up to ``max_lines`` events of a chunked watch (or until it ends)."""
    host, port = srv.url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    out: list[dict[str, Any]] = []
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        assert resp.status == 200
        assert resp.getheader("Transfer-Encoding") == "chunked"
        while len(out) < max_lines:
            line = resp.readline()
            if not line:
                break
            out.append(json.loads(line))
    finally:
        conn.close()
    return out


def test_list_has_kind_version_and_items(server: FakeApiServer) -> None:
    server.create(pod("a"))
    server.create(pod("b", ns="other"))
    status, body = get(server, "/api/v1/pods")
    assert status == 200
    assert body["kind"] == "PodList"
    assert body["metadata"]["resourceVersion"] == str(server.resource_version)
    assert [i["metadata"]["name"] for i in body["items"]] == ["a", "b"]
    assert "kind" not in body["items"][0]  # like the real API: list items carry no kind
    status, body = get(server, "/api/v1/namespaces/other/pods")
    assert [i["metadata"]["name"] for i in body["items"]] == ["b"]
    status, body = get(server, "/apis/discovery.k8s.io/v1/endpointslices")
    assert (status, body["kind"], body["items"]) == (200, "EndpointSliceList", [])


def test_paginated_list_is_a_consistent_snapshot(server: FakeApiServer) -> None:
    for i in range(5):
        server.create(pod(f"p{i}"))
    _, first = get(server, "/api/v1/pods?limit=2")
    snapshot_rv = first["metadata"]["resourceVersion"]
    server.delete("Pod", "default", "p4")  # after the first page: must not show in later pages
    names = [i["metadata"]["name"] for i in first["items"]]
    token = first["metadata"]["continue"]
    for _ in range(10):
        _, page = get(server, f"/api/v1/pods?limit=2&continue={token}")
        assert page["metadata"]["resourceVersion"] == snapshot_rv
        names += [i["metadata"]["name"] for i in page["items"]]
        token = page["metadata"].get("continue")
        if not token:
            break
    assert names == ["p0", "p1", "p2", "p3", "p4"]


def test_watch_streams_changes_after_the_version(server: FakeApiServer) -> None:
    server.create(pod("a"))
    rv = server.resource_version
    server.update({**pod("a", ip="10.244.0.9")})
    server.create(pod("b"))
    server.delete("Pod", "default", "a")
    events = watch_lines(server, f"/api/v1/pods?watch=true&resourceVersion={rv}", 3)
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [
        ("MODIFIED", "a"),
        ("ADDED", "b"),
        ("DELETED", "a"),
    ]
    rvs = [int(e["object"]["metadata"]["resourceVersion"]) for e in events]
    assert rvs == sorted(rvs) and rvs[0] > rv
    assert events[0]["object"]["kind"] == "Pod" and events[0]["object"]["apiVersion"] == "v1"


def test_watch_from_zero_sends_current_state(server: FakeApiServer) -> None:
    server.create(pod("a"))
    server.create(pod("b"))
    events = watch_lines(server, "/api/v1/pods?watch=true&resourceVersion=0", 2)
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [("ADDED", "a"), ("ADDED", "b")]


def test_bookmarks_only_when_asked_and_timeout_ends_cleanly(server: FakeApiServer) -> None:
    rv = server.resource_version
    server.create({"kind": "EndpointSlice", "metadata": {"namespace": "default", "name": "s1"}})
    path = f"/api/v1/pods?watch=true&resourceVersion={rv}&timeoutSeconds=1"
    t0 = time.monotonic()
    plain = watch_lines(server, path, 100)
    assert plain == []  # nothing for pods, no bookmarks, ended by the timeout
    assert 0.9 <= time.monotonic() - t0 < 4
    marks = watch_lines(server, path + "&allowWatchBookmarks=true", 100)
    assert marks and all(e["type"] == "BOOKMARK" for e in marks)
    assert marks[-1]["object"]["metadata"]["resourceVersion"] == str(server.resource_version)


def test_too_old_version_gets_410_then_end(server: FakeApiServer) -> None:
    server.create(pod("a"))
    rv = server.resource_version
    server.create(pod("b"))
    server.expire_history()
    events = watch_lines(server, f"/api/v1/pods?watch=true&resourceVersion={rv}", 10)
    assert len(events) == 1
    assert events[0]["type"] == "ERROR"
    assert events[0]["object"]["code"] == 410 and events[0]["object"]["reason"] == "Expired"


def test_history_window_is_bounded() -> None:
    with FakeApiServer(history=3) as srv:
        rv = srv.resource_version
        for i in range(5):
            srv.create(pod(f"p{i}"))
        events = watch_lines(srv, f"/api/v1/pods?watch=true&resourceVersion={rv}", 10)
        assert events[0]["object"]["code"] == 410
        recent = srv.resource_version - 2
        events = watch_lines(srv, f"/api/v1/pods?watch=true&resourceVersion={recent}", 2)
        assert [e["object"]["metadata"]["name"] for e in events] == ["p3", "p4"]


def test_fail_next_and_outage_answer_status(server: FakeApiServer) -> None:
    server.fail_next(2, status=500)
    assert get(server, "/api/v1/pods")[0] == 500
    status, body = get(server, "/api/v1/pods")
    assert status == 500 and body["kind"] == "Status"
    assert get(server, "/api/v1/pods")[0] == 200
    with server.outage():
        assert get(server, "/api/v1/pods")[0] == 503
    assert get(server, "/api/v1/pods")[0] == 200
    assert get(server, "/api/v1/nodes")[0] == 404


def test_drop_watches_breaks_the_stream(server: FakeApiServer) -> None:
    host, port = server.url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=5)
    try:
        conn.request("GET", f"/api/v1/pods?watch=true&resourceVersion={server.resource_version}")
        resp = conn.getresponse()
        server.create(pod("a"))
        assert json.loads(resp.readline())["type"] == "ADDED"
        deadline = time.monotonic() + 5
        while server.drop_watches() == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        with pytest.raises(http.client.IncompleteRead):
            resp.read()  # no terminating chunk: a broken connection, not a clean end
    finally:
        conn.close()


def test_kubeconfig_works_with_the_official_client(server: FakeApiServer, tmp_path: Path) -> None:
    from kubernetes import client, config

    server.create(pod("a"))
    path = server.write_kubeconfig(tmp_path / "kubeconfig")
    api = config.new_client_from_config(config_file=str(path), persist_config=False)
    try:
        pods = client.CoreV1Api(api).list_pod_for_all_namespaces()
        assert [p.metadata.name for p in pods.items] == ["a"]
        assert pods.items[0].status.pod_ip == "10.244.0.1"
    finally:
        api.close()


def post(
    srv: FakeApiServer, path: str, body: dict[str, Any], token: str | None = "caller"
) -> tuple[int, dict[str, Any]]:
    host, port = srv.url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=5)
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    try:
        conn.request("POST", path, body=json.dumps(body), headers=headers)
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read())
    finally:
        conn.close()


TOKEN_REVIEWS = "/apis/authentication.k8s.io/v1/tokenreviews"
ACCESS_REVIEWS = "/apis/authorization.k8s.io/v1/subjectaccessreviews"


def test_token_and_access_reviews_answer_as_configured(server: FakeApiServer) -> None:
    server.add_token("t-alice", "alice", groups=("ops",))
    code, doc = post(server, TOKEN_REVIEWS, {"kind": "TokenReview", "spec": {"token": "t-alice"}})
    assert code == 201 and doc["kind"] == "TokenReview"
    assert doc["status"]["authenticated"] is True
    assert doc["status"]["user"]["username"] == "alice"
    assert doc["status"]["user"]["groups"] == ["ops", "system:authenticated"]
    code, doc = post(server, TOKEN_REVIEWS, {"kind": "TokenReview", "spec": {"token": "forged"}})
    assert code == 201 and "authenticated" not in doc["status"] and doc["status"]["error"]
    assert post(server, TOKEN_REVIEWS, {"spec": {"token": "t-alice"}}, token=None)[0] == 401

    def sar(user: str, groups: list[str], name: str) -> bool:
        attrs = {"verb": "get", "resource": "nodes", "subresource": "proxy", "name": name}
        review = {"spec": {"user": user, "groups": groups, "resourceAttributes": attrs}}
        code, doc = post(server, ACCESS_REVIEWS, review)
        assert code == 201 and doc["kind"] == "SubjectAccessReview"
        return bool(doc["status"]["allowed"])

    assert not sar("alice", [], "n1")
    server.grant("alice", "get", "nodes", "proxy", name="n1")
    server.grant("group:ops", "get", "nodes", "proxy", name="n2")
    server.grant("bob", "get", "nodes", "proxy")  # every node
    assert sar("alice", [], "n1") and not sar("alice", [], "n2") and sar("alice", ["ops"], "n2")
    assert sar("bob", [], "n9") and not sar("carol", ["dev"], "n1")
    assert all("token" not in r["spec"] for r in server.reviews)
    server.fail_next(1, 500)
    assert post(server, ACCESS_REVIEWS, {"spec": {}})[0] == 500


def test_reviewer_with_the_official_client(server: FakeApiServer, tmp_path: Path) -> None:
    from auditor.kubeapi import load_api_client
    from auditor.kubeapi.reviews import ApiAccessReviewer
    from auditor.model.access import Identity, ReviewUnavailable, node_proxy_permission

    server.add_token("t-alice", "alice", groups=("ops",), uid="u-1")
    server.grant("group:ops", "get", "nodes", "proxy", name="n1")
    api = load_api_client(str(server.write_kubeconfig(tmp_path / "kubeconfig")))
    try:
        reviewer = ApiAccessReviewer(api, timeout_s=5)
        who = reviewer.review_token("t-alice")
        assert who == Identity("alice", "u-1", ("ops", "system:authenticated"))
        assert reviewer.review_token("forged") is None
        assert reviewer.review_access(who, node_proxy_permission("n1")).allowed
        assert not reviewer.review_access(who, node_proxy_permission("n2")).allowed
        assert not reviewer.review_access(Identity("mallory"), node_proxy_permission("n1")).allowed
        server.fail_next(1, 403)  # e.g. the agent's ClusterRole lacks create on tokenreviews
        with pytest.raises(ReviewUnavailable, match="403"):
            reviewer.review_token("t-alice")
    finally:
        api.close()
    gone = load_api_client(str(server.write_kubeconfig(tmp_path / "kubeconfig")))
    server.stop()  # nobody answers
    try:
        with pytest.raises(ReviewUnavailable):
            ApiAccessReviewer(gone, timeout_s=2).review_token("t-alice")
    finally:
        gone.close()
