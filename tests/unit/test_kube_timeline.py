"""The one Kubernetes timeline: the file reader and the agent's incremental feed give the same facts."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from auditor.agent.correlator import LiveCorrelator
from auditor.model.kube import WatchEvent, parse_time_ns
from auditor.sources.kube_stream import read_kube_streams
from auditor.sources.kube_timeline import KubeTimeline
from tests.conftest import REPO

STREAM = REPO / "tests/data/kube/rollout-watch-oneline.json"


def _events() -> list[WatchEvent]:
    out = []
    for line in STREAM.read_text(encoding="utf-8").splitlines():
        doc = json.loads(line)
        out.append(WatchEvent(doc["type"], doc["object"], parse_time_ns(doc["observedAt"])[0]))
    return out


def test_incremental_feed_equals_the_file_reader() -> None:
    timeline = KubeTimeline()
    for event in _events():
        timeline.apply(event)
    live = timeline.kube_input()
    offline = read_kube_streams([STREAM])
    assert live.pods == offline.pods and len(live.pods) >= 2
    pd.testing.assert_frame_equal(live.endpoints, offline.endpoints)
    assert (live.events_read, live.events_skipped) == (offline.events_read, offline.events_skipped)


def test_the_agent_window_folds_into_the_same_timeline() -> None:
    """What the agent audits an episode from is the reader's view of the same events (no JSON round trip)."""
    c = LiveCorrelator("node-a", settle_s=3600)
    for e in _events():
        c.add_kube(e.kind, e.type, e.obj, e.observed_ns or 0)
    offline = read_kube_streams([STREAM])
    assert c.window.kube.pods() == offline.pods
    pd.testing.assert_frame_equal(c.window.kube.endpoints(), offline.endpoints)


def test_relisted_change_is_only_a_bound() -> None:
    timeline = KubeTimeline()
    events = _events()
    pod = next(e for e in events if e.kind == "Pod")
    timeline.apply(pod)
    uid = pod.obj["metadata"]["uid"]
    timeline.apply(
        WatchEvent("DELETED", pod.obj, None, bound_ns=(pod.observed_ns or 0) + 10**9, object_kind="Pod")
    )
    info = timeline.pod(uid)
    assert info is not None and info.deleted
    assert info.deleted_observed_ns is None and info.deleted_bound_ns == (pod.observed_ns or 0) + 10**9


def test_skipped_kinds_are_counted_by_kind() -> None:
    timeline = KubeTimeline()
    for kind in ("Service", "Service", "Namespace"):
        obj = {"kind": kind, "metadata": {"name": "x", "namespace": "default"}}
        assert timeline.apply(WatchEvent("ADDED", obj, 1)) is False
    assert dict(timeline.skipped_kinds) == {"Service": 2, "Namespace": 1}
    assert timeline.kube_input().skipped_kinds == {"Service": 2, "Namespace": 1}


def test_forget_and_trim_bound_the_timeline_but_keep_slice_state() -> None:
    timeline = KubeTimeline()
    events = _events()
    for e in events:
        timeline.apply(e)
    rows = len(timeline.endpoint_rows)
    assert rows > 0
    last = max(e.observed_ns or 0 for e in events)
    timeline.trim(last + 1)
    assert timeline.endpoint_rows == []
    # the slices' current state stays: re-applying the last version of a slice is no change
    last_slice = [e for e in events if e.kind == "EndpointSlice"][-1]
    timeline.apply(WatchEvent("MODIFIED", last_slice.obj, last + 2))
    assert timeline.endpoint_rows == []
    uids = list(timeline.pods_state)
    for uid in uids:
        timeline.forget_pod(uid)
    assert timeline.pods() == {}


def _as_v1_endpoints(obj: dict[str, object]) -> dict[str, object]:
    """The v1 Endpoints object the endpoints controller keeps beside an EndpointSlice."""
    ready, not_ready = [], []
    for ep in obj.get("endpoints") or []:  # type: ignore[attr-defined]
        for ip in ep.get("addresses") or []:
            a = {"ip": ip, "nodeName": ep.get("nodeName"), "targetRef": ep.get("targetRef")}
            (ready if (ep.get("conditions") or {}).get("ready") else not_ready).append(a)
    meta = dict(obj["metadata"])  # type: ignore[call-overload]
    meta["name"] = (meta.get("labels") or {}).get("kubernetes.io/service-name", meta["name"])
    return {
        "kind": "Endpoints",
        "apiVersion": "v1",
        "metadata": meta,
        "subsets": [{"addresses": ready, "notReadyAddresses": not_ready, "ports": obj.get("ports") or []}],
    }


def test_v1_endpoints_stand_in_for_missing_endpointslices() -> None:
    from auditor.correlate.episodes import build_episodes

    slices, v1 = KubeTimeline(), KubeTimeline()
    for e in _events():
        slices.apply(e)
        if e.kind == "EndpointSlice":
            v1.apply(WatchEvent(e.type, _as_v1_endpoints(e.obj), e.observed_ns))
        else:
            v1.apply(e)
    assert v1.uses_v1_endpoints and not slices.uses_v1_endpoints
    got, want = v1.kube_input(), slices.kube_input()
    assert any("v1 Endpoints" in p.message for p in got.problems)
    cols = ["endpoint_terminating_ns", "endpoint_removed_ns"]
    a = build_episodes(got.pods.values(), got.endpoints)[cols]
    b = build_episodes(want.pods.values(), want.endpoints)[cols]
    assert len(a) >= 1 and (a["endpoint_removed_ns"] > 0).all() and (a["endpoint_terminating_ns"] > 0).all()
    pd.testing.assert_frame_equal(a, b)
    # with both kinds in the input, the slices win and the v1 copies are said to be ignored
    both = KubeTimeline()
    for e in _events():
        both.apply(e)
        if e.kind == "EndpointSlice":
            both.apply(WatchEvent(e.type, _as_v1_endpoints(e.obj), e.observed_ns))
    assert not both.uses_v1_endpoints
    assert any("v1 Endpoints ignored" in p.message for p in both.kube_input().problems)


def test_the_report_says_which_kinds_were_skipped(tmp_path: Path) -> None:
    from auditor.sources.inputs import load_inputs

    extra = tmp_path / "more.json"
    lines = [{"type": "ADDED", "object": {"kind": k, "metadata": {"name": "x", "namespace": "default"}}}
             for k in ("Service", "Service", "Namespace", "ConfigMap")]  # fmt: skip
    extra.write_text("".join(json.dumps(x) + "\n" for x in lines), encoding="utf-8")
    inputs = load_inputs([], [STREAM, extra])
    assert inputs.info["kube_skipped_kinds"] == {"ConfigMap": 1, "Namespace": 1, "Service": 2}
    assert inputs.info["kube_events_skipped"] == 4 + 1  # and the stream's BOOKMARK
