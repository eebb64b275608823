"""The one Kubernetes timeline: the file reader and the agent's incremental feed give the same facts."""

from __future__ import annotations

import json

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
    timeline.apply(WatchEvent("DELETED", pod.obj, None, bound_ns=(pod.observed_ns or 0) + 10**9, object_kind="Pod"))
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
