"""KubeWatcher against the fake API server, over real HTTP with the official client."""

from __future__ import annotations

import json
import random
import re
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from auditor.errors import AuditorError
from auditor.kubeapi import (
    Backoff,
    KubeWatcher,
    StreamRecorder,
    WatchEvent,
    load_api_client,
)
from auditor.model.kube import format_time_ns
from tests.kubeserver.server import FakeApiServer


def pod(name: str, ip: str = "10.244.0.1", ns: str = "default") -> dict[str, Any]:
    return {"kind": "Pod", "metadata": {"namespace": ns, "name": name}, "status": {"podIP": ip}}


def wait_for(cond: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.01)


class Collected:
    """Thread-safe event sink."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.events: list[WatchEvent] = []

    def __call__(self, event: WatchEvent) -> None:
        with self.lock:
            self.events.append(event)

    def of(self, kind: str = "pods") -> list[WatchEvent]:
        with self.lock:
            return [e for e in self.events if e.kind == kind]

    def names(self, kind: str = "pods") -> list[tuple[str, str]]:
        return [(e.type, e.object["metadata"]["name"]) for e in self.of(kind)]


@pytest.fixture
def server() -> Iterator[FakeApiServer]:
    with FakeApiServer(bookmark_interval=0.2) as srv:
        yield srv


@pytest.fixture
def api(server: FakeApiServer, tmp_path: Path) -> Iterator[Any]:
    client = load_api_client(str(server.write_kubeconfig(tmp_path / "kubeconfig")))
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def make_watcher(api: Any, server: FakeApiServer) -> Iterator[Callable[..., tuple[KubeWatcher, Collected]]]:
    started: list[KubeWatcher] = []

    def make(**kwargs: Any) -> tuple[KubeWatcher, Collected]:
        sink = Collected()
        kwargs.setdefault("backoff_base_s", 0.05)
        kwargs.setdefault("backoff_cap_s", 0.4)
        watcher = KubeWatcher(api, on_event=sink, **kwargs).start()
        started.append(watcher)
        assert watcher.wait_synced(10), "initial list did not complete"
        n = len(watcher.kinds) + sum(len(w.kinds) for w in started[:-1])
        wait_for(lambda: server.open_watches == n, what=f"{n} open watches")
        return watcher, sink

    yield make
    for watcher in started:
        assert watcher.stop(timeout=5), "watcher threads did not stop"


def test_list_then_watch_in_order_with_increasing_observed_at(
    server: FakeApiServer, make_watcher: Callable[..., tuple[KubeWatcher, Collected]]
) -> None:
    for i in range(5):
        server.create(pod(f"p{i}"))
    server.create({"kind": "EndpointSlice", "metadata": {"namespace": "default", "name": "web-abc"}})
    watcher, sink = make_watcher(page_size=2)  # 3 pages of pods
    assert sink.names() == [("ADDED", f"p{i}") for i in range(5)]
    assert sink.names("endpointslices") == [("ADDED", "web-abc")]
    listed = sink.of()[0]
    assert listed.object["kind"] == "Pod" and listed.object["apiVersion"] == "v1"
    assert listed.object["status"]["podIP"] == "10.244.0.1"  # the API's JSON, camelCase
    assert sink.of("endpointslices")[0].object["apiVersion"] == "discovery.k8s.io/v1"

    server.update(pod("p1", ip="10.244.0.99"))
    server.delete("Pod", "default", "p2")
    server.create(pod("p9"))
    wait_for(lambda: len(sink.of()) == 8, what="3 watch events")
    assert sink.names()[5:] == [("MODIFIED", "p1"), ("DELETED", "p2"), ("ADDED", "p9")]
    assert sink.of()[5].object["status"]["podIP"] == "10.244.0.99"
    assert not any(e.relisted for e in sink.of())
    observed = [e.observed_ns for e in sink.of()]
    assert observed == sorted(observed)
    assert abs(observed[-1] - time.time_ns()) < 10 * 10**9
    stats = watcher.stats()
    assert stats.events[("pods", "ADDED")] == 6 and stats.events[("pods", "DELETED")] == 1
    assert stats.lists["pods"] == 1 and stats.relists["pods"] == 0
    assert stats.resource_version["pods"] == str(server.resource_version)


def test_bookmarks_advance_the_resource_version(
    server: FakeApiServer, make_watcher: Callable[..., tuple[KubeWatcher, Collected]]
) -> None:
    watcher, sink = make_watcher(kinds=("pods",))
    listed_rv = int(watcher.stats().resource_version["pods"])
    for i in range(3):  # changes of another kind move the global version, not the pods stream
        server.create({"kind": "EndpointSlice", "metadata": {"namespace": "default", "name": f"s{i}"}})
    target = server.resource_version
    assert target > listed_rv
    wait_for(lambda: int(watcher.stats().resource_version["pods"]) == target, what="bookmark")
    assert watcher.stats().bookmarks["pods"] >= 1
    assert sink.of() == []


def test_dropped_watch_resumes_from_last_version_and_misses_nothing(
    server: FakeApiServer, make_watcher: Callable[..., tuple[KubeWatcher, Collected]]
) -> None:
    server.create(pod("a"))
    watcher, sink = make_watcher(kinds=("pods",))
    server.update(pod("a", ip="10.244.0.2"))
    wait_for(lambda: len(sink.of()) == 2, what="first change")
    last_seen = sink.of()[1].object["metadata"]["resourceVersion"]
    with server.outage():  # connection dropped; changes happen while the agent is away
        server.update(pod("a", ip="10.244.0.3"))
        server.create(pod("b"))
        server.delete("Pod", "default", "a")
        wait_for(lambda: watcher.stats().errors["pods"] >= 1, what="the watcher to notice")
    wait_for(lambda: len(sink.of()) == 5, what="changes made while disconnected")
    server.create(pod("c"))
    wait_for(lambda: len(sink.of()) == 6, what="a change after reconnecting")
    assert sink.names() == [
        ("ADDED", "a"),
        ("MODIFIED", "a"),
        ("MODIFIED", "a"),
        ("ADDED", "b"),
        ("DELETED", "a"),
        ("ADDED", "c"),
    ]
    assert not any(e.relisted for e in sink.of())  # resumed from history, no relist needed
    stats = watcher.stats()
    assert stats.reconnects["pods"] >= 1 and stats.relists["pods"] == 0
    assert sum("watch=true" not in r for r in server.requests) == 1  # one LIST only
    resumed = [r for r in server.requests if "watch=true" in r][-1]
    assert f"resourceVersion={last_seen}&" in resumed  # from the last version seen before the drop


def test_410_relists_and_reports_every_change_made_in_the_gap(
    server: FakeApiServer, make_watcher: Callable[..., tuple[KubeWatcher, Collected]]
) -> None:
    for name in ("keep", "change", "gone", "recreated"):
        server.create(pod(name))
    watcher, sink = make_watcher(kinds=("pods",))
    assert len(sink.of()) == 4
    with server.outage():
        server.update(pod("change", ip="10.244.0.50"))
        server.delete("Pod", "default", "gone")
        server.delete("Pod", "default", "recreated")
        server.create(pod("recreated", ip="10.244.0.51"))  # same name, new uid
        server.create(pod("new"))
        server.expire_history()  # the version the watcher holds is now too old: 410
    wait_for(lambda: watcher.stats().relists["pods"] >= 1, what="a relist")
    wait_for(lambda: len(sink.of()) == 9, what="the gap's changes")
    gap = sink.of()[4:]
    assert all(e.relisted for e in gap)
    assert sorted((e.type, e.object["metadata"]["name"]) for e in gap) == [
        ("ADDED", "new"),
        ("ADDED", "recreated"),
        ("DELETED", "gone"),
        ("DELETED", "recreated"),
        ("MODIFIED", "change"),
    ]
    by = {(e.type, e.object["metadata"]["name"]): e.object for e in gap}
    assert by[("MODIFIED", "change")]["status"]["podIP"] == "10.244.0.50"
    assert by[("ADDED", "recreated")]["status"]["podIP"] == "10.244.0.51"
    assert by[("DELETED", "recreated")]["status"]["podIP"] == "10.244.0.1"  # the old object
    assert by[("ADDED", "recreated")]["kind"] == "Pod"
    # and the watch goes on from the relist's version
    server.delete("Pod", "default", "keep")
    wait_for(lambda: len(sink.of()) == 10, what="a change after the relist")
    assert sink.names()[-1] == ("DELETED", "keep") and not sink.of()[-1].relisted


def test_410_mid_stream_during_a_rollout_loses_no_change(
    server: FakeApiServer, make_watcher: Callable[..., tuple[KubeWatcher, Collected]]
) -> None:
    """Churn continues while the server drops watches and expires history: the final state agrees."""
    watcher, sink = make_watcher(kinds=("pods",))
    rng = random.Random(7)
    for step in range(60):
        name = f"web-{rng.randrange(8)}"
        if server.get("Pod", "default", name) is None:
            server.create(pod(name, ip=f"10.244.1.{step}"))
        elif rng.random() < 0.5:
            server.update(pod(name, ip=f"10.244.2.{step}"))
        else:
            server.delete("Pod", "default", name)
        if step in (20, 40):
            server.drop_watches()
        if step == 30:
            server.expire_history()
            server.drop_watches()
    final_rv = str(server.resource_version)
    wait_for(lambda: watcher.stats().resource_version.get("pods") == final_rv, what="catch-up")
    state: dict[str, dict[str, Any]] = {}
    for e in sink.of():
        if e.type == "DELETED":
            state.pop(e.object["metadata"]["name"], None)
        else:
            state[e.object["metadata"]["name"]] = e.object
    expected = {name: server.get("Pod", "default", name) for name in (f"web-{i}" for i in range(8))}
    assert {n: o["status"]["podIP"] for n, o in state.items()} == {
        n: o["status"]["podIP"] for n, o in expected.items() if o is not None
    }
    assert watcher.stats().relists["pods"] >= 1


def test_http_errors_back_off_then_recover(
    server: FakeApiServer, make_watcher: Callable[..., tuple[KubeWatcher, Collected]]
) -> None:
    watcher, sink = make_watcher(kinds=("pods",), backoff_base_s=0.1, backoff_cap_s=1.0)
    server.fail_next(3, status=500)
    t0 = time.monotonic()
    server.drop_watches()
    server.create(pod("after-errors"))
    wait_for(lambda: sink.names() == [("ADDED", "after-errors")], what="recovery")
    elapsed = time.monotonic() - t0
    stats = watcher.stats()
    assert stats.errors["pods"] >= 4  # the drop and three 500s
    assert elapsed >= 0.05 + 0.1 + 0.2  # at least half of each backoff step (equal jitter)
    assert stats.relists["pods"] == 0


def test_stop_returns_promptly_from_a_long_watch(api: Any, server: FakeApiServer) -> None:
    watcher = KubeWatcher(api, on_event=lambda e: None, watch_timeout_s=600).start()
    assert watcher.wait_synced(10)
    wait_for(lambda: sum(watcher.stats().watches.values()) == 3, what="3 open watches")
    t0 = time.monotonic()
    assert watcher.stop(timeout=5)
    assert time.monotonic() - t0 < 3


def test_backoff_grows_capped_with_jitter_and_resets() -> None:
    b = Backoff(base=1.0, cap=8.0, rng=random.Random(1))
    delays = [b.next_delay() for _ in range(6)]
    for delay, nominal in zip(delays, [1, 2, 4, 8, 8, 8], strict=True):
        assert nominal / 2 <= delay <= nominal
    b.reset()
    assert 0.5 <= b.next_delay() <= 1.0


def test_recorder_round_trips_as_concatenated_json(tmp_path: Path) -> None:
    path = tmp_path / "watch.json"
    ns = 1_795_680_001_123_456_789
    with StreamRecorder(path) as rec:
        rec.write("ADDED", {"kind": "Pod", "metadata": {"name": "a"}, "status": {"podIP": "10.0.0.1"}}, ns)
        rec.write_event(WatchEvent("endpointslices", "DELETED", {"kind": "EndpointSlice"}, ns + 1))
    with StreamRecorder(path) as rec:  # appends
        rec.write("MODIFIED", {"kind": "Pod", "metadata": {"name": "ü"}}, ns + 2)
    text = path.read_text(encoding="utf-8")
    decoder, pos, objs = json.JSONDecoder(), 0, []
    while pos < len(text):
        while pos < len(text) and text[pos].isspace():
            pos += 1
        if pos == len(text):
            break
        obj, pos = decoder.raw_decode(text, pos)
        objs.append(obj)
    assert [o["type"] for o in objs] == ["ADDED", "DELETED", "MODIFIED"]
    assert objs[0]["object"]["status"]["podIP"] == "10.0.0.1"
    assert objs[2]["object"]["metadata"]["name"] == "ü"
    assert objs[0]["observedAt"] == "2026-11-26T08:00:01.123456789Z"
    assert objs[1]["observedAt"].endswith(".123456790Z")
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z", o["observedAt"]) for o in objs)
    assert format_time_ns(5) == "1970-01-01T00:00:00.000000005Z"


def test_watcher_into_recorder_end_to_end(server: FakeApiServer, api: Any, tmp_path: Path) -> None:
    server.create(pod("a"))
    path = tmp_path / "kube.json"
    with StreamRecorder(path) as rec:
        watcher = KubeWatcher(api, kinds=("pods",), on_event=rec.write_event).start()
        try:
            assert watcher.wait_synced(10)
            server.delete("Pod", "default", "a")
            wait_for(lambda: rec.count == 2, what="2 recorded events")
        finally:
            assert watcher.stop()
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [(o["type"], o["object"]["kind"], o["object"]["metadata"]["name"]) for o in lines] == [
        ("ADDED", "Pod", "a"),
        ("DELETED", "Pod", "a"),
    ]
    assert lines[0]["observedAt"] <= lines[1]["observedAt"]


def test_load_api_client_errors_are_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(AuditorError, match="kubeconfig file not found"):
        load_api_client(str(tmp_path / "missing"))
    bad = tmp_path / "bad"
    bad.write_text("{not: [valid")
    with pytest.raises(AuditorError, match="cannot load kubeconfig") as info:
        load_api_client(str(bad))
    assert "\n" not in str(info.value)
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(AuditorError, match="no Kubernetes configuration found"):
        load_api_client(None)


def test_kubeconfig_from_environment(
    server: FakeApiServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kubernetes import client

    server.create(pod("a"))
    monkeypatch.setenv("KUBECONFIG", str(server.write_kubeconfig(tmp_path / "kc")))
    api = load_api_client(None)
    try:
        assert [p.metadata.name for p in client.CoreV1Api(api).list_pod_for_all_namespaces().items] == ["a"]
    finally:
        api.close()


def test_recorded_stream_reads_back_with_the_kube_stream_reader(
    server: FakeApiServer, api: Any, tmp_path: Path
) -> None:
    """What the agent records is what ``auditor.sources.kube_stream`` reads (format contract)."""
    from auditor.sources.kube_stream import read_kube_streams

    def slice_(ready: bool) -> dict[str, Any]:
        return {
            "kind": "EndpointSlice",
            "metadata": {
                "namespace": "default",
                "name": "web-x",
                "labels": {"kubernetes.io/service-name": "web"},
            },
            "addressType": "IPv4",
            "ports": [{"port": 8080, "protocol": "TCP", "name": ""}],
            "endpoints": [
                {
                    "addresses": ["10.244.0.5"],
                    "conditions": {"ready": ready, "serving": True, "terminating": not ready},
                    "targetRef": {"kind": "Pod", "namespace": "default", "name": "web-1"},
                }
            ],
        }

    web = pod("web-1", ip="10.244.0.5")
    web["spec"] = {"nodeName": "node-a", "containers": [{"name": "c"}]}
    server.create(web)
    server.create(slice_(ready=True))
    path = tmp_path / "kube.json"
    with StreamRecorder(path) as rec:
        watcher = KubeWatcher(api, kinds=("pods", "endpointslices"), on_event=rec.write_event).start()
        try:
            assert watcher.wait_synced(10)
            wait_for(lambda: server.open_watches == 2, what="2 open watches")
            server.update(slice_(ready=False))
            server.delete("Pod", "default", "web-1")
            wait_for(lambda: rec.count == 4, what="4 recorded events")
        finally:
            assert watcher.stop()
    timeline = read_kube_streams([path])
    assert timeline.problems == [] and timeline.events_read == 4
    assert list(timeline.endpoints["ready"]) == [True, False]
    assert bool(timeline.endpoints["precise"].all())  # observedAt was used
    (info,) = timeline.pods.values()
    assert (info.name, info.ips, info.deleted) == ("web-1", ("10.244.0.5",), True)


def test_in_cluster_without_service_account_is_a_user_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if Path("/var/run/secrets/kubernetes.io/serviceaccount/token").exists():
        pytest.skip("running inside a pod with a service account")
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    with pytest.raises(AuditorError, match="in-cluster configuration unusable"):
        load_api_client(None)
