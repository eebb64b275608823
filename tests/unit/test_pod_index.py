"""IP -> pod over time: tombstones, IP reuse, boundaries, vectorized resolution."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from auditor.enrich.pods import PodIndex, resolve_pods
from auditor.enrich.protocols import PodGetter
from auditor.model.kube import PodInfo, parse_time_ns
from auditor.sources.kube_stream import read_kube_streams

DATA = Path(__file__).resolve().parent.parent / "data" / "kube"
S = 1_000_000_000


def ns(text: str) -> int:
    return parse_time_ns(text)[0]


def _index(grace_ns: int = S) -> PodIndex:
    kube = read_kube_streams([DATA / "rollout-watch.json", DATA / "ip-reuse-watch.json"])
    return PodIndex.from_kube(kube, grace_ns=grace_ns)


def test_ip_reuse_boundaries() -> None:
    index: PodGetter = _index()
    ip = "10.244.1.7"
    created = ns("2026-11-26T07:50:00Z")
    deleted = ns("2026-11-26T08:00:12.25Z")
    reused = ns("2026-11-26T08:00:14.5Z")
    assert index.pod_by_ip(ip, created - 1) is None
    old = index.pod_by_ip(ip, created)
    assert old is not None and old.name == "web-6d4b9c7f5-abcde" and old.deployment == "web"
    # tombstone: still resolved after the DELETED event, up to the grace, inclusive
    last = index.pod_by_ip(ip, deleted + S)
    assert last is not None and last.name == old.name
    assert index.pod_by_ip(ip, deleted + S + 1) is None
    assert index.pod_by_ip(ip, reused - 1) is None
    new = index.pod_by_ip(ip, reused)
    assert new is not None and new.name == "web-7f9c8d6b4-k2m4p" and new.node == "node-a"
    assert index.pod_by_ip(ip, reused + 3600 * S) == new  # live: open-ended
    assert index.pod_by_ip("10.9.9.9", reused) is None


def test_grace_is_configurable() -> None:
    index = _index(grace_ns=0)
    deleted = ns("2026-11-26T08:00:12.25Z")
    assert index.pod_by_ip("10.244.1.7", deleted) is not None
    assert index.pod_by_ip("10.244.1.7", deleted + 1) is None


def _pod(uid: str, ip: str, start: int, *, deleted_at: int | None = None) -> PodInfo:
    kube = read_kube_streams([DATA / "pods-list-sparse.json"])
    base = kube.pods["aa000000-0000-4000-8000-000000000001"]
    return replace(
        base, uid=uid, name=f"pod-{uid}", ips=(ip,), ips_first_seen_ns=(start,), created_ns=start,
        deleted=deleted_at is not None, deleted_observed_ns=deleted_at,
    )  # fmt: skip


def test_overlap_newest_live_assignment_wins() -> None:
    # A holds the IP [0, 100]; B appears at 50 and is deleted at 60: B wins 50..60, then A again
    pods = [_pod("a", "10.1.0.1", 0, deleted_at=100), _pod("b", "10.1.0.1", 50, deleted_at=60)]
    index = PodIndex.from_pods(pods, grace_ns=0)
    names = [getattr(index.pod_by_ip("10.1.0.1", t), "name", None) for t in (0, 49, 50, 60, 61, 100, 101)]
    assert names == ["pod-a", "pod-a", "pod-b", "pod-b", "pod-a", "pod-a", None]


def test_deleted_without_observed_at_ends_at_container_finish() -> None:
    pod = replace(_pod("c", "10.1.0.2", 0), deleted=True, container_finished_ns=40 * S)
    index = PodIndex.from_pods([pod], grace_ns=S)
    assert index.pod_by_ip("10.1.0.2", 41 * S) is not None
    assert index.pod_by_ip("10.1.0.2", 41 * S + 1) is None


def test_host_network_pods_are_not_indexed() -> None:
    kube = read_kube_streams([DATA / "pods-list-sparse.json"])
    index = PodIndex.from_kube(kube)
    t = ns("2026-11-26T08:00:00Z")
    assert index.pod_by_ip("192.168.49.4", t) is None
    ref = index.pod_by_ip("fd00:10:244:3::4", t)
    assert ref is not None and ref.name == "api-5c8d7b9f44-q7r2t"


def test_resolve_pods_matches_scalar_lookup() -> None:
    index = _index()
    rng = np.random.default_rng(7)
    n = 5000
    ips = pd.Series(rng.choice(["10.244.1.7", "10.244.2.9", "10.0.0.1"], n))
    lo, hi = ns("2026-11-26T07:49:59Z"), ns("2026-11-26T08:00:20Z")
    times = rng.integers(lo, hi, n, dtype=np.int64)
    edge = ns("2026-11-26T08:00:13.25Z")
    times[:4] = [edge, edge + 1, ns("2026-11-26T08:00:14.5Z"), lo]
    ips.iloc[:4] = "10.244.1.7"
    df = resolve_pods(index, ips, times)
    assert list(df.columns) == ["pod_uid", "pod", "namespace", "node", "replicaset", "deployment"]
    assert df.index.equals(ips.index)
    expected = [getattr(index.pod_by_ip(ip, int(t)), "name", None) for ip, t in zip(ips, times, strict=True)]
    got = [None if pd.isna(v) else v for v in df["pod"]]
    assert got == expected
    assert got[:4] == ["web-6d4b9c7f5-abcde", None, "web-7f9c8d6b4-k2m4p", None]
    assert df["pod"].notna().sum() > n // 3 and df["pod"].isna().sum() > 0


def test_resolve_pods_categorical_and_datetime_input() -> None:
    index = _index()
    ips = pd.Series(["10.244.2.9", "10.244.2.9", "10.244.1.7"], dtype="category")
    stamps = ["2026-11-26T08:00:02.440Z", "2026-11-26T08:00:03.000Z", "2026-11-26T08:00:10.000Z"]
    times = pd.Series(pd.to_datetime(stamps, utc=True))
    df = index.resolve_pods(ips, times)
    assert df["pod"].isna().tolist() == [True, False, False]
    assert df["node"].tolist()[1:] == ["node-b", "node-a"]
    assert df["deployment"].tolist()[1:] == ["web", "web"]
