"""A change the watcher learnt by relisting (after a 410 or a reconnect) has no precise time: its
observedAt is only an upper bound. The recorder marks it, and the reader falls back to object times."""

from __future__ import annotations

import json
from pathlib import Path

from auditor.kubeapi.recorder import StreamRecorder
from auditor.model.kube import parse_time_ns
from auditor.sources.kube_stream import read_kube_streams
from tests.conftest import REPO

STREAM = REPO / "tests" / "data" / "kube" / "rollout-watch.json"
POD = "web-6d4b9c7f5-abcde"


def _events() -> list[dict[str, object]]:
    text, dec, pos, out = STREAM.read_text(), json.JSONDecoder(), 0, []
    while True:
        while pos < len(text) and text[pos].isspace():
            pos += 1
        if pos >= len(text):
            return out
        doc, pos = dec.raw_decode(text, pos)
        out.append(doc)


def _record(path: Path, relist_deletion: bool) -> None:
    rec = StreamRecorder(path)
    for doc in _events():
        obj = doc["object"]
        assert isinstance(obj, dict)
        meta = obj["metadata"]
        relisted = relist_deletion and meta.get("name") == POD and bool(meta.get("deletionTimestamp"))
        rec.write(str(doc["type"]), obj, parse_time_ns(str(doc["observedAt"]))[0], relisted=relisted)
    rec.close()


def test_relisted_deletion_is_not_a_precise_time(tmp_path: Path) -> None:
    live, relisted = tmp_path / "live.json", tmp_path / "relisted.json"
    _record(live, relist_deletion=False)
    _record(relisted, relist_deletion=True)
    assert '"relisted":true' in relisted.read_text() and '"relisted"' not in live.read_text()
    a = next(p for p in read_kube_streams([live]).pods.values() if p.name == POD)
    b = next(p for p in read_kube_streams([relisted]).pods.values() if p.name == POD)
    assert a.deletion_observed_ns is not None and a.deleted_observed_ns is not None
    # learnt by relisting: only the object's own (coarse) times remain
    assert b.deletion_observed_ns is None and b.deleted_observed_ns is None
    assert b.deletion_ns == a.deletion_ns is not None
    # the relist that found it gone bounds the deletion from above
    assert b.deleted_bound_ns == a.deleted_observed_ns


def test_pod_gone_during_an_outage_still_has_an_episode() -> None:
    """Deleted while the watch was down: the relist reports DELETED with the last version seen (no
    deletionTimestamp). The episode exists, with the relist time as a coarse deletion time."""
    from auditor.correlate.episodes import build_episodes
    from tests.fakes import pod

    gone = pod("u1", "default", "web-1", ("10.244.0.5",), deleted_bound_ns=5_000_000_000)
    ep = build_episodes([gone])
    assert list(ep["pod"]) == ["web-1"]
    assert int(ep["deleted_ns"].iloc[0]) == 5_000_000_000 and not bool(ep["deleted_precise"].iloc[0])
