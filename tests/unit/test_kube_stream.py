"""Kubernetes watch streams and lists -> pods, endpoint changes, events, problems."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from auditor.errors import AuditorError
from auditor.model.kube import parse_time_ns
from auditor.sources.kube_pod import exec_sleep, hook_duration, parse_sleep_seconds
from auditor.sources.kube_stream import read_kube_streams

DATA = Path(__file__).resolve().parent.parent / "data" / "kube"
OLD = "0f4c2a10-1111-4a8e-9d7a-0000000000a1"
NEW = "0f4c2a10-2222-4a8e-9d7a-0000000000b2"


def ns(text: str) -> int:
    return parse_time_ns(text)[0]


def test_parse_time_exact_nanoseconds() -> None:
    assert parse_time_ns("2026-11-26T08:00:01.123456789Z") == (1795680001123456789, True)
    assert parse_time_ns("2026-11-26T08:00:01Z") == (1795680001000000000, False)
    assert parse_time_ns("2026-11-26T09:00:01.5+01:00")[0] == 1795680001500000000
    with pytest.raises(ValueError):
        parse_time_ns("yesterday")


@pytest.mark.parametrize("name", ["rollout-watch.json", "rollout-watch-oneline.json"])
def test_rollout_pods(name: str) -> None:
    kube = read_kube_streams([DATA / name])
    assert kube.problems == []
    assert kube.events_read == 13 and kube.events_skipped == 1  # one BOOKMARK
    old, new = kube.pods[OLD], kube.pods[NEW]
    assert (old.name, old.namespace, old.node) == ("web-6d4b9c7f5-abcde", "shop", "node-a")
    assert old.ips == ("10.244.1.7",)
    assert (old.replicaset, old.deployment) == ("web-6d4b9c7f5", "web")
    assert old.created_ns == ns("2026-11-26T07:50:00Z")
    assert old.first_seen_ns == ns("2026-11-26T08:00:00.000000100Z") and old.first_seen_precise
    # already Ready when first seen: the condition's coarse transition time
    assert old.ready_ns == ns("2026-11-26T07:50:04Z") and not old.ready_precise
    assert old.deletion_ns == ns("2026-11-26T08:00:50Z") and old.deletion_grace_s == 45
    assert old.deletion_observed_ns == ns("2026-11-26T08:00:05.123456789Z")
    assert old.deleted and old.deleted_observed_ns == ns("2026-11-26T08:00:12.25Z")
    assert old.container_finished_ns == ns("2026-11-26T08:00:11Z")
    assert (old.exit_code, old.exit_reason, old.phase) == (143, "Error", "Failed")
    assert (old.prestop_kind, old.prestop_sleep_s, old.termination_grace_s) == ("sleep", 5.0, 45)
    assert old.has_readiness_probe
    # the IP was there from the first version seen: held since creation
    assert old.ips_first_seen_ns == (old.created_ns,)
    # new pod: seen Pending without node/IP, then scheduled, then Ready (transition observed: precise)
    assert new.node == "node-b" and new.ips == ("10.244.2.9",)
    assert new.ips_first_seen_ns == (ns("2026-11-26T08:00:02.45Z"),)
    assert new.ready_ns == ns("2026-11-26T08:00:04.300000001Z") and new.ready_precise
    assert not new.deleted and new.deletion_ns is None and new.deletion_grace_s is None


def test_rollout_endpoint_changes() -> None:
    kube = read_kube_streams([DATA / "rollout-watch.json"])
    ep = kube.endpoints
    assert str(ep["time"].dtype) == "datetime64[ns, UTC]"
    assert list(ep["address"]) == ["10.244.1.7", "10.244.2.9", "10.244.2.9", "10.244.1.7", "10.244.1.7"]
    assert ep["precise"].all()
    assert (ep["service"] == "web").all() and (ep["slice"] == "web-8kq2p").all()
    assert (ep["ports"] == "http:8080/TCP").all()
    terminating = ep.iloc[3]
    assert terminating["pod_uid"] == OLD and terminating["node"] == "node-a"
    assert (terminating["ready"], terminating["serving"], terminating["terminating"]) == (False, True, True)
    assert terminating["time"] == pd.Timestamp(ns("2026-11-26T08:00:05.21Z"), unit="ns", tz="UTC")
    removal = ep.iloc[4]
    assert not removal["present"] and removal["pod"] == "web-6d4b9c7f5-abcde"
    assert removal["trigger_time"] == pd.Timestamp("2026-11-26T08:00:12Z")
    assert ep["present"].tolist() == [True, True, True, True, False]


def test_slice_deleted_is_removal(tmp_path: Path) -> None:
    lines = (DATA / "rollout-watch-oneline.json").read_text().splitlines()
    first_slice = next(line for line in lines if '"EndpointSlice"' in line)
    deleted = first_slice.replace('"type":"ADDED"', '"type":"DELETED"').replace(
        "2026-11-26T08:00:00.000000200Z", "2026-11-26T08:00:30.000000000Z"
    )
    path = tmp_path / "slices.json"
    path.write_text(first_slice + "\n" + deleted + "\n")
    ep = read_kube_streams([path]).endpoints
    assert ep["present"].tolist() == [True, False]
    assert ep["time"].iloc[1] == pd.Timestamp("2026-11-26T08:00:30Z")


def test_garbage_is_reported_with_file_and_line_and_rest_is_read(tmp_path: Path) -> None:
    text = (DATA / "rollout-watch.json").read_text().splitlines(keepends=True)
    # a line of noise between objects, and an object cut short (watcher killed mid-write)
    starts = [i for i, line in enumerate(text) if line.startswith("{")]
    cut = starts[5]
    broken = [*text[: starts[2]], "E1126 08:00:02 reflector.go: watch closed\n", *text[starts[2] : cut + 10],
              *text[starts[6] :]]  # fmt: skip
    path = tmp_path / "kube.json"
    path.write_text("".join(broken))
    kube = read_kube_streams([path])
    messages = [str(p) for p in kube.problems]
    assert len(messages) == 2, messages
    assert messages[0] == f"kube.json line {starts[2] + 1}: not a JSON watch event (Expecting value); skipped"
    assert messages[1].startswith(f"kube.json line {cut + 2}: not a JSON watch event (")
    assert kube.events_read == 12  # 13 - the truncated one
    assert kube.pods[OLD].deleted


def test_watch_error_and_non_event_objects_are_counted(tmp_path: Path) -> None:
    path = tmp_path / "w.json"
    path.write_text(
        (DATA / "rollout-watch-oneline.json").read_text()
        + '{"type":"ERROR","object":{"kind":"Status","code":410,"reason":"Expired","message":"too old"}}\n'
        + '{"hello": "world"}\n'
        + "42\n"
    )
    kube = read_kube_streams([path])
    assert kube.events_read == 13
    assert kube.events_skipped == 4
    texts = [p.message for p in kube.problems]
    assert texts[0].startswith("watch ERROR 410 Expired")
    assert "no type/object" in texts[1] and "not an object" in texts[2]
    assert [p.line for p in kube.problems] == [15, 16, 17]


def test_file_without_any_event_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "nothing.json"
    path.write_text("Unable to connect to the server: dial tcp 10.0.0.1:6443: i/o timeout\n")
    with pytest.raises(AuditorError) as info:
        read_kube_streams([path])
    assert "nothing.json" in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(AuditorError):
        read_kube_streams([tmp_path / "missing.json"])


def test_sparse_pod_list_and_missing_fields() -> None:
    kube = read_kube_streams([DATA / "pods-list-sparse.json"])
    assert kube.problems == [] and kube.events_read == 3
    api = kube.pods["aa000000-0000-4000-8000-000000000001"]
    assert api.ips == ("10.244.3.4", "fd00:10:244:3::4") and api.deployment == "api"
    assert not api.first_seen_precise and api.first_seen_ns == api.created_ns
    assert (api.prestop_kind, api.prestop_sleep_s) == ("sleep", 10.0)  # native sleep beats httpGet
    assert api.termination_grace_s is None and api.ready_ns is None
    pending = kube.pods["aa000000-0000-4000-8000-000000000002"]  # no status at all, no owner
    assert pending.ips == () and pending.node is None and pending.replicaset is None
    assert pending.prestop_kind == "none" and pending.deletion_grace_s is None
    assert kube.pods["aa000000-0000-4000-8000-000000000003"].host_network
    assert kube.endpoints.empty and kube.events.empty


def test_events_list() -> None:
    kube = read_kube_streams([DATA / "events-list.json"])
    ev = kube.events
    assert list(ev["reason"]) == ["Scheduled", "Killing", "Unhealthy"]
    assert ev["precise"].tolist() == [True, False, False]  # eventTime has microseconds
    assert ev["time"].iloc[0] == pd.Timestamp("2026-11-26T08:00:01.304518Z")
    unhealthy = ev.iloc[2]
    assert unhealthy["count"] == 3 and unhealthy["uid"] == OLD and unhealthy["kind"] == "Pod"
    assert unhealthy["time"] == pd.Timestamp("2026-11-26T08:00:10Z")  # lastTimestamp
    assert "connection refused" in unhealthy["message"]


def test_files_are_merged_in_observed_order() -> None:
    files = ["ip-reuse-watch.json", "rollout-watch.json", "events-list.json"]
    kube = read_kube_streams([DATA / f for f in files])
    reused = kube.pods["0f4c2a10-3333-4a8e-9d7a-0000000000c3"]
    assert reused.ips_first_seen_ns == (ns("2026-11-26T08:00:14.5Z"),)
    assert (reused.prestop_kind, reused.prestop_sleep_s) == ("exec", 5.0)
    assert len(kube.events) == 3 and len(kube.endpoints) == 5


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        (["sleep", "5"], ("sleep", 5.0)),
        (["/bin/sleep", "15s"], ("sleep", 15.0)),
        (["sh", "-c", "sleep 5"], ("sleep", 5.0)),
        (["/bin/bash", "-c", "sleep 2; sleep 0.5"], ("sleep", 2.5)),
        (["/bin/sh", "-c", "sleep 10 && nginx -s quit"], ("exec", 10.0)),
        (["nginx", "-s", "quit"], ("exec", None)),
        (["sleep", "infinity"], ("exec", None)),
    ],
)
def test_exec_prestop(command: list[str], expected: tuple[str, float | None]) -> None:
    assert exec_sleep(command) == expected


def test_hook_kinds() -> None:
    assert hook_duration({"sleep": {"seconds": 7}}) == ("sleep", 7.0)
    assert hook_duration({"httpGet": {"path": "/drain", "port": 80}}) == ("http", None)
    assert hook_duration({"tcpSocket": {"port": 80}}) == ("tcp", None)
    assert parse_sleep_seconds("2m") == 120.0 and parse_sleep_seconds("x") is None


def test_stream_without_observed_at_is_coarse(tmp_path: Path) -> None:
    import re

    text = (DATA / "rollout-watch-oneline.json").read_text()
    path = tmp_path / "plain.json"
    path.write_text(re.sub(r',"observedAt":"[^"]*"', "", text))
    kube = read_kube_streams([path])
    assert kube.problems == []
    old = kube.pods[OLD]
    assert not old.first_seen_precise and old.first_seen_ns == old.created_ns
    assert old.deletion_observed_ns is None and old.deleted and old.deleted_observed_ns is None
    assert old.deletion_ns == ns("2026-11-26T08:00:50Z")
    new = kube.pods[NEW]
    assert new.ready_ns == ns("2026-11-26T08:00:04Z") and not new.ready_precise
    ep = kube.endpoints
    assert not ep["precise"].any()
    assert (ep["time"] == ep["trigger_time"]).all()  # the slice's last-change-trigger-time
    assert ep["present"].tolist() == [True, True, True, True, False]
