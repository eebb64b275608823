"""``/logs`` of the agent: a bearer token reviewed by the (fake) API server over real HTTP.

No token -> 401; a token the TokenReview rejects -> 401; authenticated but the SubjectAccessReview for
``get nodes/proxy <node>`` denies -> 403; allowed -> the files. ``/metrics`` and ``/healthz`` stay open;
no API access with the check on -> 503; ``--logs-auth=off`` -> open. Decisions are cached per token,
bounded in time and size; a review that fails is not cached.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from auditor.kubeapi import load_api_client
from auditor.kubeapi.reviews import ApiAccessReviewer
from auditor.model.access import AccessVerdict, Identity, Permission, ReviewUnavailable, node_proxy_permission
from auditor.sinks.logauth import FORWARDED_HEADER, LogsAccess, bearer_token
from auditor.sinks.metrics import AgentMetrics, MetricsServer
from tests.kubeserver.server import FakeApiServer
from tests.unit.test_analyze_dir import write_log_dir

NODE = "n1"


@dataclass
class Served:
    api: FakeApiServer
    server: MetricsServer
    log_dir: Path


def _get(port: int, path: str, headers: dict[str, str] | None = None) -> tuple[int, bytes, dict[str, str]]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return int(resp.status), bytes(resp.read()), dict(resp.headers)
    except urllib.error.HTTPError as exc:
        return int(exc.code), bytes(exc.read()), dict(exc.headers)


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    log_dir = write_log_dir(tmp_path / "log", NODE)
    with FakeApiServer() as api:
        api.add_token("t-alice", "alice")  # may read n1's logs
        api.add_token("t-bob", "bob")  # authenticated, no permission
        api.add_token("t-carol", "carol", groups=("auditors",))  # through a group, on every node
        api.grant("alice", "get", "nodes", "proxy", name=NODE)
        api.grant("bob", "get", "nodes", "proxy", name="another-node")
        api.grant("group:auditors", "get", "nodes", "proxy")
        client = load_api_client(str(api.write_kubeconfig(tmp_path / "kubeconfig")))
        access = LogsAccess(ApiAccessReviewer(client, timeout_s=5), node_proxy_permission(NODE))
        server = MetricsServer(AgentMetrics(), "127.0.0.1:0", lambda: (True, "ok"), log_dir, access).start()
        try:
            yield Served(api, server, log_dir)
        finally:
            server.stop()
            client.close()


def test_no_token_is_401(served: Served) -> None:
    code, body, headers = _get(served.server.port, "/logs")
    assert code == 401 and headers.get("WWW-Authenticate", "").startswith("Bearer")
    assert b"bearer token" in body and b"PAR1" not in body
    assert _get(served.server.port, "/logs", {"Authorization": "Basic dXNlcjpwYXNz"})[0] == 401
    assert _get(served.server.port, "/logs", {"Authorization": "Bearer "})[0] == 401
    assert list(served.api.reviews) == []  # refused before asking anyone


def test_token_the_token_review_rejects_is_401(served: Served) -> None:
    code, body, _ = _get(served.server.port, "/logs", _bearer("forged"))
    assert code == 401 and b"does not authenticate" in body
    seg = next(p.name for p in served.log_dir.glob("events-*.parquet"))
    assert _get(served.server.port, f"/logs/{seg}", _bearer("forged"))[0] == 401
    assert [r["kind"] for r in served.api.reviews] == ["TokenReview"]  # the refusal is cached


def test_authenticated_but_denied_is_403(served: Served) -> None:
    code, body, _ = _get(served.server.port, "/logs", _bearer("t-bob"))
    assert code == 403
    assert b'user "bob" may not get nodes/proxy "n1"' in body
    (sar,) = [r for r in served.api.reviews if r["kind"] == "SubjectAccessReview"]
    assert sar["spec"]["user"] == "bob"
    assert sar["spec"]["resourceAttributes"] == {"verb": "get", "resource": "nodes", "subresource": "proxy",
                                                 "name": NODE}  # fmt: skip


def test_allowed_gets_the_files(served: Served) -> None:
    port = served.server.port
    code, body, _ = _get(port, "/logs", _bearer("t-alice"))
    assert code == 200
    names = [f["name"] for f in json.loads(body)["files"]]
    assert names and all(n.endswith(NODE + ".json") or f"-{NODE}-" in n for n in names)
    for name in names:
        code, body, _ = _get(port, f"/logs/{name}", _bearer("t-alice"))
        assert code == 200 and body == (served.log_dir / name).read_bytes()
    # through the API server's pod proxy the token comes in the forwarded header
    assert _get(port, "/logs", {FORWARDED_HEADER: "Bearer t-carol"})[0] == 200  # a group's grant
    # one TokenReview + one SubjectAccessReview per token, however many files
    assert served.server.log_access.reviews == 4 and len(served.api.reviews) == 4
    # metrics and health stay open, as Prometheus and the kubelet expect
    assert _get(port, "/metrics")[0] == 200 and _get(port, "/healthz")[0] == 200


def test_api_failure_is_503_and_not_cached(served: Served) -> None:
    served.api.fail_next(1, 500)
    code, body, _ = _get(served.server.port, "/logs", _bearer("t-alice"))
    assert code == 503 and b"cannot check the bearer token" in body and b"HTTP 500" in body
    assert _get(served.server.port, "/logs", _bearer("t-alice"))[0] == 200  # asked again, allowed


def test_without_api_access_logs_are_503_unless_the_check_is_off(tmp_path: Path) -> None:
    d = write_log_dir(tmp_path / "log", NODE)
    unchecked = MetricsServer(AgentMetrics(), "127.0.0.1:0", lambda: (True, "ok"), d).start()
    off = MetricsServer(AgentMetrics(), "127.0.0.1:0", lambda: (True, "ok"), d, LogsAccess.off()).start()
    try:
        code, body, _ = _get(unchecked.port, "/logs", _bearer("anything"))
        assert code == 503 and b"no API access" in body and b"--logs-auth=off" in body
        assert _get(unchecked.port, "/metrics")[0] == 200
        assert _get(off.port, "/logs")[0] == 200
        assert off.log_access.mode == "off" and unchecked.log_access.mode.startswith("on, but")
    finally:
        unchecked.stop()
        off.stop()


class _Reviewer:
    """Counts its calls; ``tokens``: token -> user; ``allowed``: users."""

    def __init__(self) -> None:
        self.tokens = {"a": "alice", "b": "bob"}
        self.allowed = {"alice"}
        self.calls = 0
        self.down = False

    def review_token(self, token: str) -> Identity | None:
        self.calls += 1
        if self.down:
            raise ReviewUnavailable("connection refused")
        user = self.tokens.get(token)
        return Identity(user) if user else None

    def review_access(self, identity: Identity, permission: Permission) -> AccessVerdict:
        self.calls += 1
        return AccessVerdict(identity.user in self.allowed, "test")


def test_cache_is_bounded_in_time_and_size() -> None:
    now = [0.0]
    reviewer = _Reviewer()
    access = LogsAccess(reviewer, node_proxy_permission(NODE), ttl_s=30, deny_ttl_s=5, max_entries=2,
                        clock=lambda: now[0])  # fmt: skip
    assert access.check(_bearer("a")).status == 200 and reviewer.calls == 2
    assert access.check({FORWARDED_HEADER: "bearer a"}).status == 200 and reviewer.calls == 2  # cached
    assert access.check(_bearer("b")).status == 403 and reviewer.calls == 4
    reviewer.allowed.add("bob")
    now[0] = 4.0
    assert access.check(_bearer("b")).status == 403 and reviewer.calls == 4  # refusals live 5 s
    now[0] = 6.0
    assert access.check(_bearer("b")).status == 200 and reviewer.calls == 6
    reviewer.allowed.discard("alice")
    now[0] = 29.0
    assert access.check(_bearer("a")).status == 200 and reviewer.calls == 6  # allowed ones 30 s
    now[0] = 31.0
    assert access.check(_bearer("a")).status == 403 and reviewer.calls == 8
    assert access.check(_bearer("zz")).status == 401
    assert access.cached() == 2  # least recently used out
    reviewer.down = True
    now[0] = 100.0
    assert access.check(_bearer("a")).status == 503
    assert access.check(_bearer("a")).status == 503 and reviewer.calls == 11  # failures are not cached
    assert access.check(_bearer("x" * 20_000)).status == 401 and reviewer.calls == 11


def test_bearer_token_parsing() -> None:
    assert bearer_token({"Authorization": "Bearer abc"}) == "abc"
    assert bearer_token({"Authorization": "bearer  abc "}) == "abc"
    assert bearer_token({FORWARDED_HEADER: "Bearer xyz"}) == "xyz"
    assert bearer_token({"Authorization": "Bearer a", FORWARDED_HEADER: "Bearer b"}) == "a"
    assert bearer_token({"Authorization": "Basic abc"}) is None
    assert bearer_token({}) is None and bearer_token(object()) is None
